import AgentryBasics
import AgentryRender
import Foundation
import Logging
import Synchronization

/// The service's runs (`agentry serve`): each is stored before the request that asked for it is
/// answered, then started in the order accepted, one at a time per agent and at most
/// `maxConcurrent` at once, through the same `Runner` as `agentry run` (and so the same per-agent
/// lane and run lock, beside any CLI command on the same state directory).
public actor RunService {
    /// Where runs read the agents and write their records.
    public struct Settings: Sendable {
        public var repository: String
        public var path: String
        public var historyBranch: String
        public var maxConcurrent: Int

        public init(repository: String, path: String, historyBranch: String, maxConcurrent: Int) {
            self.repository = repository
            self.path = path
            self.historyBranch = historyBranch
            self.maxConcurrent = max(1, maxConcurrent)
        }
    }

    struct Active {
        var runID: String
        var interruption: Interruption
        var cancelRequested = false
        var task: Task<Void, Never>?
    }

    let ports: Ports
    let store: any ServiceStore
    let settings: Settings
    /// What announces each run's end (webhooks out), stored with it.
    let announcer: RunAnnouncer?
    var logger: Logger { ports.logger }
    /// By agent: the run it is carrying out.
    var active: [String: Active] = [:]
    /// False once the service stops: no new runs, none started.
    nonisolated var accepting: Bool { !stopping.load(ordering: .acquiring) }
    let stopping = Atomic<Bool>(false)
    /// Runs submitted and not yet checked and stored, each with its waiting request; whether a
    /// batch is under way. Outside the actor: a submission and its answer make no trip through it.
    let submissions = Mutex(Submissions())

    struct Submissions {
        typealias Waiting = (
            run: ServiceRun, continuation: CheckedContinuation<(run: ServiceRun, created: Bool), any Error>
        )
        var waiting: [Waiting] = []
        var storing = false
    }
    /// Whether a scheduling pass is under way, and whether another was asked for meanwhile.
    var scheduling = false
    var scheduleAgain = false

    public init(
        ports: Ports, store: any ServiceStore, settings: Settings,
        announcer: RunAnnouncer? = nil
    ) {
        self.ports = ports
        self.store = store
        self.settings = settings
        self.announcer = announcer
    }

    /// Writes a run's end (while its stored status is `status`, when given) with what announces
    /// it, in one transaction; whether it was written.
    nonisolated func storeEnd(_ run: ServiceRun, ifStatus status: ServiceRunStatus? = nil) throws -> Bool {
        try store.end(run, ifStatus: status, announcing: announcer?.deliveries(run) ?? [])
    }

    /// Runs waiting per agent, at most; past it a submission is refused (429) until some have run.
    public static let queuePerAgent = 100
    public static let longestTimeout: Duration = .seconds(24 * 3600)

    /// How many runs are carrying on now.
    public var activeCount: Int { active.count }

    /// At start: runs the last service left live did not end under its watch, so they are
    /// `interrupted` (the agent's next run records them in history, as after a killed CLI); queued
    /// runs then start. Returns how many were interrupted.
    @discardableResult
    public func recover() async throws -> Int {
        let live = try reporting(.stateUnavailable) {
            try store.runs(agent: nil, statuses: [.starting, .running], limit: Int.max, before: nil)
        }
        for var run in live {
            run.status = .interrupted
            run.finishedAt = ports.clock.now()
            run.message = "the service stopped while the run was going on; the agent's next run records it"
            _ = try reporting(.stateUnavailable) { try storeEnd(run) }
            ServiceMetrics.runEnded(run, usage: nil)
        }
        if !live.isEmpty { await announcer?.stored() }
        schedule()
        return live.count
    }

    /// Accepts a run: checked against the state (an applied agent, not killed, paused or revoked),
    /// stored as `queued`, then started when its turn comes. The same token and idempotency key
    /// give back the run first accepted for them, not a new one. The checks and the insert (with
    /// the agent's bound, in one transaction) are made on a blocking-work thread, for all the runs
    /// submitted meanwhile at once (`checkAndStore`); only the scheduling is the queue actor's.
    public nonisolated func submit(
        agent: String, prompt: String?, timeout: Duration?, continueSession: Bool, idempotencyKey: String?,
        token: APIToken?, actor: String, trigger: String = "api"
    ) async throws -> (run: ServiceRun, created: Bool) {
        if let prompt, prompt.utf8.count > 1 << 20 {
            throw CoreError(.invalidArgument, "the prompt is over 1 MiB")
        }
        if let timeout, timeout <= .zero || timeout > Self.longestTimeout {
            throw CoreError(.invalidArgument, "timeout must be more than 0 and at most 24h")
        }
        var run = ServiceRun(
            id: "run_" + Hex.random(bytes: 10), agent: agent, prompt: prompt,
            timeoutSeconds: timeout.map { Int(($0 + .milliseconds(999)) / .seconds(1)) },
            continueSession: continueSession,
            idempotencyKey: idempotencyKey, tokenID: token?.id, requestedBy: actor, createdAt: ports.clock.now())
        run.trigger = trigger
        let stored = try await withCheckedThrowingContinuation { continuation in
            let first = submissions.withLock { submissions in
                submissions.waiting.append((run, continuation))
                defer { submissions.storing = true }
                return !submissions.storing
            }
            if first { BlockingWork.detach { self.storeWaiting() } }
        }
        return stored
    }

    /// A schedule came due: a run (trigger `schedule`) unless the agent's last one is still going
    /// or waiting, which skips this one. Either way, what happened is recorded.
    @discardableResult
    public func fireSchedule(agent: String, dueAt: Date) async -> ScheduleEvent {
        var event: ScheduleEvent
        let pending = try? store.runs(agent: agent, statuses: [.queued, .starting, .running], limit: 1, before: nil)
        let suspension = (try? store.suspensions())?.first { $0.agent == nil || $0.agent == agent }
        if let suspension {
            event = ScheduleEvent(
                agent: agent, dueAt: dueAt, outcome: .skipped, runID: nil,
                message:
                    "skipped: \(suspension.agent == nil ? "the service" : agent) is suspended (by \(suspension.actor): \(suspension.reason))"
            )
        } else if let going = pending?.first {
            event = ScheduleEvent(
                agent: agent, dueAt: dueAt, outcome: .skipped, runID: going.id,
                message: "skipped: the run \(going.id) is still \(going.status.rawValue)")
        } else {
            do {
                let stamp = Int(dueAt.timeIntervalSince1970)
                let accepted = try await submit(
                    agent: agent, prompt: nil, timeout: nil, continueSession: false,
                    idempotencyKey: "schedule:\(agent):\(stamp)", token: nil, actor: "schedule", trigger: "schedule")
                event = ScheduleEvent(
                    agent: agent, dueAt: dueAt, outcome: .started, runID: accepted.run.id, message: "started")
            } catch {
                let message = (error as? CoreError)?.message ?? "\(error)"
                event = ScheduleEvent(agent: agent, dueAt: dueAt, outcome: .refused, runID: nil, message: message)
            }
        }
        ServiceMetrics.scheduled(event.outcome)
        logger.info(
            "schedule due",
            metadata: ["agent": "\(agent)", "outcome": "\(event.outcome.rawValue)", "detail": "\(event.message)"])
        do { try store.recordScheduleEvent(event) } catch {
            logger.error("cannot record the schedule's event", metadata: ["agent": "\(agent)", "error": "\(error)"])
        }
        return event
    }

    /// Cancels a run: a queued one at once; a live one has its harness's process tree killed, and
    /// is `cancelled` once its record is written. A finished run is left as it is (409).
    public func cancel(_ id: String) throws -> ServiceRun {
        guard var run = try reporting(.stateUnavailable, { try store.run(id: id) }) else {
            throw CoreError(.notFound, "there is no run \(id)")
        }
        // A queued run is cancelled unless it is being started: then (as once it started) its
        // process tree is stopped.
        if run.status == .queued && active[run.agent]?.runID != id {
            var cancelled = run
            cancelled.status = .cancelled
            cancelled.finishedAt = ports.clock.now()
            cancelled.message = "cancelled before it started"
            if try reporting(.stateUnavailable, { try storeEnd(cancelled, ifStatus: .queued) }) {
                ServiceMetrics.runEnded(cancelled, usage: nil)
                if let announcer { Task { await announcer.stored() } }
                return cancelled
            }
            run = try reporting(.stateUnavailable, { try store.run(id: id) }) ?? run
        }
        switch run.status {
        case .queued, .starting, .running:
            guard var current = active[run.agent], current.runID == id else {
                throw CoreError(
                    .stateUnavailable, "the run \(id) is not carried out by this service; try again shortly")
            }
            current.cancelRequested = true
            active[run.agent] = current
            current.interruption.interrupt(SIGTERM)
        default:
            throw CoreError(.agentBlocked, "the run \(id) already ended: \(run.status.rawValue)")
        }
        return run
    }

    /// Group commit, on a blocking-work thread: the runs submitted while a batch is under way are
    /// checked and stored together in the next one, so that a burst of requests costs a few
    /// commits, not one each (a cooperative thread that waits on SQLite would hold up every other
    /// request). Each request is answered from here, and the actor told to start what it can.
    nonisolated func storeWaiting() {
        while true {
            let batch = submissions.withLock { submissions -> [Submissions.Waiting] in
                defer { submissions.waiting = [] }
                if submissions.waiting.isEmpty { submissions.storing = false }
                return submissions.waiting
            }
            if batch.isEmpty { return }
            let answers = checkAndStore(batch.map(\.run))
            for (waiting, answer) in zip(batch, answers) { waiting.continuation.resume(with: answer) }
            // (A stop that began meanwhile leaves them queued: the next start carries them out.)
            if answers.contains(where: { (try? $0.get())?.created == true }) {
                Task { await self.schedule() }
            }
        }
    }

    /// For each run: the run first accepted for its token and key, whatever happened since (a kill,
    /// a stop); else why it is refused (the service stopping, the agent not applied, killed,
    /// paused or revoked, its queue full); else the run, stored (in one transaction for all).
    nonisolated func checkAndStore(_ runs: [ServiceRun]) -> [Result<(run: ServiceRun, created: Bool), any Error>] {
        let (state, accepting) = (ports.state, self.accepting)
        var answers = [Result<(run: ServiceRun, created: Bool), any Error>?](repeating: nil, count: runs.count)
        var checked: [Int] = []
        for (index, run) in runs.enumerated() {
            answers[index] = Result {
                if let key = run.idempotencyKey,
                    let earlier = try reporting(
                        .stateUnavailable, { try store.run(idempotencyKey: key, tokenID: run.tokenID) })
                {
                    return (earlier, false)
                }
                guard accepting else {
                    throw CoreError(.stateUnavailable, "the service is stopping; it takes no new runs")
                }
                let (record, kill) = try reporting(.stateUnavailable) {
                    (try state.agent(run.agent), try state.killSwitch(run.agent))
                }
                guard let record else { throw CoreError(.notFound, "the agent \(run.agent) is not applied here") }
                if let kill {
                    throw CoreError(
                        .agentBlocked,
                        "the agent \(run.agent) is killed (\(kill.reason), by \(kill.actor)); agentry unkill lifts it")
                }
                if record.lifecycle != "active" {
                    throw CoreError(.agentBlocked, "the agent \(run.agent) is \(record.lifecycle); it takes no runs")
                }
                checked.append(index)
                return (run, true)
            }
        }
        let stored = Result {
            checked.isEmpty
                ? []
                : try reporting(.stateUnavailable) {
                    try store.submit(checked.map { runs[$0] }, queueLimit: Self.queuePerAgent)
                }
        }
        for (position, index) in checked.enumerated() {
            answers[index] = stored.flatMap { results in
                guard let result = results[position] else {
                    return .failure(
                        CoreError(
                            .stateLocked,
                            "\(runs[index].agent) has \(Self.queuePerAgent) runs waiting already; try again when some have run"
                        ))
                }
                return .success(result)
            }
        }
        return answers.map { $0! }
    }

    /// Starts queued runs while there is room: the oldest first, one per agent. Asked for at any
    /// time; the passes go one at a time, reading and writing on blocking-work threads, so that
    /// the actor takes submissions meanwhile.
    func schedule() {
        guard !scheduling else {
            scheduleAgain = true
            return
        }
        scheduling = true
        Task {
            await self.schedulePasses()
        }
    }

    func schedulePasses() async {
        repeat {
            scheduleAgain = false
            await schedulePass()
        } while scheduleAgain
        scheduling = false
    }

    func schedulePass() async {
        guard accepting, active.count < settings.maxConcurrent else { return }
        let (store, busy, room) = (self.store, Set(active.keys), settings.maxConcurrent - active.count)
        let heads: [ServiceRun]
        do {
            heads = try await BlockingWork.run {
                var heads: [ServiceRun] = []
                for head in try store.queuedHeads() where !busy.contains(head.agent) && heads.count < room {
                    if let run = try store.run(id: head.id), run.status == .queued { heads.append(run) }
                }
                return heads
            }
        } catch {
            logger.error("cannot read the queued runs", metadata: ["error": "\(error)"])
            return
        }
        for run in heads where accepting && active[run.agent] == nil && active.count < settings.maxConcurrent {
            await start(run)
        }
    }

    /// Starts a queued run, unless it stopped being queued meanwhile (cancelled).
    func start(_ queued: ServiceRun) async {
        var run = queued
        run.status = .starting
        run.startedAt = ports.clock.now()
        let interruption = Interruption()
        // The agent is taken before the write: nothing else starts it meanwhile, and a cancel
        // finds the run here.
        active[run.agent] = Active(runID: run.id, interruption: interruption)
        let (store, starting) = (self.store, run)
        let started: Bool
        do {
            started = try await BlockingWork.run { try store.update(starting, ifStatus: .queued) }
        } catch {
            logger.error("cannot start the run", metadata: ["run": "\(run.id)", "error": "\(error)"])
            started = false
        }
        guard started else {
            active[run.agent] = nil
            return
        }
        let task = Task { await self.execute(run, interruption: interruption) }
        active[run.agent]?.task = task
    }

    func execute(_ started: ServiceRun, interruption: Interruption) async {
        var run = started
        var request = Runner.Request(
            agent: run.agent, repository: settings.repository, path: settings.path, prompt: run.prompt,
            timeout: run.timeoutSeconds.map { .seconds($0) }, actor: run.requestedBy, trigger: run.trigger,
            historyBranch: settings.historyBranch, interruption: interruption)
        request.continueSession = run.continueSession
        request.harnessStarted = { recordID in Task { await self.harnessStarted(runID: started.id, recordID: recordID) }
        }
        let logger = self.logger
        let runID = run.id
        var usage: ModelUsage?
        logger.info("run started", metadata: ["run": "\(runID)", "agent": "\(run.agent)"])
        do {
            // Its work gives way to the requests': a run waits a little, an answer does not.
            let runner = Runner(
                ports, progress: { line in logger.info("\(line)", metadata: ["run": "\(runID)"]) },
                output: { _, _ in })
            let outcome = try await BlockingWork.$inBackground.withValue(true) { try await runner.run(request) }
            let record = outcome.record
            usage = record.usage
            run.recordID = record.runID
            run.historyCommit = outcome.historyCommit
            run.exitStatus = record.exitStatus
            run.message = record.reason ?? outcome.historyWarning
            switch record.outcome {
            case .succeeded: run.status = .succeeded
            case .failed, .notStarted, .machineLost: run.status = .failed
            case .timedOut: run.status = .timedOut
            case .interrupted: run.status = active[run.agent]?.cancelRequested == true ? .cancelled : .interrupted
            }
        } catch let error as CoreError {
            if active[run.agent]?.cancelRequested == true {
                run.status = .cancelled
            } else {
                run.status = interruption.isInterrupted ? .interrupted : .failed
            }
            run.message = error.message
        } catch {
            run.status = .failed
            run.message = "agentry failed; its log says why"
            logger.error("run failed", metadata: ["run": "\(run.id)", "error": "\(error)"])
        }
        run.finishedAt = ports.clock.now()
        // The end must be written, or the run would read as live forever: a busy database is waited for.
        for attempt in 1...30 {
            do {
                let ended = run
                _ = try await BlockingWork.run { try self.storeEnd(ended) }
                break
            } catch {
                logger.error(
                    "cannot record the run's end",
                    metadata: ["run": "\(run.id)", "attempt": "\(attempt)", "error": "\(error)"])
                try? await Task.sleep(for: .seconds(2))
            }
        }
        logger.info("run ended", metadata: ["run": "\(runID)", "status": "\(run.status.rawValue)"])
        ServiceMetrics.runEnded(run, usage: usage)
        await announcer?.stored()
        active[run.agent] = nil
        schedule()
    }

    /// `starting` becomes `running` once the harness runs (and the run is journalled), unless the
    /// run already ended: the write is made only while the stored status is `starting`, so it may
    /// land before or after the run's end.
    func harnessStarted(runID: String, recordID: String) async {
        guard active.values.contains(where: { $0.runID == runID }) else { return }
        let store = self.store
        do {
            try await BlockingWork.run {
                guard var run = try store.run(id: runID), run.status == .starting else { return }
                run.status = .running
                run.recordID = recordID
                _ = try store.update(run, ifStatus: .starting)
            }
        } catch {
            logger.error("cannot record that the run started", metadata: ["run": "\(runID)", "error": "\(error)"])
        }
    }

    /// Stops taking runs, lets the live ones finish for up to `grace`, then interrupts the rest
    /// (each is recorded in history as interrupted) and waits for their records.
    public func shutdown(grace: Duration) async {
        stopping.store(true, ordering: .releasing)
        guard !active.isEmpty else { return }
        logger.info("waiting for runs to finish", metadata: ["runs": "\(active.count)", "grace": "\(grace)"])
        let drained = await waitForIdle(upTo: grace)
        guard !drained else { return }
        for current in active.values { current.interruption.interrupt(SIGTERM) }
        for task in active.values.compactMap(\.task) { await task.value }
    }

    /// True when every active run ended within `limit`.
    func waitForIdle(upTo limit: Duration) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while !active.isEmpty && clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        return active.isEmpty
    }
}

/// What announces a run's end (webhooks out): its deliveries, stored in the same transaction as
/// the end (both or neither, whatever stops the service), then `stored` is told (to send them).
public struct RunAnnouncer: Sendable {
    public var deliveries: @Sendable (ServiceRun) -> [Delivery]
    public var stored: @Sendable () async -> Void

    public init(
        deliveries: @escaping @Sendable (ServiceRun) -> [Delivery], stored: @escaping @Sendable () async -> Void
    ) {
        self.deliveries = deliveries
        self.stored = stored
    }
}
