/// What every module's error type has in common: a coarse category that code above the module can
/// act on without knowing the module (retry a lock, answer 404, pick an exit code), and a message
/// for the user. Each module has one error type: a struct with a stable `code` of its own, a
/// `message` and the underlying `cause`; its category follows from its code.
public protocol AgentryFailure: Error, Sendable, CustomStringConvertible {
    var category: FailureCategory { get }
    /// What went wrong and, where it can, what to do about it. Never a type name or a stack.
    var message: String { get }
}

extension AgentryFailure {
    public var description: String { message }
}

/// The kinds of failure callers decide on.
public enum FailureCategory: String, Sendable, Equatable, CaseIterable {
    /// The input (an argument, a file, a name) is not what was expected.
    case invalidInput
    /// What was asked for does not exist.
    case notFound
    /// Another writer holds the lock; trying again later may work.
    case locked
    /// The request conflicts with the current state (a stale plan, a killed agent).
    case conflict
    /// Something outside agentry failed or did not answer (a machine, a remote, a tool).
    case unavailable
    /// A deadline passed.
    case timeout
    /// Reading or writing the host's files failed.
    case io
    /// A bug in agentry.
    case internalFailure
}
