import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A file descriptor that holds a lock (`flock`) until it is closed: closed once, by `release` or
/// when the holder goes away, whichever comes first, from any thread.
public final class HeldDescriptor: Sendable {
    private let descriptor: Mutex<Int32?>

    public init(_ descriptor: Int32) {
        self.descriptor = Mutex(descriptor)
    }

    /// Closes it; false when it was already closed.
    @discardableResult
    public func release() -> Bool {
        let held = descriptor.withLock { value -> Int32? in
            defer { value = nil }
            return value
        }
        guard let held else { return false }
        close(held)
        return true
    }

    deinit { release() }
}
