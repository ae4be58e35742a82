import Dispatch

/// Runs blocking work (libgit2, QEMU and its tools, the guest's control channel, disk formatting)
/// on threads of its own, never on Swift concurrency's cooperative pool, whose few threads must
/// stay free for the tasks that wait: one slow guest must not stall every other agent's work.
public enum BlockingWork {
    private static let queue = DispatchQueue(label: "agentry.blocking", qos: .userInitiated, attributes: .concurrent)

    /// Runs `body` on a blocking-work thread and resumes the caller with its result.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body() })
            }
        }
    }

    /// The same for work that cannot fail.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }
}
