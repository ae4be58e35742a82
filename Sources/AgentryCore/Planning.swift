import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import Foundation

/// Plans and diffs: the desired state from git against the actual state (or another commit).
public struct Planning: Sendable {
    public enum Outcome: Sendable {
        /// The repository failed validation: nothing is planned.
        case invalid(ValidationReport)
        /// The planner refused (an empty desired state, a mass delete).
        case refused(PlanRefusal)
        case planned(PlanDocument)

        /// The plan, when one was made.
        public var document: PlanDocument? {
            if case .planned(let document) = self { return document }
            return nil
        }
    }

    /// Which agent repository, at which commit.
    public struct Target: Sendable {
        public var repository: String
        public var ref: String
        public var path: String

        public init(repository: String, ref: String, path: String) {
            self.repository = repository
            self.ref = ref
            self.path = path
        }
    }

    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    /// `agentry plan`: the desired state at `target` against the actual state. A state that is not
    /// there is an error, never an empty state that plans to create everything; `emptyState` plans
    /// against nothing applied on purpose (a first deployment), reading no state at all.
    /// `adopt`: plan although the state belongs to another agent repository.
    public func plan(_ target: Target, options: PlanOptions, emptyState: Bool = false, adopt: Bool = false) async throws
        -> Outcome
    {
        let ports = ports
        return try await BlockingWork.run {
            if !emptyState { try reporting(.stateUnavailable) { try ports.state.checkReadable() } }
            let state: any StateStore = emptyState ? NoState() : ports.state
            // The state and the machines are measured while the repository is opened and read.
            let measuring = BlockingWork.start {
                Result { MeasuredState(try Self.measure(state, machines: ports.machines)) }
            }
            let reader = try ports.reader(target.repository, path: target.path)
            if !emptyState && !adopt { try Self.checkOwner(ports.state, reader.identity) }
            let loaded = try reporting(.repositoryUnavailable) { try reader.load(target.ref) }
            let measured = try measuring.wait().get()
            guard loaded.report.isValid else { return .invalid(loaded.report) }
            let outcome = try Self.plan(
                loaded, reader: reader, state: state, machines: ports.machines, options: options, target: target,
                measured: measured)
            // Freeing 10,000 agents' structures (the commit, and the snapshot the reader holds) need
            // not hold up the answer.
            BlockingWork.discard(loaded)
            BlockingWork.discard(reader)
            return outcome
        }
    }

    /// Plans a loaded, valid commit against the actual state in `state`; `checkActual` may refuse
    /// that state (by its digest) first: a saved plan gone stale.
    /// `measured`: the state and machines as measured, when already measured.
    static func plan(
        _ loaded: LoadedCommit, reader: any RepositoryReader, state: any StateStore, machines: any MachineBackend,
        options: PlanOptions, target: Target,
        checkActual: (_ digest: String) throws -> Void = { _ in }, measured: MeasuredState? = nil
    ) throws -> Outcome {
        let desired = loaded.desired
        let measured = try measured ?? MeasuredState(measure(state, machines: machines))
        try checkActual(measured.digest)
        // Applied fields (and full fields, parsing the files involved) only for agents that exist
        // and changed.
        var changed = Set<String>()
        for (name, existing) in measured.actual.agents {
            guard let wanted = desired.agents[name] else { continue }
            if existing.appliedRevision != wanted.revision || existing.lifecycle != wanted.lifecycle {
                changed.insert(name)
            }
        }
        let actual = try measured.withFields(of: changed, from: state)
        let fields = try reporting(.repositoryUnavailable) { try reader.resolvedFields(of: changed, in: loaded) }
        switch Planner.plan(desired: desired, actual: actual, options: options, fields: { fields[$0.name] }) {
        case .failure(let refusal):
            return .refused(refusal)
        case .success(var plan):

            // What would stop a machine from running here at all, said before apply tries.
            for index in plan.actions.indices where plan.actions[index].action != .delete {
                if let problem = machines.pathProblem(plan.actions[index].agent) {
                    plan.actions[index].notes.append(problem)
                }
            }
            var document = PlanDocument(
                kind: .plan, plan: plan, commit: loaded.commit, repository: target.repository, ref: target.ref,
                path: target.path, actualDigest: measured.digest)
            document.textChanges = textChangesSinceApplied(plan, loaded: loaded, reader: reader, state: state)
            return .planned(document)
        }
    }

