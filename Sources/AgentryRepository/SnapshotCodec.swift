import AgentryModel
import AgentryYAML

/// What the loader remembers of one commit of an agent repository: its tree (paths, kinds, blob ids)
/// and the per-file parse results, so the next load reads and parses only what git says changed.
struct Snapshot {
    var commit: String
    var entries: [String: SourceTree.Entry]
    var results: [String: (blobID: String, result: FileResult)]
}

/// A compact binary form of `Snapshot`. Decoding is defensive: anything unexpected means "no cache".
enum SnapshotCodec {
    static let magic = Array("agentry-snapshot-2\n".utf8)

    static func encode(_ snapshot: Snapshot) -> [UInt8] {
        var writer = ByteWriter()
        writer.bytes += magic
        writer.string(snapshot.commit)
        writer.int(snapshot.entries.count)
        for (path, entry) in snapshot.entries {
            writer.string(path)
            switch entry {
            case .file(let size, _, let id):
                writer.byte(0)
                writer.int(size)
                writer.string(id ?? "")
            case .symlink(let target):
                writer.byte(1)
                writer.string(target)
            case .directory:
                writer.byte(2)
            case .other:
                writer.byte(3)
            }
        }
        writer.int(snapshot.results.count)
        for (path, cached) in snapshot.results {
            writer.string(path)
            writer.string(cached.blobID)
            encode(cached.result, into: &writer)
        }
        return writer.bytes
    }

    static func encode(_ result: FileResult, into writer: inout ByteWriter) {
        writer.int(result.diagnostics.count)
        for diagnostic in result.diagnostics {
            writer.byte(diagnostic.severity == .error ? 0 : 1)
            writer.string(diagnostic.code.rawValue)
            writer.string(diagnostic.file)
            writer.mark(diagnostic.mark)
            writer.string(diagnostic.message)
        }
        writer.int(result.agents.count)
        for agent in result.agents {
            writer.string(agent.name)
            writer.origin(agent.origin)
            writer.string(agent.digest)
            writer.optionalReference(agent.harness)
            writer.optionalReference(agent.model)
            writer.references(agent.fallbackModels)
            writer.optionalReference(agent.environment)
            writer.references(agent.skills)
            writer.optionalReference(agent.instructionsFile)
            writer.string(agent.lifecycle.rawValue)
            writer.string(agent.deletionPolicy.rawValue)
        }
        writer.int(result.resources.count)
        for resource in result.resources {
            writer.string(resource.kind.rawValue)
            writer.string(resource.name)
            writer.origin(resource.origin)
            writer.string(resource.digest)
            writer.int(resource.apis.count)
            for api in resource.apis { writer.string(api.rawValue) }
            writer.string(resource.api?.rawValue ?? "")
        }
        writer.string(result.skillName ?? "")
    }

