import AgentryBasics

/// Why a use case could not do what it was asked. The CLI picks exit codes from `code` (in one
/// place), the server will pick HTTP statuses from it; nobody reads `message` to decide anything.
public struct CoreError: AgentryFailure {
    public enum Code: String, Sendable, CaseIterable {
        /// An argument or request is malformed (a `--path` outside the repository, a bad run id).
        case invalidArgument
        /// The agent repository, a ref or a folder cannot be read.
        case repositoryUnavailable
        /// The repository at the commit does not validate, so nothing can be done from it.
        case invalidRepository
        /// No such agent, run, or state.
        case notFound
        /// Another agentry holds the state's writer lock.
        case stateLocked
        /// The state database cannot be used (corrupt, written by a newer agentry, unreadable).
        case stateUnavailable
        /// A saved plan no longer matches (another commit, changed actual state).
        case planStale
        /// The state directory applied another agent repository.
        case stateBelongsElsewhere
        /// The planner refused (an empty desired state, a mass delete).
        case planRefused
        /// The agent is killed, paused or revoked, and so does not run.
        case agentBlocked
        /// The agent's machine is not running.
        case machineNotRunning
        /// A secret the run needs is missing, or the store cannot be read.
        case secretUnavailable
        /// The machine failed: it did not start, did not report in, or its guest failed a command.
        case machineFailed
        /// The history branch could not be read or written.
        case historyUnavailable
        /// A file of the host could not be read or written.
        case io
        /// A bug in agentry.
        case internalFailure
    }

    public var code: Code
    public var message: String
    /// The failure underneath, from the port that reported it.
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var category: FailureCategory {
        switch code {
        case .invalidArgument, .invalidRepository: return .invalidInput
        case .notFound: return .notFound
        case .stateLocked: return .locked
        case .planStale, .planRefused, .agentBlocked, .machineNotRunning, .stateBelongsElsewhere: return .conflict
        case .repositoryUnavailable, .secretUnavailable, .machineFailed, .historyUnavailable: return .unavailable
        case .stateUnavailable, .io: return .io
        case .internalFailure: return .internalFailure
        }
    }

    /// A port's failure as the core reports it: the port's own words, a code chosen from what the
    /// failure is (`fallback` unless its category says more).
    public static func wrapping(_ error: any Error, as fallback: Code) -> CoreError {
        if let error = error as? CoreError { return error }
        guard let failure = error as? any AgentryFailure else {
            return CoreError(fallback, "\(error)", cause: nil)
        }
        let code: Code
        switch failure.category {
        case .locked: code = .stateLocked
        case .internalFailure: code = .internalFailure
        default: code = fallback
        }
        return CoreError(code, failure.message, cause: failure)
    }
}

/// Runs `body`, reporting any failure of a port as a `CoreError` with `code`.
@inline(__always)
func reporting<T>(_ code: CoreError.Code, _ body: () throws -> T) throws(CoreError) -> T {
    do {
        return try body()
    } catch {
        throw CoreError.wrapping(error, as: code)
    }
}

/// The message of any error, as a user reads it (never a type name when the error is agentry's).
public func describe(_ error: any Error) -> String {
    (error as? any AgentryFailure)?.message ?? "\(error)"
}