    /// What the state database says was applied, the kill switches, and each machine as observed.
    struct Measurement: Sendable {
        var rows: [AppliedAgent] = []
        var kills: [String: KillSwitch] = [:]
        var observations: [MachineObservation] = []
    }

    /// The actual state as measured, without applied fields, and its digest: a plan reads the
    /// applied fields of the agents that changed only.
    struct MeasuredState: Sendable {
        var actual: ActualState
        var digest: String

        init(_ measurement: Measurement) {
            actual = Planning.actualState(measurement)
            digest = actual.digest
        }

        /// The actual state with the applied fields of `names` read and decoded.
        func withFields(of names: Set<String>, from state: any StateStore) throws -> ActualState {
            guard !names.isEmpty else { return actual }
            var actual = actual
            for (name, stored) in try reporting(.stateUnavailable, { try state.appliedFields(of: names) }) {
                actual.agents[name]?.appliedFields = Dictionary(
                    AgentRecord.decodeFields(stored), uniquingKeysWith: { a, _ in a })
            }
            return actual
        }
    }

    static func measure(_ state: any StateStore, machines: any MachineBackend) throws -> Measurement {
        guard state.exists else { return Measurement() }
        var measurement = try reporting(.stateUnavailable) {
            var measurement = Measurement(rows: try state.appliedAgents(fields: false))
            for name in try state.killedAgents() { measurement.kills[name] = try state.killSwitch(name) }
            return measurement
        }
        measurement.observations = measurement.rows.map { machines.observe($0.name) }
        // Applied fields are read for running machines (whose resources are compared with them);
        // a plan reads those of the agents that changed.
        let running = Set(
            zip(measurement.rows, measurement.observations).filter { $0.1.process == .running }.map(\.0.name))
        if !running.isEmpty {
            let fields = try reporting(.stateUnavailable) { try state.appliedFields(of: running) }
            for index in measurement.rows.indices where running.contains(measurement.rows[index].name) {
                measurement.rows[index].fieldsJSON = fields[measurement.rows[index].name]
            }
        }
        return measurement
    }

    /// The actual state: what the state database says was applied, each machine measured (a
    /// machine that died, is still starting or runs with other resources is drift), and the kill
    /// switch. Without applied fields: `MeasuredState.withFields` reads those a plan needs.
    static func actualState(_ measurement: Measurement) -> ActualState {
        let kills = measurement.kills
        var agents: [String: ActualAgent] = [:]
        agents.reserveCapacity(measurement.rows.count)
        for (row, observation) in zip(measurement.rows, measurement.observations) {
            let status = HealthCheck.status(record: row, killed: kills[row.name], observation: observation)
            agents[row.name] = ActualAgent(
                name: row.name, appliedRevision: row.revision,
                appliedFields: [:],
                lifecycle: Lifecycle(rawValue: row.lifecycle) ?? .active,
                deletionPolicy: DeletionPolicy(rawValue: row.deletionPolicy) ?? .retain,
                machineState: row.machineState, health: status.health,
                killed: kills[row.name].map { KillNotice(reason: $0.reason, actor: $0.actor) })
        }
        return ActualState(agents: agents)
    }