    static func decode(_ bytes: [UInt8]) -> Snapshot? {
        var reader = ByteReader(bytes: bytes)
        guard reader.expect(magic), let commit = reader.string(), let count = reader.int() else { return nil }
        var entries: [String: SourceTree.Entry] = [:]
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard let path = reader.string(), let tag = reader.byte() else { return nil }
            switch tag {
            case 0:
                guard let size = reader.int(), let id = reader.string() else { return nil }
                entries[path] = .file(size: size, content: nil, id: id.isEmpty ? nil : id)
            case 1:
                guard let target = reader.string() else { return nil }
                entries[path] = .symlink(target: target)
            case 2: entries[path] = .directory
            case 3: entries[path] = .other
            default: return nil
            }
        }
        guard let resultCount = reader.int() else { return nil }
        var results: [String: (blobID: String, result: FileResult)] = [:]
        results.reserveCapacity(resultCount)
        for _ in 0..<resultCount {
            guard let path = reader.string(), let blobID = reader.string(), let result = decodeResult(&reader)
            else { return nil }
            results[path] = (blobID, result)
        }
        guard reader.atEnd else { return nil }
        return Snapshot(commit: commit, entries: entries, results: results)
    }

    static func decodeResult(_ reader: inout ByteReader) -> FileResult? {
        var result = FileResult()
        guard let diagnosticCount = reader.int() else { return nil }
        for _ in 0..<diagnosticCount {
            guard let severity = reader.byte(), let codeText = reader.string(),
                let code = Diagnostic.Code(rawValue: codeText), let file = reader.string(), let mark = reader.mark(),
                let message = reader.string()
            else { return nil }
            result.diagnostics.append(Diagnostic(severity == 0 ? .error : .warning, code, file: file, at: mark, message))
        }
        guard let agentCount = reader.int() else { return nil }
        for _ in 0..<agentCount {
            guard let name = reader.string(), let origin = reader.origin(), let digest = reader.string(),
                let harness = reader.optionalReference(), let model = reader.optionalReference(),
                let fallbacks = reader.references(), let environment = reader.optionalReference(),
                let skills = reader.references(), let instructions = reader.optionalReference(),
                let lifecycle = reader.string().flatMap(Lifecycle.init(rawValue:)),
                let deletionPolicy = reader.string().flatMap(DeletionPolicy.init(rawValue:))
            else { return nil }
            result.agents.append(
                AgentSummary(
                    name: name, origin: origin, digest: digest, harness: harness, model: model, fallbackModels: fallbacks,
                    environment: environment, skills: skills, instructionsFile: instructions, lifecycle: lifecycle,
                    deletionPolicy: deletionPolicy))
        }
        guard let resourceCount = reader.int() else { return nil }
        for _ in 0..<resourceCount {
            guard let kind = reader.string().flatMap(Kind.init(rawValue:)), let name = reader.string(),
                let origin = reader.origin(), let digest = reader.string(), let apiCount = reader.int()
            else { return nil }
            var apis: [ModelAPI] = []
            for _ in 0..<apiCount {
                guard let api = reader.string().flatMap(ModelAPI.init(rawValue:)) else { return nil }
                apis.append(api)
            }
            guard let api = reader.string() else { return nil }
            result.resources.append(
                ResourceSummary(kind: kind, name: name, origin: origin, digest: digest, apis: apis, api: ModelAPI(rawValue: api)))
        }
        guard let skillName = reader.string() else { return nil }
        result.skillName = skillName.isEmpty ? nil : skillName
        return result
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func int(_ value: Int) {
        var rest = UInt64(max(0, value))
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    mutating func string(_ value: String) {
        int(value.utf8.count)
        bytes += value.utf8
    }

    mutating func mark(_ mark: SourceMark) {
        int(mark.line)
        int(mark.column)
    }

    mutating func origin(_ origin: Origin) {
        string(origin.file)
        mark(origin.mark)
    }

    mutating func optionalReference(_ reference: Reference?) {
        guard let reference else { return byte(0) }
        byte(1)
        string(reference.name)
        mark(reference.mark)
    }

    mutating func references(_ references: [Reference]) {
        int(references.count)
        for reference in references {
            string(reference.name)
            mark(reference.mark)
        }
    }
}

struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    var atEnd: Bool { offset == bytes.count }

    mutating func expect(_ prefix: [UInt8]) -> Bool {
        guard bytes.count >= prefix.count, Array(bytes[0..<prefix.count]) == prefix else { return false }
        offset = prefix.count
        return true
    }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func int() -> Int? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while let next = byte() {
            value |= UInt64(next & 0x7F) << shift
            if next & 0x80 == 0 { return value <= UInt64(Int.max) ? Int(value) : nil }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    mutating func string() -> String? {
        guard let count = int(), count <= bytes.count - offset else { return nil }
        defer { offset += count }
        return bytes.withUnsafeBufferPointer { buffer in
            String(decoding: UnsafeBufferPointer(rebasing: buffer[offset..<(offset + count)]), as: UTF8.self)
        }
    }

    mutating func mark() -> SourceMark? {
        guard let line = int(), let column = int() else { return nil }
        return SourceMark(line: line, column: column)
    }

    mutating func origin() -> Origin? {
        guard let file = string(), let mark = mark() else { return nil }
        return Origin(file: file, mark: mark)
    }

    /// `.some(nil)` for an absent reference, nil when the bytes are malformed.
    mutating func optionalReference() -> Reference?? {
        guard let flag = byte() else { return nil }
        if flag == 0 { return .some(nil) }
        guard let name = string(), let mark = mark() else { return nil }
        return .some(Reference(name, mark: mark))
    }

    mutating func references() -> [Reference]? {
        guard let count = int() else { return nil }
        var references: [Reference] = []
        for _ in 0..<count {
            guard let name = string(), let mark = mark() else { return nil }
            references.append(Reference(name, mark: mark))
        }
        return references
    }
}
