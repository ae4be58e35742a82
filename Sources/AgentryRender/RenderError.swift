import AgentryBasics

/// Why something could not be rendered for a machine.
public struct RenderError: AgentryFailure {
    public enum Code: String, Sendable {
        /// A path does not fit the archive format the configuration travels in.
        case pathTooLong
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var category: FailureCategory { .invalidInput }
}