    /// `agentry diff BASE HEAD`: what merging HEAD would do, from the two commits alone.
    public func diff(repository: String, base: String, head: String, path: String) async throws -> Outcome {
        let ports = ports
        return try await BlockingWork.run {
            // With the parse cache, the base is read incrementally from what was remembered
            // (usually HEAD, just validated), or in full and remembered; HEAD then incrementally
            // from one of them. Without it, a cache of this diff's own does the same in memory.
            let reader = try reporting(.repositoryUnavailable) {
                try ports.source.reader(
                    repository: repository, path: path, cache: ports.parseCache ?? MemoryParseCache())
            }
            let (before, after) = try reporting(.repositoryUnavailable) {
                (try reader.load(base), try reader.load(head))
            }
            guard after.report.isValid else { return .invalid(after.report) }
            let old = before.desired
            let new = after.desired
            let changed = Set(
                new.agents.values.filter { old.agents[$0.name] != nil && $0 != old.agents[$0.name] }.map(\.name))
            let (oldFields, newFields) = try reporting(.repositoryUnavailable) {
                (try reader.resolvedFields(of: changed, in: before), try reader.resolvedFields(of: changed, in: after))
            }
            var actual = ActualState()
            for agent in old.agents.values {
                actual.agents[agent.name] = ActualAgent(
                    name: agent.name, appliedRevision: agent.revision,
                    appliedFields: Dictionary(oldFields[agent.name] ?? [], uniquingKeysWith: { a, _ in a }),
                    lifecycle: agent.lifecycle, deletionPolicy: agent.deletionPolicy)
            }
            let options = PlanOptions(allowEmpty: true, allowMassDelete: true)
            switch Planner.plan(desired: new, actual: actual, options: options, fields: { newFields[$0.name] }) {
            case .failure(let refusal):
                return .refused(refusal)
            case .success(let plan):
                var document = PlanDocument(
                    kind: .diff, plan: plan, commit: after.commit, baseCommit: before.commit,
                    repository: repository,
                    ref: head, path: path)
                document.textChanges = Self.textChanges(
                    plan, before: Self.remembering { try? reader.bundle($0, in: before) },
                    after: Self.remembering { try? reader.bundle($0, in: after) })
                return .planned(document)
            }
        }
    }
}

extension Planning {
    static let ownerSetting = "repository"

    /// The agent repository a state directory applied, when one was recorded.
    static func owner(_ state: any StateStore) throws -> RepositoryIdentity? {
        guard let text = try reporting(.stateUnavailable, { try state.setting(ownerSetting) }) else { return nil }
        return try? JSONDecoder().decode(RepositoryIdentity.self, from: Data(text.utf8))
    }

    /// Refuses a repository other than the one the state applied: its agents would be planned as
    /// deleted, or another repository's agents would take over machines of the same names.
    static func checkOwner(_ state: any StateStore, _ identity: RepositoryIdentity) throws {
        guard let owner = try owner(state), owner != identity else { return }
        throw CoreError(
            .stateBelongsElsewhere,
            "the state in \(state.location) belongs to the agent repository \(owner.description), not \(identity.description); use the --state-dir of this repository, or --adopt to move the state to it"
        )
    }

    /// Records the repository the state applied (needs the writer lock).
    static func recordOwner(_ state: any StateStore, _ identity: RepositoryIdentity) throws {
        let text = String(decoding: try JSONEncoder().encode(identity), as: UTF8.self)
        try reporting(.stateUnavailable) { try state.setSetting(ownerSetting, text) }
    }
}

extension Ports {
    /// A reader of the agent repository, with the parse cache (unless it is turned off).
    func reader(_ repository: String, path: String) throws -> any RepositoryReader {
        try reporting(.repositoryUnavailable) {
            try source.reader(repository: repository, path: path, cache: parseCache)
        }
    }
}

