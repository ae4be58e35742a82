import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import Foundation

/// What `apply` needs besides the repository.
public struct ApplyOptions: Sendable {
    /// How long a machine may take to report in.
    public var bootTimeout: Duration
    public var actor: String
    public var planOptions: PlanOptions
    /// Start afresh with an empty disk where an existing agent's disk file has gone missing.
    public var recreateMissingDisks: Bool
    /// Carry out only these agents' steps (`agentry run` brings up its own agent); nil: all.
    public var only: Set<String>?
    public var historyBranch: String
    /// At most this many agents' steps at once (a commit that adds 5,000 agents queues their boots).
    public var parallelism: Int
    /// About the number of cores: boots are CPU-bound, more at once only slows each.
    public static let defaultParallelism = max(2, ProcessInfo.processInfo.activeProcessorCount)
    /// Apply although the state belongs to another agent repository, and make it this one's.
    public var adopt: Bool
    /// How long a step waits for a run of its agent in progress before it gives up on that agent.
    public var runWait: Duration = .seconds(15 * 60)

    public init(
        bootTimeout: Duration = .seconds(90), actor: String, planOptions: PlanOptions = PlanOptions(),
        recreateMissingDisks: Bool = false, only: Set<String>? = nil, historyBranch: String = "agentry/history",
        parallelism: Int = ApplyOptions.defaultParallelism, adopt: Bool = false
    ) {
        self.adopt = adopt
        self.bootTimeout = bootTimeout
        self.actor = actor
        self.planOptions = planOptions
        self.recreateMissingDisks = recreateMissingDisks
        self.only = only
        self.historyBranch = historyBranch
        self.parallelism = parallelism
    }
}

/// The outcome of one agent's step.
public struct AppliedStep: Sendable {
    public var agent: String
    public var action: Action
    /// What was done, or why it failed.
    public var detail: String
    public var failed: Bool
    /// Left to another apply that was carrying out the same agent (or had just done so).
    public var skipped: Bool
    /// How long the step took, waiting for the agent included.
    public var duration: Duration = .zero

    public init(agent: String, action: Action, detail: String, failed: Bool, skipped: Bool = false) {
        self.agent = agent
        self.action = action
        self.detail = detail
        self.failed = failed
        self.skipped = skipped
    }
}

/// What an apply says as it goes: the plan once made, then each step as it starts and ends.
public enum ApplyEvent: Sendable {
    case planned(PlanDocument)
    case stepStarted(agent: String, action: Action)
    case stepEnded(AppliedStep)
}

/// `agentry apply`: plans the desired state at a commit (or takes a saved plan, refusing it when
/// its commit or the actual state moved since) and carries the plan out against the machines.
///
/// Every step measures before it acts (a disk that exists is kept, a machine that runs is not
/// started twice), so an apply killed at any point and run again converges, with no duplicate
/// machine and no lost disk. Steps are recorded in the event log as they start and end; agents'
/// steps run in parallel (each in its agent's lane) and one agent's failure does not stop the others.
public struct Apply: Sendable {
    let ports: Ports
    let progress: @Sendable (String) -> Void
    let observe: @Sendable (ApplyEvent) -> Void
    let approve: (@Sendable (PlanDocument) async -> Bool)?

    /// `observe` hears the plan and each step as it starts and ends; `approve`, when given, is asked
    /// once the plan is made (with changes to carry out) and nothing is done unless it says yes.
    public init(
        _ ports: Ports, progress: @escaping @Sendable (String) -> Void = { _ in },
        observe: @escaping @Sendable (ApplyEvent) -> Void = { _ in },
        approve: (@Sendable (PlanDocument) async -> Bool)? = nil
    ) {
        self.ports = ports
        self.progress = progress
        self.observe = observe
        self.approve = approve
    }

    public struct Request: Sendable {
        public var target: Planning.Target
        public var savedPlan: SavedPlan?
        public var options: ApplyOptions

        public init(target: Planning.Target, savedPlan: SavedPlan? = nil, options: ApplyOptions) {
            self.target = target
            self.savedPlan = savedPlan
            self.options = options
        }
    }

    public struct Outcome: Sendable {
        public var plan: Planning.Outcome
        public var steps: [AppliedStep]
        /// The plan was not approved: nothing was carried out.
        public var declined = false
        /// From the start of planning to the end of recording.
        public var duration: Duration = .zero
        /// The commit's `run.schedule`s by agent, when it was read and valid.
        public var schedules: [String: RunSchedule]? = nil
    }

