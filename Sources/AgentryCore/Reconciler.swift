import AgentryBasics
import AgentryPlan
import Foundation
import Logging

/// One condition of an agent, in the Flux style: `Ready`, `Reconciling` or `Stalled`, true or
/// false, with why, at which commit, since when.
public struct AgentCondition: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case ready = "Ready", reconciling = "Reconciling", stalled = "Stalled"

        /// Where conditions of this kind come in a list.
        public static func order(_ kind: Kind) -> Int { allCases.firstIndex(of: kind) ?? allCases.count }
    }

    public var kind: Kind
    public var status: Bool
    public var reason: String
    public var message: String
    public var observedCommit: String?
    public var since: Date

    public init(kind: Kind, status: Bool, reason: String, message: String, observedCommit: String?, since: Date) {
        self.kind = kind
        self.status = status
        self.reason = reason
        self.message = message
        self.observedCommit = observedCommit
        self.since = since
    }
}

/// The service's reconcile loop, level-triggered: every `interval` (and whenever asked), apply the
/// repository at `ref` with the same safety as `agentry apply` (an invalid commit or a refused plan
/// applies nothing and says so in every agent's conditions), which also re-measures every machine
/// and repairs drift. An agent whose step keeps failing waits longer each time (1, 2, 4 ... up to
/// 32 intervals) before it is tried again, while the others carry on.
public actor Reconciler {
    public struct Settings: Sendable {
        public var target: Planning.Target
        public var interval: Duration
        public var historyBranch: String
        public var parallelism: Int
        /// The remote branch fetched into `target.repository` (its mirror) at the start of each
        /// pass; nil when the target is a local repository, read as it is.
        public var upstream: Upstream?
        /// How long a pass waits for its fetch; one still going then is left to end on its own, and
        /// the pass goes on from the mirror as it is.
        public var fetchPatience: Duration

        public init(
            target: Planning.Target, interval: Duration, historyBranch: String, parallelism: Int,
            upstream: Upstream? = nil, fetchPatience: Duration = .seconds(60)
        ) {
            self.target = target
            self.interval = interval
            self.historyBranch = historyBranch
            self.parallelism = parallelism
            self.upstream = upstream
            self.fetchPatience = fetchPatience
        }
    }

    /// The remote repository as last fetched (`GET /v1/reconcile`'s `source`).
    public struct SourceStatus: Sendable {
        public var upstream: Upstream
        /// The branch's commit at the last fetch that worked (nil: none yet).
        public var commit: String?
        public var fetchedAt: Date?
        public var attemptedAt: Date?
        /// Why the last attempt failed (nil: it worked, or none was made yet).
        public var error: String?
        /// Since when a fetch is under way, when one is.
        public var fetchingSince: Date?
    }

    /// What the last pass did.
    public struct Pass: Sendable {
        public var startedAt: Date
        public var duration: Duration
        public var commit: String?
        /// `applied`, `noChanges`, `partlyFailed`, `invalid`, `refused`, `failed`.
        public var result: String
        public var message: String
    }

    struct Backoff {
        var failures: Int
        var notBefore: ContinuousClock.Instant
    }

    let ports: Ports
    let settings: Settings
    /// Told each valid commit's schedules.
    let scheduler: Scheduler?
    /// Where suspensions are kept (none without one).
    let store: (any ServiceStore)?
    /// Told each agent that turns `Stalled` (webhooks out), after the pass.
    let onStalled: (@Sendable (String, AgentCondition) async -> Void)?
    var newlyStalled: [(String, AgentCondition)] = []
    var conditions: [String: [AgentCondition]] = [:]
    /// The conditions as the store holds them (those read at the start, then those last saved).
    var saved: [String: [AgentCondition]] = [:]
    var conditionsLoaded = false
    /// A compaction of the history repository is under way.
    var compacting = false
    var backoff: [String: Backoff] = [:]
    /// The agents the last plan named (so that agents new in the repository are never left out).
    var desired: Set<String> = []
    public private(set) var lastPass: Pass?
    public private(set) var passes = 0
    /// Nil without an upstream.
    public private(set) var source: SourceStatus?
    /// Whether the mirror has a commit to read (fetched now, or by an earlier service).
    var mirrorReady: Bool
    /// Why this pass's fetch did not bring the branch's commit (said in the pass's message).
    var unfetched: String?
    /// Fetches started; each knows its number, so that a late end is recorded once, as its own.
    var fetches = 0
    /// The fetch a pass stopped waiting for, if any.
    var abandonedFetch: Int?
    var wake: AsyncStream<Void>.Continuation?
    var logger: Logger { ports.logger }

    public init(
        ports: Ports, settings: Settings, scheduler: Scheduler? = nil, store: (any ServiceStore)? = nil,
        onStalled: (@Sendable (String, AgentCondition) async -> Void)? = nil
    ) {
        self.ports = ports
        self.settings = settings
        self.scheduler = scheduler
        self.store = store
        self.onStalled = onStalled
        self.source = settings.upstream.map { SourceStatus(upstream: $0) }
        // The mirror is made by the first fetch that works (never half made): there or not.
        self.mirrorReady =
            settings.upstream == nil || FileManager.default.fileExists(atPath: settings.target.repository)
    }

    /// Why the service cannot serve its agents yet (nil: it can): a remote never fetched. (Short:
    /// `/readyz` says it to anyone; the fetch's error is in `source`.)
    public var notReady: String? {
        guard !mirrorReady, let source else { return nil }
        if source.fetchingSince != nil && source.error == nil { return "the repository's first fetch is under way" }
        if source.attemptedAt == nil {
            return "the repository has not been fetched yet (the service is suspended, or its first pass is to come)"
        }
        return "the repository could not be fetched yet; GET /v1/reconcile (or the service's log) says why"
    }

    /// Fetches the upstream branch into the mirror (nothing without one), waiting at most
    /// `fetchPatience`. A fetch that takes longer goes on by itself and is recorded when it ends;
    /// no second one starts meanwhile. Returns why the fetch did not bring the branch's commit, or
    /// nil when it did.
    func fetchUpstream() async -> String? {
        guard var status = source else { return nil }
        if let since = status.fetchingSince {
            return "the fetch started at \(Timestamp.rfc3339(since.timeIntervalSince1970)) has not ended"
        }
        let started = ports.clock.now()
        status.fetchingSince = started
        status.attemptedAt = started
        source = status
        fetches += 1
        let fetch = fetches
        let ports = self.ports
        let mirror = settings.target.repository
        let upstream = status.upstream
        let result = await BlockingWork.run(waitingAtMost: settings.fetchPatience) {
            let result = Result { try ports.source.fetch(upstream, into: mirror) }
            Task { await self.fetched(result, fetch: fetch) }
            return result
        }
        guard let result else {
            abandonedFetch = fetch
            ServiceMetrics.fetched("timedOut")
            logger.warning("the fetch is still waiting on the remote", metadata: ["url": "\(upstream.url)"])
            return
                "the fetch did not end within \(DurationText.format(milliseconds: UInt64(settings.fetchPatience / .milliseconds(1))))"
        }
        fetched(result, fetch: fetch)
        return source?.error
    }

    /// Records the end of fetch number `fetch` (once, whether the pass waited for it or not).
    func fetched(_ result: Result<String, any Error>, fetch: Int) {
        guard fetch == fetches, var status = source, status.fetchingSince != nil else { return }
        status.fetchingSince = nil
        switch result {
        case .success(let commit):
            if status.commit != commit {
                logger.info("fetched", metadata: ["url": "\(status.upstream.url)", "commit": "\(commit)"])
                // A fetch that ended after its pass went on brought what that pass wanted: a pass now.
                if abandonedFetch == fetch { trigger() }
            }
            status.commit = commit
            status.fetchedAt = ports.clock.now()
            status.error = nil
            mirrorReady = true
            ServiceMetrics.fetched("succeeded")
        case .failure(let error):
            status.error = (error as? any AgentryFailure)?.description ?? "\(error)"
            logger.error("cannot fetch", metadata: ["url": "\(status.upstream.url)", "error": "\(error)"])
            ServiceMetrics.fetched("failed")
        }
        source = status
    }

    /// The agents with conditions, and those the state has applied.
    var known: Set<String> {
        Set(conditions.keys).union((try? ports.state.agents().map(\.name)) ?? [])
    }

    /// The agent's conditions (none before the first pass that saw it).
    public func conditions(of agent: String) -> [AgentCondition] { conditions[agent] ?? [] }

    /// Reconciles now (at the end of a pass under way, once); agents waiting after failures are
    /// tried again too, or only `agent` when one is named (a token for one agent asks for no more).
    public func trigger(agent: String? = nil) {
        if let agent { backoff[agent] = nil } else { backoff.removeAll() }
        wake?.yield()
    }

    /// The schedules of the repository's HEAD, read without applying anything: a service that
    /// passes only when asked still fires them from its start.
    public func loadSchedules() async {
        guard let scheduler else { return }
        let target = settings.target
        let ports = self.ports
        do {
            let loaded = try await BlockingWork.run {
                try ports.reader(target.repository, path: target.path).load(target.ref)
            }
            guard loaded.report.isValid else { return }
            await scheduler.update(loaded.desired.schedules)
        } catch {
            logger.warning("cannot read the schedules before the first pass", metadata: ["error": "\(error)"])
        }
    }

    /// Passes until the task is cancelled: at once when `passingFirst` (then every interval),
    /// otherwise only when asked (the schedules are read at once all the same).
    public func run(passingFirst: Bool) async {
        var signal = WakeSignal()
        wake = signal.continuation
        await loadConditions()
        if !passingFirst {
            _ = await fetchUpstream()
            await loadSchedules()
            await signal.wait(for: nil)
        }
        while !Task.isCancelled {
            await pass()
            // The next pass: after the interval, or as soon as someone asks.
            await signal.wait(for: passingFirst ? settings.interval : nil)
        }
    }

    /// One pass: plan and apply; conditions from what happened; agents that turned `Stalled` told,
    /// then the conditions stored (told first: after a crash in between, an agent is told again
    /// rather than never).
    public func pass() async {
        await loadConditions()
        await carryOut()
        let stalled = newlyStalled
        newlyStalled = []
        for (name, condition) in stalled { await onStalled?(name, condition) }
        await saveConditions()
        compactHistory()
    }

    /// The history repository's packs made one when there are too many (a fetch adds one, and
    /// records a pack every few thousand objects), in the background without holding up the loop,
    /// one at a time.
    func compactHistory() {
        guard !compacting, mirrorReady else { return }
        compacting = true
        let history = ports.history
        let location = HistoryLocation(repository: settings.target.repository, branch: settings.historyBranch)
        let logger = self.logger
        Task {
            do {
                let compacted = try await BlockingWork.$inBackground.withValue(true) {
                    try await BlockingWork.run { try history.compact(in: location) }
                }
                if compacted {
                    logger.info("history packs made one", metadata: ["repository": "\(location.repository)"])
                }
            } catch {
                logger.warning("cannot pack the history repository", metadata: ["error": "\(error)"])
            }
            self.compactingEnded()
        }
    }

    func compactingEnded() { compacting = false }

    /// The conditions the last service left (once read; those of agents no plan names any more go
    /// at the first pass that plans).
    func loadConditions() async {
        guard !conditionsLoaded, let store else { return }
        do {
            let stored = try await BlockingWork.run { try store.conditions() }
            conditionsLoaded = true
            saved = stored
            for (name, list) in stored where conditions[name] == nil { conditions[name] = list }
        } catch {
            logger.error("cannot read the agents' conditions", metadata: ["error": "\(error)"])
        }
    }

    /// Writes the conditions that changed since they were last written.
    func saveConditions() async {
        guard let store else { return }
        var changed: [String: [AgentCondition]] = [:]
        for name in Set(conditions.keys).union(saved.keys) where conditions[name] != saved[name] {
            changed[name] = conditions[name] ?? []
        }
        guard !changed.isEmpty else { return }
        let writing = changed
        do {
            try await BlockingWork.run { try store.saveConditions(writing) }
            for (name, list) in changed { saved[name] = list.isEmpty ? nil : list }
        } catch {
            logger.error("cannot record the agents' conditions", metadata: ["error": "\(error)"])
        }
    }

    func carryOut() async {
        let started = ports.clock.now()
        let clock = ContinuousClock()
        let began = clock.now
        passes += 1
        var options = ApplyOptions(
            actor: "agentry serve", historyBranch: settings.historyBranch, parallelism: settings.parallelism)
        let suspensions: [Suspension]
        do { suspensions = try store?.suspensions() ?? [] } catch {
            logger.error("cannot read the suspensions", metadata: ["error": "\(error)"])
            finish(
                result: "failed", message: "the service's database cannot be read", commit: nil, began: began,
                at: started)
            return
        }
        if let all = suspensions.first(where: { $0.agent == nil }) {
            let message = "the service is suspended (by \(all.actor): \(all.reason)); nothing is reconciled"
            for name in known {
                set(name, .reconciling, false, "Suspended", message, commit: nil, at: started)
            }
            finish(result: "suspended", message: message, commit: nil, began: began, at: started)
            return
        }
        // The remote first; a failed fetch leaves the mirror as it was, and the pass goes on from it.
        unfetched = await fetchUpstream()
        guard mirrorReady else {
            let message = "nothing to reconcile: the repository was never fetched: \(unfetched ?? "no fetch ended")"
            finish(result: "fetchFailed", message: message, commit: nil, began: began, at: started)
            return
        }
        let suspended = Dictionary(
            suspensions.compactMap { s in s.agent.map { ($0, s) } }, uniquingKeysWith: { a, _ in a })
        let resting = backoff.filter { $0.value.notBefore > began }.map(\.key) + suspended.keys
        if !resting.isEmpty {
            // Everyone else: the agents of the repository and of the state, less those resting.
            options.only = desired.union(known).subtracting(resting)
        }
        for name in conditions.keys where !resting.contains(name) {
            set(name, .reconciling, true, "Progressing", "reconciling", commit: nil, at: started)
        }
        for (name, suspension) in suspended {
            set(
                name, .reconciling, false, "Suspended",
                "suspended by \(suspension.actor): \(suspension.reason); the loop leaves it as it is", commit: nil,
                at: started)
        }
        do {
            let outcome = try await Apply(ports).run(.init(target: settings.target, options: options))
            record(outcome, at: started, selected: options.only, suspended: Set(suspended.keys))
            if let schedules = outcome.schedules { await scheduler?.update(schedules) }
        } catch {
            let message = (error as? CoreError)?.message ?? "the pass failed; the service's log says why"
            if !(error is CoreError) { logger.error("reconcile failed", metadata: ["error": "\(error)"]) }
            finish(result: "failed", message: message, commit: nil, began: began, at: started)
            for name in conditions.keys {
                stall(name, reason: "ReconcileFailed", message: message, commit: nil, at: started)
            }
        }
    }

    /// `selected`: the agents this pass was to carry out (nil: all); `suspended` ones are left alone.
    func record(_ outcome: Apply.Outcome, at started: Date, selected: Set<String>?, suspended: Set<String> = []) {
        let began = ContinuousClock.now - outcome.duration
        switch outcome.plan {
        case .invalid(let report):
            let errors = report.diagnostics.filter { $0.severity == .error }
            let message =
                "the repository is invalid, nothing was applied: "
                + errors.prefix(3).map { "\($0.file):\($0.mark.line):\($0.mark.column): \($0.message)" }
                .joined(separator: "; ")
            for name in known {
                stall(name, reason: "ValidationFailed", message: message, commit: nil, at: started)
            }
            finish(result: "invalid", message: message, commit: nil, began: began, at: started)
        case .refused(let refusal):
            let message = "the plan was refused, nothing was applied: \(refusal)"
            for name in known {
                stall(name, reason: "PlanRefused", message: message, commit: nil, at: started)
            }
            finish(result: "refused", message: message, commit: nil, began: began, at: started)
        case .planned(let document):
            let commit = document.commit
            let steps = Dictionary(outcome.steps.map { ($0.agent, $0) }, uniquingKeysWith: { $1 })
            desired = Set(document.plan.actions.filter { $0.action != .delete }.map(\.agent))
            var failed = 0
            for action in document.plan.actions {
                let name = action.agent
                if suspended.contains(name) { continue }
                if let selected, !selected.contains(name) {
                    // Not this pass's (waiting after failures, or new): said as it is.
                    if action.action != .noop && backoff[name] == nil {
                        set(name, .ready, false, "Progressing", "waits for the next pass", commit: commit, at: started)
                        set(
                            name, .reconciling, true, "Progressing", "waits for the next pass", commit: commit,
                            at: started)
                    }
                    continue
                }
                if let step = steps[name], step.failed {
                    failed += 1
                    let previous = backoff[name]?.failures ?? 0
                    let wait = settings.interval * (1 << min(previous, 5))
                    backoff[name] = Backoff(failures: previous + 1, notBefore: ContinuousClock.now + wait)
                    stall(name, reason: "ApplyFailed", message: step.detail, commit: commit, at: started)
                    continue
                }
                backoff[name] = nil
                if action.action == .delete {
                    conditions[name] = nil
                    continue
                }
                if action.action == .blocked {
                    stall(
                        name, reason: "Blocked", message: action.notes.joined(separator: "; "), commit: commit,
                        at: started)
                    continue
                }
                let detail = steps[name].map { "\($0.action.rawValue): \($0.detail)" } ?? "in sync"
                set(name, .ready, true, steps[name] == nil ? "InSync" : "Applied", detail, commit: commit, at: started)
                set(name, .reconciling, false, "Succeeded", detail, commit: commit, at: started)
                set(name, .stalled, false, "Succeeded", detail, commit: commit, at: started)
            }
            // An agent neither desired nor applied any more (deleted while no service ran) has none.
            let planned = Set(document.plan.actions.map(\.agent))
            for name in conditions.keys where !planned.contains(name) { conditions[name] = nil }
            let result = failed > 0 ? "partlyFailed" : (outcome.steps.isEmpty ? "noChanges" : "applied")
            let message =
                failed > 0
                ? "\(failed) of \(outcome.steps.count) steps failed" : "\(outcome.steps.count) steps carried out"
            finish(result: result, message: message, commit: commit, began: began, at: started)
        }
    }

    func finish(result: String, message: String, commit: String?, began: ContinuousClock.Instant, at started: Date) {
        var message = message
        if let unfetched, result != "fetchFailed" {
            message += "; the mirror was read as it was, because \(unfetched)"
        }
        unfetched = nil
        lastPass = Pass(
            startedAt: started, duration: ContinuousClock.now - began, commit: commit, result: result, message: message)
        ServiceMetrics.reconciled(result: result, duration: ContinuousClock.now - began)
        logger.info("reconciled", metadata: ["result": "\(result)", "message": "\(message)"])
    }

    func stall(_ name: String, reason: String, message: String, commit: String?, at time: Date) {
        let wasStalled = conditions[name]?.contains { $0.kind == .stalled && $0.status } ?? false
        set(name, .ready, false, reason, message, commit: commit, at: time)
        set(name, .reconciling, false, reason, message, commit: commit, at: time)
        set(name, .stalled, true, reason, message, commit: commit, at: time)
        if !wasStalled, let condition = conditions[name]?.first(where: { $0.kind == .stalled }) {
            newlyStalled.append((name, condition))
        }
    }

    /// Sets one condition; its time moves only when its status does (the time of the transition).
    func set(
        _ name: String, _ kind: AgentCondition.Kind, _ status: Bool, _ reason: String, _ message: String,
        commit: String?, at time: Date
    ) {
        var list = conditions[name] ?? []
        let since = list.first { $0.kind == kind && $0.status == status }?.since ?? time
        let condition = AgentCondition(
            kind: kind, status: status, reason: reason, message: message,
            observedCommit: commit ?? list.first { $0.kind == kind }?.observedCommit, since: since)
        list.removeAll { $0.kind == kind }
        list.append(condition)
        list.sort { AgentCondition.Kind.order($0.kind) < AgentCondition.Kind.order($1.kind) }
        conditions[name] = list
    }
}