/// Nothing applied: the state a first deployment plans against (`plan --empty-state`).
struct NoState: StateStore {
    var exists: Bool { false }
    var location: String { "(no state)" }
    func checkReadable() throws {}
    func agents() throws -> [AgentRecord] { [] }
    func agent(_ name: String) throws -> AgentRecord? { nil }
    func appliedAgents(fields: Bool) throws -> [AppliedAgent] { [] }
    func appliedFields(of names: Set<String>) throws -> [String: String] { [:] }
    func save(_ record: AgentRecord) throws {
        throw CoreError(.internalFailure, "internal: the empty state is not written")
    }
    func removeAgent(_ name: String) throws {
        throw CoreError(.internalFailure, "internal: the empty state is not written")
    }
    func killSwitch(_ name: String) throws -> KillSwitch? { nil }
    func killedAgents() throws -> Set<String> { [] }
    func setKillSwitch(_ name: String, reason: String?, actor: String, at time: Date) throws {}
    func append(_ event: EventRecord) throws {}
    func events(agent: String?, limit: Int) throws -> [EventRecord] { [] }
    func rememberedRepository() -> String? { nil }
    func rememberRepository(_ absolutePath: String) {}
    func setting(_ key: String) throws -> String? { nil }
    func setSetting(_ key: String, _ value: String?) throws {}
    func beginAudit(_ audit: PendingAudit) throws {}
    func saveRunJournal(_ journal: RunJournal) throws {}
    func runJournals() throws -> [RunJournal] { [] }
    func clearRunJournal(agent: String) throws {}
    func appendLiveLog(agent: String, _ bytes: [UInt8]) throws {}
    func resetLiveLog(agent: String, run: String) throws {}
    func liveLog(agent: String, run: String?, from offset: Int) throws -> LiveOutput? { nil }
    func appendAudit(_ id: String, step: String) throws {}
    func pendingAudits() throws -> [PendingAudit] { [] }
    func finishAudit(_ id: String) throws {}
    func lockForWriting() throws -> any StateWriterLock {
        throw CoreError(.internalFailure, "internal: the empty state is not written")
    }
    func withWriterLockIfFree(_ body: () throws -> Void) throws -> Bool { false }
    func withWriterLock<T>(waitingUpTo patience: Duration, _ body: () throws -> T) throws -> T {
        throw CoreError(.internalFailure, "internal: the empty state is not written")
    }
}

/// Which agent repository a command reads, chosen the same way by every command: the flag, then
/// `$AGENTRY_REPO` (with `$AGENTRY_PATH`), then the repository the state directory applied (with its
/// `--path`), then the current folder.
public struct AgentRepository: Sendable, Equatable {
    public var repository: String
    public var path: String
    /// Where the choice came from, for messages: `--repo`, `$AGENTRY_REPO`, `the state`, `.`.
    public var origin: String

    public init(repository: String, path: String, origin: String) {
        self.repository = repository
        self.path = path
        self.origin = origin
    }

    /// `usingState`: whether the state's applied repository is a candidate (commands that read a
    /// state; `validate` and `diff` do not).
    public static func resolve(repo: String?, path: String?, ports: Ports, usingState: Bool = true) -> AgentRepository {
        let variables = ports.host.variables
        let explicitPath = path ?? variables["AGENTRY_PATH"].flatMap { $0.isEmpty ? nil : $0 }
        if let repo { return AgentRepository(repository: repo, path: explicitPath ?? "", origin: "--repo") }
        if let repo = variables["AGENTRY_REPO"], !repo.isEmpty {
            return AgentRepository(repository: repo, path: explicitPath ?? "", origin: "$AGENTRY_REPO")
        }
        if usingState, ports.state.exists, let applied = ports.state.rememberedRepository() {
            let owner = (try? Planning.owner(ports.state)) ?? nil
            return AgentRepository(repository: applied, path: explicitPath ?? owner?.path ?? "", origin: "the state")
        }
        return AgentRepository(repository: ".", path: explicitPath ?? "", origin: ".")
    }
}

extension Planning {
    /// At most this many texts are shown as diffs in one plan, each of at most `largestText` bytes.
    static let mostTextChanges = 50
    static let largestText = 256 << 10