    public func run(_ request: Request) async throws -> Outcome {
        var request = request
        // A saved plan is carried out for the repository, ref and path it was made from.
        if let saved = request.savedPlan {
            request.target = Planning.Target(repository: saved.repository, ref: saved.ref, path: saved.path)
        }
        let started = ContinuousClock.now
        let converged = try await converge(request, holdingLanes: [])
        var outcome = converged.outcome
        outcome.duration = ContinuousClock.now - started
        if let loaded = converged.loaded, loaded.report.isValid {
            outcome.schedules = loaded.desired.schedules
        }
        return outcome
    }

    /// What a converge read: the loaded commit and the bundles of the agents it read for machines.
    struct Converged: Sendable {
        var outcome: Outcome
        var loaded: LoadedCommit?
        var bundles: [String: AgentBundle]
    }

    /// How long an apply waits for another to finish planning or recording (they hold the writer
    /// lock briefly) before it records its own end, and a step before it records what it did.
    static let writerPatience: Duration = .seconds(120)

    /// Applies `request`, agents' steps in parallel (each in its lane). The state's writer lock is
    /// held while planning and while recording, never while waiting on a machine: another apply
    /// (of other agents) goes on beside one whose guest is stuck, and a step that finds its agent
    /// busy with another apply leaves it to that one.
    func converge(_ request: Request, holdingLanes: Set<String>) async throws -> Converged {
        let begun = try await BlockingWork.run {
            let lock = try reporting(.stateUnavailable) { try ports.state.lockForWriting() }
            defer { lock.release() }
            return try begin(request, bundleAlways: [], heldRunLocks: [])
        }
        guard case .ready(let context, let selected, let document) = begun else {
            guard case .done(let converged) = begun else { throw CoreError(.internalFailure, "internal: no apply") }
            return converged
        }
        observe(.planned(document))
        let work = selected.contains { $0.action != .noop }
        if work, let approve, !(await approve(document)) {
            // Declined: the audit journal entry has no step and is dropped as the apply ends.
            var converged = try await BlockingWork.run {
                try end(request, context: context, document: document, steps: [], declined: true)
            }
            converged.outcome.declined = true
            return converged
        }
        let steps = try await runSteps(
            selected, context: context, holdingLanes: holdingLanes, request.options.parallelism)
        return try await BlockingWork.run { try end(request, context: context, document: document, steps: steps) }
    }

    /// The apply of one agent on the calling thread, for a run that applies first: the caller holds
    /// the agent's run lock, and hands in the writer lock, held for planning only.
    func convergeAlone(_ request: Request, agent: String, writer: any StateWriterLock) throws -> Converged {
        let begun: Begun
        do {
            defer { writer.release() }
            begun = try begin(request, bundleAlways: [agent], heldRunLocks: [agent])
        }
        guard case .ready(let context, let selected, let document) = begun else {
            guard case .done(let converged) = begun else { throw CoreError(.internalFailure, "internal: no apply") }
            return converged
        }
        let steps = selected.compactMap { context.step($0) }
        return try end(request, context: context, document: document, steps: steps)
    }

    enum Begun: Sendable {
        /// Nothing to carry out (invalid, refused).
        case done(Converged)
        case ready(StepContext, [PlannedAction], PlanDocument)
    }

    /// Loads and plans under the writer lock, and opens the apply's audit journal.
    func begin(_ request: Request, bundleAlways: Set<String>, heldRunLocks: Set<String>) throws -> Begun {
        var phases = PhaseClock(logger: ports.logger, label: "apply phase")
        guard let prepared = try prepare(request, bundleAlways: bundleAlways) else {
            throw CoreError(.internalFailure, "internal: apply prepared nothing")
        }
        guard case .planned(let document) = prepared.outcome, let loaded = prepared.loaded else {
            return .done(
                Converged(outcome: Outcome(plan: prepared.outcome, steps: []), loaded: prepared.loaded, bundles: [:]))
        }
        phases.mark("load and plan")
        let plan = document.plan
        let selected = plan.actions.filter { request.options.only?.contains($0.agent) ?? true }
        let repository = request.savedPlan?.repository ?? request.target.repository
        // The audit record is journalled step by step in the state, so an apply killed half-way
        // still leaves one for every step it carried out (the next apply commits it).
        let audit = PendingAudit(
            id: RunID.make(ports.clock.now()), desiredCommit: loaded.commit,
            ref: request.savedPlan?.ref ?? request.target.ref, summary: PlanOutput.summary(plan),
            actor: request.options.actor, repository: ports.host.absolute(repository),
            branch: request.options.historyBranch, startedAt: ports.clock.now(), pid: ports.host.processID,
            host: ports.host.hostName)
        commitPendingAudits()
        try reporting(.stateUnavailable) { try ports.state.beginAudit(audit) }
        let context = StepContext(
            ports: ports, options: request.options, loaded: loaded, fields: prepared.fields,
            bundles: prepared.bundles, records: prepared.records, killed: prepared.killed, auditID: audit.id,
            heldRunLocks: heldRunLocks, historyRepository: repository, progress: progress)
        return .ready(context, selected, document)
    }

