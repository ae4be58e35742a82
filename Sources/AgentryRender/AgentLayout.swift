import AgentryModel

/// Where an agent's things live in its machine, per harness: the home is `/agent` (the environment
/// disk); instructions and skills go where the harness looks for them unless the Harness says
/// otherwise (`instructionsFile`, `skillsDir`).
public enum AgentLayout {
    public static let home = "/agent"
    /// What agentry itself keeps in the home: the list of files it wrote, the installed harnesses.
    public static let own = ".agentry"

    public static func instructionsFile(_ harness: Harness) -> String {
        if let explicit = harness.instructionsFile { return explicit }
        switch harness.type {
        case .hermes?: return ".hermes/SOUL.md"
        case .claudeCode?: return "CLAUDE.md"
        default: return "AGENTS.md"
        }
    }

    public static func skillsDirectory(_ harness: Harness) -> String {
        if let explicit = harness.skillsDir { return explicit }
        switch harness.type {
        case .hermes?: return ".hermes/skills"
        case .claudeCode?: return ".claude/skills"
        case .codex?: return ".codex/skills"
        case .opencode?: return ".opencode/skills"
        default: return "skills"
        }
    }

    public static func outputDirectory(_ agent: Agent) -> String {
        trimmed(agent.run.output.isEmpty ? "out" : agent.run.output)
    }
    public static func memoryDirectory(_ agent: Agent) -> String {
        trimmed(agent.memory.path.isEmpty ? "memory" : agent.memory.path)
    }

    static func trimmed(_ path: String) -> String {
        SourceTree.normalize(path) ?? path.split(separator: "/").joined(separator: "/")
    }
}

/// The per-run values templates may use besides the agent's own.
public struct RunContext: Sendable {
    public var prompt: String
    public var runID: String
    public var timeoutSeconds: Int
    /// The run continues the harness's previous session (its `continueCommand`).
    public var continuing: Bool

    public init(prompt: String, runID: String, timeoutSeconds: Int, continuing: Bool = false) {
        self.prompt = prompt
        self.runID = runID
        self.timeoutSeconds = timeoutSeconds
        self.continuing = continuing
    }

    /// Apply pushes configuration with no run in sight.
    public static let none = RunContext(prompt: "", runID: "", timeoutSeconds: 0)
}

/// Limits on what a run keeps in history.
public enum RunLimits {
    /// The log kept in history: its head and tail around a marker past this many bytes.
    public static let logBytes = 1 << 20
    /// Artifacts up to this size are committed; larger ones are recorded by digest only.
    public static let storedArtifactBytes = 256 << 10
    /// All committed artifacts of one run together.
    public static let storedArtifactsTotal = 4 << 20
    /// The memory snapshot: files up to this size, at most `memoryTotal` together.
    public static let memoryFileBytes = 1 << 20
    public static let memoryTotal = 8 << 20
    /// What a run's collection reads from the guest at most.
    public static let collectedBytes = 64 << 20
}
