import AgentryYAML

/// What cross-file checks and revisions need of a resource: its name, where it is, its content
/// digest and its references. Small and cacheable by blob id, unlike the full resource.
public struct AgentSummary: Sendable, Hashable {
    public var name: String
    public var origin: Origin
    /// Digest of the agent's own fields (`Agent.fields`).
    public var digest: String
    public var harness: Reference?
    public var model: Reference?
    public var fallbackModels: [Reference]
    public var environment: Reference?
    public var skills: [Reference]
    /// Instructions kept in a file: the path relative to the declaring YAML file, and where it was written.
    public var instructionsFile: Reference?
    public var lifecycle: Lifecycle
    public var deletionPolicy: DeletionPolicy
    /// What each harness type cannot express of the agent's tools and MCP servers: `type\tmessage`
    /// at the mark of the field concerned (worked out here, so cross-file checks need only the type).
    public var toolProblems: [Reference] = []
    /// `run.schedule`, for `agentry serve`.
    public var schedule: RunSchedule? = nil

    public init(_ agent: Agent) {
        name = agent.metadata.name
        origin = agent.origin
        digest = Canonical.digest(agent.fields)
        harness = agent.harness
        model = agent.model
        fallbackModels = agent.fallbackModels
        environment = agent.environment
        skills = agent.skills
        if case .file(let path, let mark) = agent.instructions { instructionsFile = Reference(path, mark: mark) }
        lifecycle = agent.lifecycle
        deletionPolicy = agent.deletionPolicy
        schedule = agent.run.schedule
        if agent.tools != nil || !agent.mcpServers.isEmpty {
            let bound = Dictionary(agent.secrets.map { ($0.env, $0.ref) }) { first, _ in first }
            for type in HarnessType.allCases {
                for problem in NativeTools.problems(agent.tools, agent.mcpServers, type: type, bound: bound) {
                    toolProblems.append(Reference(type.rawValue + "\t" + problem.message, mark: problem.mark))
                }
            }
        }
    }

    /// What a harness of `type` cannot express of this agent's tools and MCP servers.
    public func toolProblems(for type: HarnessType) -> [(message: String, mark: SourceMark)] {
        toolProblems.compactMap { problem in
            let parts = problem.name.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2, parts[0] == type.rawValue else { return nil }
            return (String(parts[1]), problem.mark)
        }
    }

    public init(
        name: String, origin: Origin, digest: String, harness: Reference?, model: Reference?,
        fallbackModels: [Reference], environment: Reference?, skills: [Reference], instructionsFile: Reference?,
        lifecycle: Lifecycle, deletionPolicy: DeletionPolicy, toolProblems: [Reference] = [],
        schedule: RunSchedule? = nil
    ) {
        self.toolProblems = toolProblems
        self.schedule = schedule
        self.name = name
        self.origin = origin
        self.digest = digest
        self.harness = harness
        self.model = model
        self.fallbackModels = fallbackModels
        self.environment = environment
        self.skills = skills
        self.instructionsFile = instructionsFile
        self.lifecycle = lifecycle
        self.deletionPolicy = deletionPolicy
    }

    /// The instructions file's path relative to the repository root (before symlinks), if any.
    public var instructionsPath: String? {
        guard let file = instructionsFile, !file.name.hasPrefix("/") else { return nil }
        let directory = origin.file.split(separator: "/").dropLast().joined(separator: "/")
        return directory.isEmpty ? file.name : directory + "/" + file.name
    }
}

/// A Harness, Model or Environment as cross-file checks see it.
public struct ResourceSummary: Sendable, Hashable {
    public var kind: Kind
    public var name: String
    public var origin: Origin
    public var digest: String
    /// For a harness: the model APIs it supports.
    public var apis: [ModelAPI]
    /// For a model: the API it speaks.
    public var api: ModelAPI?
    /// For a harness: its type.
    public var harnessType: HarnessType?

    public init(
        kind: Kind, name: String, origin: Origin, digest: String, apis: [ModelAPI] = [], api: ModelAPI? = nil,
        harnessType: HarnessType? = nil
    ) {
        self.harnessType = harnessType
        self.kind = kind
        self.name = name
        self.origin = origin
        self.digest = digest
        self.apis = apis
        self.api = api
    }
}

/// What one file contributed: its diagnostics and the summaries of what it declared. This is the
/// unit cached by blob id, so a file that did not change is never read or parsed again.
public struct FileResult: Sendable {
    public var diagnostics: [Diagnostic] = []
    public var agents: [AgentSummary] = []
    public var resources: [ResourceSummary] = []
    /// For a `SKILL.md`: the skill's name when its front matter could be read.
    public var skillName: String?

    /// The full resources when the file was parsed in this run (not when it came from a cache).
    var decoded: [DecodedResource] = []
    var skill: Skill?

    public init(
        diagnostics: [Diagnostic] = [], agents: [AgentSummary] = [], resources: [ResourceSummary] = [],
        skillName: String? = nil
    ) {
        self.diagnostics = diagnostics
        self.agents = agents
        self.resources = resources
        self.skillName = skillName
    }
}

/// Parse results from an earlier run, by path, valid while the file's blob id is the same.
public struct FileCache: Sendable {
    public var entries: [String: (blobID: String, result: FileResult)]

    public init(entries: [String: (blobID: String, result: FileResult)] = [:]) {
        self.entries = entries
    }

    func result(for path: String, in tree: SourceTree) -> FileResult? {
        guard let cached = entries[path], let id = tree.blobID(path), cached.blobID == id else { return nil }
        return cached.result
    }
}

/// The repository as cross-file checks and revisions see it.
public struct RepositoryIndex: Sendable {
    public var agents: [AgentSummary] = []
    public var harnesses: [ResourceSummary] = []
    public var models: [ResourceSummary] = []
    public var environments: [ResourceSummary] = []
    /// Skill folder names with a readable SKILL.md.
    public var skills: [String] = []

    public init() {}

    /// Files each resource under its kind.
    public mutating func add<S: Sequence>(_ resources: S) where S.Element == ResourceSummary {
        for resource in resources {
            switch resource.kind {
            case .harness: harnesses.append(resource)
            case .model: models.append(resource)
            case .environment: environments.append(resource)
            case .agent: break
            }
        }
    }
}
