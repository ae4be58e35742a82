import AgentryModel
import AgentryPlan
import AgentryState
import Logging

/// Plans and diffs: the desired state from git against the actual state (or another commit).
public enum Planning {
    public enum Outcome: Sendable {
        /// The repository failed validation: nothing is planned.
        case invalid(ValidationReport)
        /// The planner refused (an empty desired state, a mass delete).
        case refused(PlanRefusal)
        case planned(PlanDocument)
    }

    /// The actual state recorded in the state database (empty when there is none yet). Applied
    /// fields are decoded only for the agents `needingFields` says (the others' are not read).
    public static func actualState(
        _ store: StateStore?, needingFields: (_ name: String, _ revision: String, _ lifecycle: String) -> Bool = { _, _, _ in true }
    ) throws -> ActualState {
        guard let store else { return ActualState() }
        var agents: [String: ActualAgent] = [:]
        for row in try store.appliedAgents() {
            let fields = needingFields(row.name, row.revision, row.lifecycle) ? AgentRecord.decodeFields(row.fieldsJSON) : []
            agents[row.name] = ActualAgent(
                name: row.name, appliedRevision: row.revision,
                appliedFields: Dictionary(fields, uniquingKeysWith: { a, _ in a }),
                lifecycle: Lifecycle(rawValue: row.lifecycle) ?? .active,
                deletionPolicy: DeletionPolicy(rawValue: row.deletionPolicy) ?? .retain,
                machineState: row.machineState)
        }
        return ActualState(agents: agents)
    }

    /// Opens the state store for reading, or nil when it does not exist yet.
    public static func openStore(_ directory: String) throws -> StateStore? {
        do {
            return try StateStore.openForReading(directory)
        } catch let error as StateError {
            throw LoadError(error.message)
        }
    }

    /// Opens the state store, creating it so the parse cache has a home; falls back to no store when
    /// the directory cannot be created (the plan is still right, only slower next time).
    static func openCachingStore(_ directory: String, logger: Logger) throws -> StateStore? {
        do {
            return try StateStore.openCreating(directory)
        } catch let error as StateError {
            if case .io = error.code {
                logger.info("no parse cache: \(error.message)")
                return nil
            }
            throw LoadError(error.message)
        }
    }

    /// `agentry plan`: the desired state at `ref` against the actual state in `stateDirectory`.
    public static func plan(
        repository: String, ref: String, path: String, stateDirectory: String, options: PlanOptions, logger: Logger
    ) throws -> Outcome {
        let store = try openCachingStore(stateDirectory, logger: logger)
        let reader = try CommitReader(repository: repository, path: path, store: store, logger: logger)
        let loaded = try reader.load(ref)
        guard loaded.report.isValid else { return .invalid(loaded.report) }
        return try plan(loaded, reader: reader, store: store, options: options, repository: repository, ref: ref, path: path)
    }

    /// Plans a loaded, valid commit against the actual state in `store`; `checkActual` may refuse
    /// that state first (a saved plan gone stale).
    static func plan(
        _ loaded: LoadedCommit, reader: CommitReader, store: StateStore?, options: PlanOptions, repository: String,
        ref: String, path: String, checkActual: (ActualState) throws -> Void = { _ in }
    ) throws -> Outcome {
        let desired = loaded.desired
        let actual = try actualState(store) { name, revision, lifecycle in
            guard let wanted = desired.agents[name] else { return false }
            return wanted.revision != revision || wanted.lifecycle.rawValue != lifecycle
        }
        try checkActual(actual)
        // Full fields (parsing the files involved) only for agents that exist and changed.
        let changed = Set(desired.agents.values.filter { wanted in
            guard let existing = actual.agents[wanted.name] else { return false }
            return existing.appliedRevision != wanted.revision || existing.lifecycle != wanted.lifecycle
        }.map(\.name))
        let fields = try reader.resolvedFields(of: changed, in: loaded)
        switch Planner.plan(desired: desired, actual: actual, options: options, fields: { fields[$0.name] }) {
        case .failure(let refusal):
            return .refused(refusal)
        case .success(let plan):
            return .planned(
                PlanDocument(
                    kind: .plan, plan: plan, commit: loaded.commit, repository: repository, ref: ref, path: path,
                    actualDigest: actual.digest))
        }
    }

    /// `agentry diff BASE HEAD`: what merging HEAD would do, from the two commits alone.
    public static func diff(
        repository: String, base: String, head: String, path: String, stateDirectory: String?, logger: Logger
    ) throws -> Outcome {
        let store = try stateDirectory.flatMap { try openCachingStore($0, logger: logger) }
        let reader = try CommitReader(repository: repository, path: path, store: store, logger: logger)
        let before = try reader.load(base, remember: false)
        let after = try reader.load(head)
        guard after.report.isValid else { return .invalid(after.report) }
        let old = before.desired
        let new = after.desired
        let changed = Set(new.agents.values.filter { old.agents[$0.name] != nil && $0 != old.agents[$0.name] }.map(\.name))
        let oldFields = try reader.resolvedFields(of: changed, in: before)
        let newFields = try reader.resolvedFields(of: changed, in: after)
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
            return .planned(
                PlanDocument(
                    kind: .diff, plan: plan, commit: after.commit, baseCommit: before.commit, repository: repository,
                    ref: head, path: path))
        }
    }
}

extension Planning {
    /// Records agents as applied at `ref`: their revision, resolved fields and lifecycle, as `apply`
    /// does once their machines converge. Machine columns are left as they were.
    public static func recordApplied(
        _ names: Set<String>? = nil, repository: String, ref: String, path: String, store: StateStore, logger: Logger
    ) throws {
        let reader = try CommitReader(repository: repository, path: path, store: store, logger: logger)
        let loaded = try reader.load(ref)
        guard loaded.report.isValid else { throw LoadError("the repository at \(ref) is invalid") }
        let desired = loaded.desired
        let wanted = names ?? Set(desired.agents.keys)
        let fields = try reader.resolvedFields(of: wanted, in: loaded)
        for name in wanted.sorted() {
            guard let agent = desired.agents[name] else { continue }
            let existing = try store.agent(name)
            try store.save(
                AgentRecord(
                    name: name, appliedRevision: agent.revision, appliedFields: fields[name] ?? [],
                    appliedCommit: loaded.commit, lifecycle: agent.lifecycle.rawValue,
                    deletionPolicy: agent.deletionPolicy.rawValue, machineID: existing?.machineID,
                    machineState: existing?.machineState, accelerator: existing?.accelerator,
                    lastRunAt: existing?.lastRunAt))
        }
    }
}