    /// The apply's event, its audit record in history.
    func end(
        _ request: Request, context: StepContext, document: PlanDocument, steps: [AppliedStep], declined: Bool = false
    ) throws -> Converged {
        // Under the writer lock, taken briefly here (waiting while another apply plans or records).
        try reporting(.stateUnavailable) {
            try ports.state.withWriterLock(waitingUpTo: Self.writerPatience) {
                if !declined { try finish(request, plan: document.plan, loaded: context.loaded, steps: steps) }
                commitPendingAudits(current: context.auditID)
            }
        }
        return Converged(
            outcome: Outcome(plan: .planned(document), steps: steps), loaded: context.loaded, bundles: context.bundles)
    }

    struct Prepared: Sendable {
        var outcome: Planning.Outcome
        var loaded: LoadedCommit?
        var fields: [String: Fields] = [:]
        var bundles: [String: AgentBundle] = [:]
        var records: [String: AgentRecord] = [:]
        var killed: Set<String> = []
    }

    /// Loads and plans (refusing a stale saved plan), and reads what the steps will need from git.
    func prepare(_ request: Request, bundleAlways: Set<String>) throws -> Prepared? {
        let saved = request.savedPlan
        let target =
            saved.map { Planning.Target(repository: $0.repository, ref: $0.ref, path: $0.path) } ?? request.target
        let reader = try ports.reader(target.repository, path: target.path)
        if !request.options.adopt { try Planning.checkOwner(ports.state, reader.identity) }
        try Planning.recordOwner(ports.state, reader.identity)
        if let saved {
            let now = try reporting(.repositoryUnavailable) { try reader.commit(for: saved.ref) }
            guard now == saved.commit || saved.ref == saved.commit else {
                throw CoreError(
                    .planStale,
                    "the saved plan is for \(saved.commit.prefix(12)), but \(saved.ref) is now \(now.prefix(12)); plan again"
                )
            }
        }
        let loaded = try reporting(.repositoryUnavailable) { try reader.load(saved?.commit ?? request.target.ref) }
        guard loaded.report.isValid else { return Prepared(outcome: .invalid(loaded.report), loaded: loaded) }
        let outcome = try Planning.plan(
            loaded, reader: reader, state: ports.state, machines: ports.machines, options: request.options.planOptions,
            target: request.target,
            checkActual: { digest in
                if let saved, saved.actualDigest != digest {
                    throw CoreError(
                        .planStale,
                        "the actual state changed since the plan was made (another apply, a kill, a drift); plan again")
                }
            })
        guard case .planned(let document) = outcome else { return Prepared(outcome: outcome, loaded: loaded) }
        // A saved plan is carried out only if it is exactly what planning its commit gives now.
        if let saved {
            let differences = saved.differences(from: document.plan)
            guard differences.isEmpty else {
                throw CoreError(
                    .planStale,
                    "the saved plan is not what planning \(saved.commit.prefix(12)) gives now (changed since, or edited):\n  "
                        + differences.prefix(20).joined(separator: "\n  ") + "\nplan again")
            }
        }
        let only = request.options.only
        let selected = document.plan.actions.filter { only?.contains($0.agent) ?? true }
        let needFields = Set(selected.filter { $0.action != .delete }.map(\.agent))
        let fields = try reporting(.repositoryUnavailable) { try reader.resolvedFields(of: needFields, in: loaded) }
        // The bundles of agents whose machine may start or take configuration.
        var bundles: [String: AgentBundle] = [:]
        for planned in selected {
            let name = planned.agent
            guard let wanted = loaded.desired.agents[name], wanted.lifecycle == .active, planned.action != .delete
            else { continue }
            guard bundleAlways.contains(name) || planned.action != .noop || !ports.machines.isRunning(name) else {
                continue
            }
            bundles[name] = try reporting(.repositoryUnavailable) { try reader.bundle(name, in: loaded) }
        }
        for name in bundleAlways where bundles[name] == nil && loaded.desired.agents[name] != nil {
            bundles[name] = try reporting(.repositoryUnavailable) { try reader.bundle(name, in: loaded) }
        }
        let (records, killed) = try reporting(.stateUnavailable) {
            (
                Dictionary(try ports.state.agents().map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }),
                try ports.state.killedAgents()
            )
        }
        return Prepared(
            outcome: outcome, loaded: loaded, fields: fields, bundles: bundles, records: records, killed: killed)
    }

    /// Each selected agent's step in its lane, at most `parallelism` at once; results in plan order.
    func runSteps(_ selected: [PlannedAction], context: StepContext, holdingLanes: Set<String>, _ parallelism: Int)
        async throws -> [AppliedStep]
    {
        let lanes = ports.lanes
        return try await withThrowingTaskGroup(of: (Int, AppliedStep?).self) { group in
            var results: [Int: AppliedStep] = [:]
            var running = 0
            for (index, planned) in selected.enumerated() {
                if running >= max(1, parallelism), let (done, step) = try await group.next() {
                    running -= 1
                    results[done] = step
                }
                running += 1
                let observe = observe
                group.addTask {
                    let body: @Sendable () async throws -> AppliedStep? = {
                        if planned.action != .noop {
                            observe(.stepStarted(agent: planned.agent, action: planned.action))
                        }
                        let started = ContinuousClock.now
                        var step = await BlockingWork.run { context.step(planned) }
                        step?.duration = ContinuousClock.now - started
                        if let step { observe(.stepEnded(step)) }
                        return step
                    }
                    let step =
                        holdingLanes.contains(planned.agent)
                        ? try await body() : try await lanes.withLane(planned.agent, body)
                    return (index, step)
                }
            }
            for try await (index, step) in group { results[index] = step }
            return selected.indices.compactMap { results[$0] ?? nil }
        }
    }

    /// The apply's event and its audit record in history.
    func finish(_ request: Request, plan: Plan, loaded: LoadedCommit, steps: [AppliedStep]) throws {
        let state = ports.state
        let repository = request.savedPlan?.repository ?? request.target.repository
        if plan.hasChanges || !steps.isEmpty {
            let failures = steps.contains(where: \.failed) ? " (with failures)" : ""
            try reporting(.stateUnavailable) {
                try state.append(
                    EventRecord(
                        time: ports.clock.now(), agent: nil, kind: "apply", actor: request.options.actor,
                        message: "applied \(loaded.commit.prefix(12)): \(PlanOutput.summary(plan))\(failures)"))
            }
        }
        state.rememberRepository(ports.host.absolute(repository))
    }

    /// Commits the journalled audit records to history: this apply's, and any an earlier apply
    /// left when it was killed (marked interrupted). A record that cannot be committed stays
    /// journalled for the next apply; one with no step carried out is dropped.
    func commitPendingAudits(current: String? = nil) {
        guard let pending = try? ports.state.pendingAudits() else { return }
        // Another apply still going (it records its own at its end) is left alone.
        for audit in pending where audit.id == current || !audit.live {
            guard !audit.steps.isEmpty else {
                try? ports.state.finishAudit(audit.id)
                continue
            }
            var fields = [("desiredCommit", audit.desiredCommit), ("ref", audit.ref), ("summary", audit.summary)]
            if audit.id != current { fields.append(("interrupted", "the apply stopped before it finished")) }
            let record = AuditRecord(
                kind: "apply", subject: String(audit.desiredCommit.prefix(12)), fields: fields,
                lists: [("actions", audit.steps)], actor: audit.actor, host: ports.host.hostName, at: audit.startedAt)
            do {
                let committed = try HistoryQueries(ports).commit(
                    record, in: HistoryLocation(repository: audit.repository, branch: audit.branch))
                try ports.state.finishAudit(audit.id)
                if let warning = committed.pushWarning { progress("warning: \(warning)") }
            } catch {
                progress("warning: \(describe(error)); the apply's audit record is kept for the next apply")
            }
        }
    }
}
