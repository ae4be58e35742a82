import AgentryCore
import AgentryModel
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads an agent repository from a plain folder, as a commit of it would read: the same
/// `SourceTree` for the same content (files identified by their git blob id).
public enum FolderReader {
    /// Reads the folder at `path`. Symlinks are recorded, never followed while walking; `.git` is skipped.
    public static func read(_ path: String, logger: Logger) throws -> LoadedRepository {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw SourceError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else { throw SourceError(.invalidPath, "\(path) is not a folder") }
        var entries: [String: SourceTree.Entry] = [:]
        try walk(root: path, relative: "", into: &entries)
        logger.debug("read folder", metadata: ["entries": "\(entries.count)"])
        return LoadedRepository(tree: SourceTree(entries: entries), source: .directory(path: path), displayPrefix: "")
    }

    private static func walk(root: String, relative: String, into entries: inout [String: SourceTree.Entry]) throws {
        let folder = relative.isEmpty ? root : root + "/" + relative
        guard let directory = opendir(folder) else {
            throw SourceError(.io, "cannot read folder \(folder): \(String(cString: strerror(errno)))")
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let item = readdir(directory) {
            let name = withUnsafePointer(to: item.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." || (relative.isEmpty && name == ".git") { continue }
            names.append(name)
        }
        for name in names.sorted() {
            let path = relative.isEmpty ? name : relative + "/" + name
            let full = root + "/" + path
            var status = stat()
            guard lstat(full, &status) == 0 else { continue }
            switch status.st_mode & S_IFMT {
            case S_IFDIR:
                entries[path] = .directory
                try walk(root: root, relative: path, into: &entries)
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = readlink(full, &buffer, buffer.count - 1)
                let target =
                    length >= 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
                entries[path] = .symlink(target: target)
            case S_IFREG:
                // Content is identified by its git blob id, as in a commit; very large files are not hashed.
                let size = Int(status.st_size)
                if size <= maxHashedFileSize, let bytes = try? readFile(full, limit: maxHashedFileSize) {
                    let content = SourceTree.needsContent(path) && size <= SourceTree.maxFileSize ? bytes : nil
                    entries[path] = .file(size: size, content: content, id: GitBlobID.of(bytes))
                } else {
                    entries[path] = .file(size: size, content: nil)
                }
            default:
                entries[path] = .other
            }
        }
    }

    /// Folder files above this size get no blob id (their content never matters to agentry).
    static let maxHashedFileSize = 16 << 20

    static func readFile(_ path: String, limit: Int) throws -> [UInt8] {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw SourceError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.read(descriptor, &chunk, chunk.count)
            if count < 0 {
                if errno == EINTR { continue }
                throw SourceError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > limit { break }
        }
        return bytes
    }
}
