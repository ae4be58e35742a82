/// The files of an agent repository as the validator sees them, whichever way they were read (a git
/// tree or a folder). Paths are relative to the agent repository root and `/`-separated. Symlinks
/// are kept as links and resolved here, inside the tree, so both sources behave the same.
public struct SourceTree: Sendable {
    public enum Entry: Sendable {
        /// A regular file. `content` is loaded for the files the validator reads (see
        /// `SourceTree.needsContent`) when they are within `SourceTree.maxFileSize` and not already
        /// known by `id`, the git blob id of the content (nil when it could not be computed).
        case file(size: Int, content: [UInt8]?, id: String? = nil)
        case symlink(target: String)
        case directory
        /// Anything else: a submodule, a socket, a device.
        case other
    }

    public var entries: [String: Entry]

    public init(entries: [String: Entry] = [:]) {
        self.entries = entries
    }

    /// Files larger than this are not read: they get a `file-too-large` diagnostic.
    public static let maxFileSize = 1 << 20

    /// Whether a path is a resource file: `*.yaml`/`*.yml` outside dot-folders and `skills/`.
    public static func isResourceFile(_ path: String) -> Bool {
        // Byte-level: this runs for every path of the tree.
        let bytes = path.utf8
        guard bytes.last == UInt8(ascii: "l") || bytes.last == UInt8(ascii: "f") else { return false }
        guard path.hasSuffix(".yaml") || path.hasSuffix(".yml") else { return false }
        if path.hasPrefix("skills/") { return false }
        var atComponentStart = true
        for byte in bytes {
            if atComponentStart && byte == UInt8(ascii: ".") { return false }
            atComponentStart = byte == UInt8(ascii: "/")
        }
        return true
    }

    /// Whether a path is a skill's manifest, `skills/<name>/SKILL.md`.
    public static func isSkillManifest(_ path: String) -> Bool {
        guard path.hasPrefix("skills/"), path.hasSuffix("/SKILL.md") else { return false }
        return path.utf8.lazy.filter { $0 == UInt8(ascii: "/") }.count == 2
    }

    /// Whether a loader must read this file's content.
    public static func needsContent(_ path: String) -> Bool {
        isResourceFile(path) || isSkillManifest(path)
    }

    public enum Resolution: Sendable, Equatable {
        case file(String)
        case directory(String)
        case missing(String)
        /// The path, or a symlink on the way, leads outside the repository.
        case escapes(String)
        /// Symlinks loop or chain too deep.
        case loop
    }

    /// Whether `path` has no empty, `.` or `..` component (so `normalize` would return it unchanged).
    static func isNormalized(_ path: String) -> Bool {
        var componentLength = 0
        var dots = 0
        for byte in path.utf8 {
            if byte == UInt8(ascii: "/") {
                if componentLength == 0 || componentLength == dots && dots <= 2 { return false }
                componentLength = 0
                dots = 0
            } else {
                componentLength += 1
                if byte == UInt8(ascii: ".") { dots += 1 }
            }
        }
        return componentLength > 0 && !(componentLength == dots && dots <= 2)
    }

    /// Normalises `path` against the root: nil when `..` climbs above it.
    public static func normalize(_ path: String) -> String? {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                if parts.isEmpty { return nil }
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    /// Resolves a repository-relative path through symlinks, never leaving the tree.
    public func resolve(_ path: String) -> Resolution {
        if path.hasPrefix("/") { return .escapes(path) }
        // Fast path: a plain path to a file whose folders are all real folders.
        if case .file? = entries[path], Self.isNormalized(path) {
            var folder = Substring(path)
            var plain = true
            while let slash = folder.lastIndex(of: "/") {
                folder = folder[..<slash]
                guard case .directory? = entries[String(folder)] else {
                    plain = false
                    break
                }
            }
            if plain { return .file(path) }
        }
        guard var current = Self.normalize(path) else { return .escapes(path) }
        var hops = 0
        restart: while true {
            let parts = current.split(separator: "/")
            var prefix = ""
            for (index, part) in parts.enumerated() {
                prefix = prefix.isEmpty ? String(part) : prefix + "/" + part
                switch entries[prefix] {
                case .symlink(let target)?:
                    hops += 1
                    if hops > 40 { return .loop }
                    if target.hasPrefix("/") { return .escapes(path) }
                    let parent = prefix.split(separator: "/").dropLast().joined(separator: "/")
                    let rest = parts[(index + 1)...].joined(separator: "/")
                    let joined = [parent, target, rest].filter { !$0.isEmpty }.joined(separator: "/")
                    guard let next = Self.normalize(joined) else { return .escapes(path) }
                    current = next
                    continue restart
                case .directory?:
                    continue
                case .file?, .other?:
                    return index == parts.count - 1 ? .file(prefix) : .missing(path)
                case nil:
                    return .missing(path)
                }
            }
            return .directory(current)
        }
    }

    /// The git blob id of a file entry, if known.
    public func blobID(_ path: String) -> String? {
        if case .file(_, _, let id)? = entries[path] { return id }
        return nil
    }
}
