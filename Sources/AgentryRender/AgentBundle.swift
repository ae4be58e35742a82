import AgentryModel
import AgentryPlan

/// A file that goes into an agent's machine: a path relative to the agent's home.
public struct BundleFile: Sendable, Equatable {
    public var path: String
    public var mode: Int
    public var bytes: [UInt8]
    /// A symbolic link to `target` instead of a file.
    public var linkTarget: String?

    public init(path: String, mode: Int = 0o644, bytes: [UInt8], linkTarget: String? = nil) {
        self.path = path
        self.mode = mode
        self.bytes = bytes
        self.linkTarget = linkTarget
    }
}

/// One agent at one commit with everything it uses resolved and read: its resources as typed values,
/// its instruction text and its skills' files. What `apply` pushes into the machine and `run` runs.
public struct AgentBundle: Sendable {
    public var name: String
    public var commit: String
    public var revision: String
    public var agent: Agent
    public var harness: Harness
    public var model: Model?
    /// The agent's `fallbackModels`, in order (those that exist).
    public var fallbackModels: [Model] = []
    public var environment: Environment?
    public var fields: Fields
    public var instructions: [UInt8]?
    /// Skill name → its folder's files, paths relative to the folder.
    public var skills: [(name: String, files: [BundleFile])]

    public init(
        name: String, commit: String, revision: String, agent: Agent, harness: Harness, model: Model?,
        environment: Environment?, fields: Fields, instructions: [UInt8]?, skills: [(name: String, files: [BundleFile])]
    ) {
        self.name = name
        self.commit = commit
        self.revision = revision
        self.agent = agent
        self.harness = harness
        self.model = model
        self.environment = environment
        self.fields = fields
        self.instructions = instructions
        self.skills = skills
    }
}
