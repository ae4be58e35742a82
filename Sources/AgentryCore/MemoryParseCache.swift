import Foundation
import Synchronization

/// A parse cache that lives as long as one operation: `diff` without a state directory loads its
/// base in full into it and its head incrementally from there, instead of parsing both in full.
final class MemoryParseCache: ParseCache {
    struct Contents {
        var snapshots: [String: (String, Data)] = [:]
        var files: [String: [String: CachedParse]] = [:]
    }

    let contents = Mutex(Contents())

    func snapshot(key: String) throws -> (source: String, data: Data)? {
        contents.withLock { $0.snapshots[key].map { (source: $0.0, data: $0.1) } }
    }

    func cachedFiles(key: String, paths: [String]?) throws -> [CachedParse] {
        contents.withLock { contents in
            let rows = contents.files[key] ?? [:]
            return paths.map { $0.compactMap { rows[$0] } } ?? Array(rows.values)
        }
    }

    func saveSnapshot(
        key: String, source: String, data: Data, files: [CachedParse], removed: [String], replaceAll: Bool
    ) throws -> Bool {
        contents.withLock { contents in
            if replaceAll { contents.files[key] = [:] }
            for path in removed { contents.files[key]?[path] = nil }
            for file in files { contents.files[key, default: [:]][file.path] = file }
            contents.snapshots[key] = (source, data)
        }
        return true
    }
}
