import AgentryModel

/// One agent as the repository wants it: an immutable revision of the agent with everything it
/// references resolved (harness, models, environment, skill contents, instruction text, secret
/// references), plus what the planner needs besides.
public struct DesiredAgent: Sendable, Hashable {
    public var name: String
    /// SHA-256 over the digests of every part (see `parts`).
    public var revision: String
    public var lifecycle: Lifecycle
    public var deletionPolicy: DeletionPolicy
    public var origin: Origin
    /// What the revision is made of: `agent`, `harness`, `model`, `fallbackModels[i]`,
    /// `environment`, `skills.<name>`, `instructions`, each `name digest` or a blob id.
    public var parts: Fields
    /// The names it references, for summaries: `harness`, `model`, `environment`.
    public var references: Fields

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

    /// Compiles a validated repository into revisions. Call only when validation found no errors:
    /// unresolved references compile to empty parts.
    public static func compile(_ index: RepositoryIndex, tree: SourceTree, commit: String? = nil) -> DesiredState {
        let harnesses = Dictionary(index.harnesses.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let models = Dictionary(index.models.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let environments = Dictionary(index.environments.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let skillDigests = SkillDigests(tree: tree, wanted: Set(index.agents.flatMap { $0.skills.map(\.name) }))
        var agents: [String: DesiredAgent] = [:]
        agents.reserveCapacity(index.agents.count)
        for agent in index.agents {
            var parts: Fields = [("agent", agent.digest)]
            func part(_ label: String, _ summary: ResourceSummary?) {
                parts.append((label, summary.map { "\($0.name) \($0.digest)" } ?? ""))
            }
            part("harness", agent.harness.flatMap { harnesses[$0.name] })
            part("model", agent.model.flatMap { models[$0.name] })
            for (position, fallback) in agent.fallbackModels.enumerated() {
                part("fallbackModels[\(position)]", models[fallback.name])
            }
            part("environment", agent.environment.flatMap { environments[$0.name] })
            for skill in agent.skills {
                parts.append(("skills.\(skill.name)", skillDigests.digest(of: skill.name)))
            }
            if let path = agent.instructionsPath, case .file(let resolved) = tree.resolve(path) {
                parts.append(("instructions", tree.blobID(resolved) ?? ""))
            }
            let references: Fields = [
                ("harness", agent.harness?.name ?? ""), ("model", agent.model?.name ?? ""),
                ("environment", agent.environment?.name ?? ""),
            ]
            agents[agent.name] = DesiredAgent(
                name: agent.name, revision: Canonical.digest(parts), lifecycle: agent.lifecycle,
                deletionPolicy: agent.deletionPolicy, origin: agent.origin, parts: parts, references: references)
        }
        return DesiredState(agents: agents, commit: commit)
    }
}

/// Content digests of skill folders: every file's path and blob id (and every symlink's target).
struct SkillDigests {
    let digests: [String: String]

    init(tree: SourceTree, wanted: Set<String>) {
        var byFolder: [String: Fields] = [:]
        for (path, entry) in tree.entries where path.utf8.starts(with: "skills/".utf8) {
            let rest = path.dropFirst("skills/".count)
            guard let slash = rest.firstIndex(of: "/") else { continue }
            let folder = String(rest[..<slash])
            guard wanted.contains(folder) else { continue }
            let relative = String(rest[rest.index(after: slash)...])
            switch entry {
            case .file(_, _, let id): byFolder[folder, default: []].append((relative, "blob " + (id ?? "?")))
            case .symlink(let target): byFolder[folder, default: []].append((relative, "link " + target))
            case .directory, .other: continue
            }
        }
        digests = byFolder.mapValues { Canonical.digest($0.sorted { $0.0 < $1.0 }) }
    }

    func digest(of name: String) -> String {
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
        for (label, value) in parts where label.hasPrefix("skills.") || label == "instructions" {
            fields.append((label, value))
        }
        return fields
    }
}
