import AgentryModel

/// One agent as the repository wants it: an immutable revision of the agent with everything it
/// references resolved (harness, models, environment, skill contents, instruction text, secret
/// references), plus what the planner needs besides.
public struct DesiredAgent: Sendable, Hashable {
    public var name: String
    /// SHA-256 over the digests of everything the agent uses: its own fields, its harness, models
    /// and environment (by name and digest), its skills' contents and its instruction text.
    public var revision: String
    public var lifecycle: Lifecycle
    public var deletionPolicy: DeletionPolicy
    public var origin: Origin
    /// The content parts of the revision, for reasons: `skills.<name>` (a folder digest) and
    /// `instructions` (the text's blob id).
    public var parts: Fields
    /// The names it references, for summaries: `harness`, `model`, `environment`.
    public var references: Fields
    /// `run.schedule`: when `agentry serve` starts its runs.
    public var schedule: RunSchedule? = nil

    public init(
        name: String, revision: String, lifecycle: Lifecycle, deletionPolicy: DeletionPolicy, origin: Origin,
        parts: Fields, references: Fields
    ) {
        self.name = name
        self.revision = revision
        self.lifecycle = lifecycle
        self.deletionPolicy = deletionPolicy
        self.origin = origin
        self.parts = parts
        self.references = references
    }

    public static func == (lhs: DesiredAgent, rhs: DesiredAgent) -> Bool {
        lhs.name == rhs.name && lhs.revision == rhs.revision && lhs.lifecycle == rhs.lifecycle
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(revision)
    }
}

/// Every agent the repository at one commit wants.
public struct DesiredState: Sendable {
    public var agents: [String: DesiredAgent]
    /// The commit it was read from, when it came from git.
    public var commit: String?

    public init(agents: [String: DesiredAgent] = [:], commit: String? = nil) {
        self.agents = agents
        self.commit = commit
    }

    /// The active agents' `run.schedule`s (a paused or retired agent's never fires).
    public var schedules: [String: RunSchedule] {
        agents.compactMapValues { $0.lifecycle == .active ? $0.schedule : nil }
    }

    /// Compiles a validated repository into revisions. Call only when validation found no errors:
    /// unresolved references compile to empty parts.
    public static func compile(_ index: RepositoryIndex, tree: SourceTree, commit: String? = nil) -> DesiredState {
        let resources = ResourceTable(index.harnesses + index.models + index.environments)
        let skillDigests = SkillDigests(tree: tree, wanted: Set(index.agents.flatMap { $0.skills.map(\.name) }))
        var agents: [String: DesiredAgent] = [:]
        agents.reserveCapacity(index.agents.count)
        for agent in index.agents {
            var instructions: String?
            if let path = agent.instructionsPath, case .file(let resolved) = tree.resolve(path) {
                instructions = tree.blobID(resolved) ?? ""
            }
            agents[agent.name] = DesiredAgent.compile(
                agent, resources: resources, skillDigest: skillDigests.digest(of:), instructionsBlob: instructions)
        }
        return DesiredState(agents: agents, commit: commit)
    }
}

/// Harnesses, models and environments by kind and name.
public struct ResourceTable: Sendable {
    public var byKey: [String: ResourceSummary]

    public init(_ resources: [ResourceSummary]) {
        byKey = Dictionary(resources.map { (Self.key($0.kind, $0.name), $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// A table already keyed by `key(kind, name)`.
    public init(byKey: [String: ResourceSummary]) {
        self.byKey = byKey
    }

    public static func key(_ kind: Kind, _ name: String) -> String { kind.rawValue + ":" + name }

    public subscript(kind: Kind, name: String) -> ResourceSummary? { byKey[Self.key(kind, name)] }
}

extension DesiredAgent {
    /// One agent's revision from the digests of everything it uses.
    public static func compile(
        _ agent: AgentSummary, resources: ResourceTable, skillDigest: (String) -> String, instructionsBlob: String?
    ) -> DesiredAgent {
        var parts: Fields = [("agent", agent.digest)]
        func part(_ label: String, _ summary: ResourceSummary?) {
            parts.append((label, summary.map { "\($0.name) \($0.digest)" } ?? ""))
        }
        part("harness", agent.harness.flatMap { resources[.harness, $0.name] })
        part("model", agent.model.flatMap { resources[.model, $0.name] })
        for (position, fallback) in agent.fallbackModels.enumerated() {
            part("fallbackModels[\(position)]", resources[.model, fallback.name])
        }
        part("environment", agent.environment.flatMap { resources[.environment, $0.name] })
        for skill in agent.skills {
            parts.append(("skills.\(skill.name)", skillDigest(skill.name)))
        }
        if let instructionsBlob { parts.append(("instructions", instructionsBlob)) }
        let content = parts.filter { $0.0.hasPrefix("skills.") || $0.0 == "instructions" }
        return DesiredAgent(agent, revision: Canonical.digest(parts), parts: content)
    }

    /// An agent whose revision is already known.
    public init(_ agent: AgentSummary, revision: String, parts: Fields) {
        self.init(
            name: agent.name, revision: revision, lifecycle: agent.lifecycle, deletionPolicy: agent.deletionPolicy,
            origin: agent.origin, parts: parts,
            references: [
                ("harness", agent.harness?.name ?? ""), ("model", agent.model?.name ?? ""),
                ("environment", agent.environment?.name ?? ""),
            ])
        schedule = agent.schedule
    }
}

/// Content digests of skill folders: every file's path and blob id (and every symlink's target).
public struct SkillDigests: Sendable {
    public let digests: [String: String]

    /// Digests of the `wanted` folders under `skills/` (all of them when nil).
    public init(tree: SourceTree, wanted: Set<String>?) {
        var byFolder: [String: Fields] = [:]
        for (path, entry) in tree.entries where path.utf8.starts(with: "skills/".utf8) {
            let rest = path.dropFirst("skills/".count)
            guard let slash = rest.firstIndex(of: "/") else { continue }
            let folder = String(rest[..<slash])
            if let wanted, !wanted.contains(folder) { continue }
            let relative = String(rest[rest.index(after: slash)...])
            switch entry {
            case .file(_, _, let id): byFolder[folder, default: []].append((relative, "blob " + (id ?? "?")))
            case .symlink(let target): byFolder[folder, default: []].append((relative, "link " + target))
            case .directory, .other: continue
            }
        }
        digests = byFolder.mapValues { Canonical.digest($0.sorted { $0.0 < $1.0 }) }
    }

    public func digest(of name: String) -> String {
        digests[name] ?? ""
    }
}

/// The resolved fields of an agent, for reasons: its own fields, then each referenced resource's
/// fields under a prefix (`harness.version`, `model.name`, `environment.resources.memory`).
public enum ResolvedFields {
    public static func of(
        _ agent: Agent, harness: Harness?, models: [String: Model], environment: Environment?, parts: Fields
    ) -> Fields {
        var fields = agent.fields
        if let harness { fields += harness.fields.map { ("harness." + $0.0, $0.1) } }
        if let model = agent.model.flatMap({ models[$0.name] }) {
            fields += model.fields.map { ("model." + $0.0, $0.1) }
        }
        for fallback in agent.fallbackModels {
            if let model = models[fallback.name] {
                fields += model.fields.map { ("fallbackModels.\(fallback.name).\($0.0)", $0.1) }
            }
        }
        if let environment { fields += environment.fields.map { ("environment." + $0.0, $0.1) } }
        fields += parts
        return fields
    }
}