    /// The texts behind changed `instructions` and `skills.*` digests of `plan`'s actions, read
    /// from both sides' bundles; each changed text once, with the agents it affects.
    static func textChanges(
        _ plan: Plan, before: (String) -> AgentBundle?, after: (String) -> AgentBundle?
    ) -> [TextChange] {
        // One group per distinct change (the field and its digests before and after): a skill or an
        // instructions file shared by many agents is read once and shown once.
        var groups: [Change: [String]] = [:]
        var order: [Change] = []
        for action in plan.listed {
            for change in action.reasons where Self.showsText(change) {
                if groups[change] == nil {
                    guard order.count < mostTextChanges else { continue }
                    order.append(change)
                }
                groups[change, default: []].append(action.agent)
            }
        }
        var changes: [TextChange] = []
        for change in order {
            let agents = groups[change] ?? []
            guard let first = agents.first else { continue }
            // A value that is itself a multi-line text (a config file, a script) needs no reading.
            if change.field != "instructions" && !change.field.hasPrefix("skills.") {
                changes.append(
                    TextChange(path: PlanOutput.label(change.field), old: change.old, new: change.new, agents: agents))
                continue
            }
            let old = before(first)
            let new = after(first)
            func note(_ path: String, _ oldBytes: [UInt8]?, _ newBytes: [UInt8]?) {
                guard oldBytes != newBytes else { return }
                changes.append(TextChange(path: path, old: oldBytes.map(text), new: newBytes.map(text), agents: agents))
            }
            if change.field == "instructions" {
                note(instructionsPath(new ?? old), old?.instructions, new?.instructions)
                continue
            }
            let skill = String(change.field.dropFirst("skills.".count))
            let oldFiles = Dictionary(
                (old?.skills.first { $0.name == skill }?.files ?? []).map { ($0.path, $0.bytes) },
                uniquingKeysWith: { a, _ in a })
            let newFiles = Dictionary(
                (new?.skills.first { $0.name == skill }?.files ?? []).map { ($0.path, $0.bytes) },
                uniquingKeysWith: { a, _ in a })
            for file in Set(oldFiles.keys).union(newFiles.keys).sorted() {
                note("skills/\(skill)/\(file)", oldFiles[file], newFiles[file])
            }
        }
        return changes
    }

    /// Whether a change is shown as a diff: texts behind digests (instructions, skills), and values
    /// that are themselves texts of several lines.
    static func showsText(_ change: Change) -> Bool {
        change.field == "instructions" || change.field.hasPrefix("skills.")
            || change.old?.utf8.contains(UInt8(ascii: "\n")) == true
            || change.new?.utf8.contains(UInt8(ascii: "\n")) == true
    }

    /// The texts a plan changes, against the commit each agent was applied at (at most three
    /// applied commits are read; agents applied at others show digests only).
    static func textChangesSinceApplied(
        _ plan: Plan, loaded: LoadedCommit, reader: any RepositoryReader, state: any StateStore
    ) -> [TextChange] {
        let touched = plan.listed.contains { action in action.reasons.contains(where: showsText) }
        guard touched else { return [] }
        var commits: [String: LoadedCommit] = [:]
        return textChanges(
            plan,
            before: remembering { name in
                // Read for the few agents whose texts are shown, not for the whole state.
                guard let commit = (try? state.agent(name))??.appliedCommit, !commit.isEmpty else { return nil }
                if commits[commit] == nil {
                    guard commits.count < 3, let old = try? reader.load(commit, remember: false) else { return nil }
                    commits[commit] = old
                }
                return commits[commit].flatMap { try? reader.bundle(name, in: $0) }
            },
            after: remembering { try? reader.bundle($0, in: loaded) })
    }

    /// `read`, asked once per agent (an agent's instructions and skills changing read its bundle once).
    static func remembering(_ read: @escaping (String) -> AgentBundle?) -> (String) -> AgentBundle? {
        var bundles: [String: AgentBundle?] = [:]
        return { name in
            if let bundle = bundles[name] { return bundle }
            let bundle = read(name)
            bundles[name] = bundle
            return bundle
        }
    }

    /// Where an agent's instructions are: their file (`agents/hello/INSTRUCTIONS.md`), or the agent's
    /// own file for inline ones (`agents/docs-writer.yaml: instructions`).
    static func instructionsPath(_ bundle: AgentBundle?) -> String {
        guard let bundle else { return "instructions" }
        let file = bundle.agent.origin.file
        guard case .file(let relative, _)? = bundle.agent.instructions else { return file + ": instructions" }
        let folder = file.split(separator: "/").dropLast().joined(separator: "/")
        return (folder.isEmpty ? "" : folder + "/")
            + (relative.hasPrefix("./") ? String(relative.dropFirst(2)) : relative)
    }

    /// A text to show: UTF-8 without NUL, of a size worth showing; otherwise a line saying what it is.
    static func text(_ bytes: [UInt8]) -> String {
        guard bytes.count <= largestText, !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) else {
            return "(\(bytes.count) bytes, not shown: \(bytes.count > largestText ? "large" : "binary"))\n"
        }
        return text
    }
}
