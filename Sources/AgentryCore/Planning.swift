import AgentryBasics
import AgentryModel
import AgentryPlan
import Foundation

/// Plans and diffs: the desired state from git against the actual state (or another commit).
public struct Planning: Sendable {
    public enum Outcome: Sendable {
        /// The repository failed validation: nothing is planned.
        case invalid(ValidationReport)
        /// The planner refused (an empty desired state, a mass delete).
        case refused(PlanRefusal)
        case planned(PlanDocument)
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

    /// `agentry plan`: the desired state at `target` against the actual state.
    public func plan(_ target: Target, options: PlanOptions) async throws -> Outcome {
        let ports = ports
        return try await BlockingWork.run {
            let reader = try ports.reader(target.repository, path: target.path)
            let loaded = try reporting(.repositoryUnavailable) { try reader.load(target.ref) }
            guard loaded.report.isValid else { return .invalid(loaded.report) }
            return try Self.plan(
                loaded, reader: reader, state: ports.state, machines: ports.machines, options: options, target: target)
        }
    }

    /// Plans a loaded, valid commit against the actual state in `state`; `checkActual` may refuse
    /// that state first (a saved plan gone stale).
    static func plan(
        _ loaded: LoadedCommit, reader: any RepositoryReader, state: any StateStore, machines: any MachineBackend,
        options: PlanOptions, target: Target,
        checkActual: (ActualState) throws -> Void = { _ in }
    ) throws -> Outcome {
        let desired = loaded.desired
        let actual = try actualState(state, machines: machines) { name, revision, lifecycle in
            guard let wanted = desired.agents[name] else { return false }
            return wanted.revision != revision || wanted.lifecycle.rawValue != lifecycle
        }
        try checkActual(actual)
        // Full fields (parsing the files involved) only for agents that exist and changed.
        let changed = Set(
            desired.agents.values.filter { wanted in
                guard let existing = actual.agents[wanted.name] else { return false }
                return existing.appliedRevision != wanted.revision || existing.lifecycle != wanted.lifecycle
            }.map(\.name))
        let fields = try reporting(.repositoryUnavailable) { try reader.resolvedFields(of: changed, in: loaded) }
        switch Planner.plan(desired: desired, actual: actual, options: options, fields: { fields[$0.name] }) {
        case .failure(let refusal):
            return .refused(refusal)
        case .success(let plan):
            return .planned(
                PlanDocument(
                    kind: .plan, plan: plan, commit: loaded.commit, repository: target.repository, ref: target.ref,
                    path: target.path, actualDigest: actual.digest))
        }
    }

    /// The actual state: what the state database says was applied, each machine measured (a
    /// machine that died, is still starting or runs with other resources is drift), and the kill
    /// switch. Applied fields are decoded only for the agents `needingFields` says, and for
    /// running machines (whose resources are compared with them).
    static func actualState(
        _ state: any StateStore, machines: any MachineBackend,
        needingFields: (_ name: String, _ revision: String, _ lifecycle: String) -> Bool = { _, _, _ in true }
    ) throws -> ActualState {
        guard state.exists else { return ActualState() }
        let (rows, kills) = try reporting(.stateUnavailable) {
            let rows = try state.appliedAgents()
            var kills: [String: KillSwitch] = [:]
            for name in try state.killedAgents() { kills[name] = try state.killSwitch(name) }
            return (rows, kills)
        }
        var agents: [String: ActualAgent] = [:]
        for row in rows {
            let fields =
                needingFields(row.name, row.revision, row.lifecycle) ? AgentRecord.decodeFields(row.fieldsJSON) : []
            let status = HealthCheck.status(
                record: row, killed: kills[row.name], observation: machines.observe(row.name))
            agents[row.name] = ActualAgent(
                name: row.name, appliedRevision: row.revision,
                appliedFields: Dictionary(fields, uniquingKeysWith: { a, _ in a }),
                lifecycle: Lifecycle(rawValue: row.lifecycle) ?? .active,
                deletionPolicy: DeletionPolicy(rawValue: row.deletionPolicy) ?? .retain,
                machineState: row.machineState, health: status.health,
                killed: kills[row.name].map { KillNotice(reason: $0.reason, actor: $0.actor) })
        }
        return ActualState(agents: agents)
    }

    /// `agentry diff BASE HEAD`: what merging HEAD would do, from the two commits alone.
    /// `useCache`: remember parse results in the state (when a state directory was given).
    public func diff(repository: String, base: String, head: String, path: String, useCache: Bool) async throws
        -> Outcome
    {
        let ports = ports
        return try await BlockingWork.run {
            let reader = try ports.reader(repository, path: path, cache: useCache)
            let (before, after) = try reporting(.repositoryUnavailable) {
                (try reader.load(base, remember: false), try reader.load(head))
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
                return .planned(
                    PlanDocument(
                        kind: .diff, plan: plan, commit: after.commit, baseCommit: before.commit,
                        repository: repository,
                        ref: head, path: path))
            }
        }
    }
}

extension Ports {
    /// A reader of the agent repository, with the parse cache unless `cache` is false.
    func reader(_ repository: String, path: String, cache: Bool = true) throws -> any RepositoryReader {
        try reporting(.repositoryUnavailable) {
            try source.reader(repository: repository, path: path, cache: cache ? parseCache : nil)
        }
    }
}
