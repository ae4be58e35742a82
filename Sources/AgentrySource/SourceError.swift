import AgentryBasics
import AgentryGit

/// Why an agent repository could not be read (as opposed to being read and found invalid).
public struct SourceError: AgentryFailure {
    public enum Code: String, Sendable {
        /// A `--path`, folder or target that is not acceptable.
        case invalidPath
        /// No such commit, folder, agent or file.
        case notFound
        /// libgit2 failed (no repository, a bad ref, a damaged object).
        case git
        /// Reading or writing the host's files failed.
        case io
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var category: FailureCategory {
        switch code {
        case .invalidPath: return .invalidInput
        case .notFound: return .notFound
        case .git: return (cause as? GitError)?.category ?? .unavailable
        case .io: return .io
        }
    }

    /// Runs `body`, reporting libgit2's failures with the operation that failed.
    static func reading<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as GitError {
            throw SourceError(.git, error.description, cause: error)
        }
    }
}
