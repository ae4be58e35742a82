#if canImport(Glibc)
    import Glibc
#endif

/// Unix stream sockets by path: the machines' control sockets, QMP, the supervisor's clients.
enum UnixSocket {
    /// The longest path a unix socket address holds.
    static let maxPath = 107

    static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(maxPath).enumerated() { buffer[index] = byte }
        }
        return address
    }

    /// A connected socket, or nil (errno says why).
    static func connect(_ path: String) -> Int32? {
        guard path.utf8.count <= maxPath else {
            errno = ENAMETOOLONG
            return nil
        }
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        var address = address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let saved = errno
            close(descriptor)
            errno = saved
            return nil
        }
        return descriptor
    }

    /// A listening socket at `path` (an old one there is replaced), readable by its owner only.
    static func listen(_ path: String) -> Int32? {
        guard path.utf8.count <= maxPath else {
            errno = ENAMETOOLONG
            return nil
        }
        unlink(path)
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        var address = address(path)
        let previous = umask(0o077)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        umask(previous)
        guard bound == 0, Glibc.listen(descriptor, 64) == 0 else {
            let saved = errno
            close(descriptor)
            errno = saved
            return nil
        }
        return descriptor
    }

    static func setNonBlocking(_ descriptor: Int32) {
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
    }

    static var lastError: String { String(cString: strerror(errno)) }
}
