import AgentryCore
import AgentryTesting
import Foundation
import Synchronization
import TestSupport
import Testing

/// The service's run queue against fake machines: order per agent, the bound, idempotency,
/// refusals, recovery after a crash, cancelling.
@Suite struct RunServiceTests {
    func service(_ fixture: Fixture, store: InMemoryServiceStore, maxConcurrent: Int = 4) -> RunService {
        RunService(
            ports: fixture.ports, store: store,
            settings: .init(
                repository: fixture.repo.path, path: "", historyBranch: "agentry/history", maxConcurrent: maxConcurrent),
            // Each end announced to one URL, the payload saying which run ended how.
            announcer: RunAnnouncer(
                deliveries: { run in
                    [
                        Delivery(
                            id: "msg_\(run.id)", url: "http://hook.example/", type: "run.completed",
                            payload: "\(run.id) \(run.status.rawValue)", createdAt: Date())
                    ]
                }, stored: {}))
    }

    /// The ends announced (stored as deliveries), by payload.
    func announced(_ store: InMemoryServiceStore) throws -> [String] {
        try store.deliveries(limit: 100, before: nil).map(\.payload).sorted()
    }

    func finalRuns(_ store: InMemoryServiceStore, count: Int) async throws -> [ServiceRun] {
        var runs: [ServiceRun] = []
        try await waitUntil("\(count) runs to end", seconds: 60) {
            runs = try store.runs(agent: nil, statuses: nil, limit: 100, before: nil)
            return runs.count == count && runs.allSatisfy(\.status.isFinal)
        }
        return runs
    }

    /// What the fake harness saw: which prompts ran, and how many at once per agent and overall.
    final class Watch: Sendable {
        struct Seen {
            var order: [String] = []
            var running: [String: Int] = [:]
            var mostPerAgent = 0
            var mostOverall = 0
        }
        let seen = Mutex(Seen())
    }

    func watchedHarness(_ fixture: Fixture) -> Watch {
        let watch = Watch()
        fixture.fakes.machines.setHarness { command in
            // The fixture's harness is `echo {{prompt}}`.
            let prompt = String((command.argv.last ?? "").split(separator: " ").last ?? "")
            let agent = String(prompt.split(separator: "-").first ?? "")
            watch.seen.withLock { seen in
                seen.order.append(prompt)
                seen.running[agent, default: 0] += 1
                seen.mostPerAgent = max(seen.mostPerAgent, seen.running[agent]!)
                seen.mostOverall = max(seen.mostOverall, seen.running.values.reduce(0, +))
            }
            // Held long enough for a sibling to start beside it, if the queue allowed one.
            usleep(100_000)
            watch.seen.withLock { $0.running[agent, default: 0] -= 1 }
            return .init(stdout: "ran \(prompt)\n")
        }
        return watch
    }

    @Test func runsOfOneAgentGoInOrderOneAtATimeAndAgentsSideBySide() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        try fixture.agent("beta")
        _ = try fixture.commit()
        _ = try await fixture.apply()
        let watch = watchedHarness(fixture)
        let store = InMemoryServiceStore()
        let runs = service(fixture, store: store, maxConcurrent: 2)
        for prompt in ["alpha-1", "alpha-2", "alpha-3"] {
            _ = try await runs.submit(
                agent: "alpha", prompt: prompt, timeout: nil, continueSession: false, idempotencyKey: nil, token: nil,
                actor: "t")
        }
        _ = try await runs.submit(
            agent: "beta", prompt: "beta-1", timeout: nil, continueSession: false, idempotencyKey: nil, token: nil,
            actor: "t")
        let done = try await finalRuns(store, count: 4)
        #expect(done.allSatisfy { $0.status == .succeeded && $0.recordID != nil }, "\(done)")
        let seen = watch.seen.withLock { $0 }
        #expect(seen.order.filter { $0.hasPrefix("alpha") } == ["alpha-1", "alpha-2", "alpha-3"])
        #expect(seen.mostPerAgent == 1, "never two runs of one agent at once")
        #expect(seen.mostOverall <= 2)
        // Each is recorded in history once.
        #expect(try fixture.records("alpha").count == 3)
    }

    @Test func theSameKeyGivesTheSameRunAndRefusalsSayWhy() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        _ = try fixture.commit()
        _ = try await fixture.apply()
        _ = watchedHarness(fixture)
        let store = InMemoryServiceStore()
        let runs = service(fixture, store: store)
        let tokens = Tokens(store: store, clock: fixture.fakes.clock)
        let (mine, _) = try tokens.create(scope: .run, agents: [], expiresIn: nil, by: "t")
        let (theirs, _) = try tokens.create(scope: .run, agents: [], expiresIn: nil, by: "t")
        func submit(_ token: APIToken, _ key: String?) async throws -> (run: ServiceRun, created: Bool) {
            try await runs.submit(
                agent: "alpha", prompt: "alpha-x", timeout: nil, continueSession: false, idempotencyKey: key,
                token: token, actor: "t")
        }
        let first = try await submit(mine, "k")
        let again = try await submit(mine, "k")
        let other = try await submit(theirs, "k")
        #expect(first.created && !again.created && again.run.id == first.run.id)
        #expect(other.created && other.run.id != first.run.id, "one client's key is not another's")
        _ = try await finalRuns(store, count: 2)

        await #expect(throws: CoreError.self) {
            try await runs.submit(
                agent: "ghost", prompt: nil, timeout: nil, continueSession: false, idempotencyKey: nil, token: nil,
                actor: "t")
        }
        try fixture.fakes.state.setKillSwitch("alpha", reason: "runaway", actor: "ops", at: Date())
        do {
            _ = try await submit(mine, "another")
            Issue.record("a killed agent took a run")
        } catch let error as CoreError {
            #expect(error.code == .agentBlocked && error.message.contains("runaway"))
        }
    }

    @Test func afterACrashLiveRunsAreInterruptedAndQueuedOnesRun() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        _ = try fixture.commit()
        _ = try await fixture.apply()
        _ = watchedHarness(fixture)
        let store = InMemoryServiceStore()
        // What a killed service left: one run going, one waiting.
        var going = ServiceRun(
            id: "run_going", agent: "alpha", prompt: "alpha-1", timeoutSeconds: nil, continueSession: false,
            idempotencyKey: nil, tokenID: nil, requestedBy: "t", createdAt: Date())
        going.status = .running
        _ = try store.submit(
            [
                going,
                ServiceRun(
                    id: "run_waiting", agent: "alpha", prompt: "alpha-2", timeoutSeconds: nil, continueSession: false,
                    idempotencyKey: nil, tokenID: nil, requestedBy: "t", createdAt: Date()),
            ], queueLimit: 100)
        let runs = service(fixture, store: store)
        #expect(try await runs.recover() == 1)
        let done = try await finalRuns(store, count: 2)
        #expect(done.first { $0.id == "run_going" }?.status == .interrupted)
        #expect(done.first { $0.id == "run_waiting" }?.status == .succeeded)
        #expect(try announced(store) == ["run_going interrupted", "run_waiting succeeded"], "each end announced once")
    }

    @Test func aQueuedRunIsCancelledBeforeItStarts() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        _ = try fixture.commit()
        _ = try await fixture.apply()
        // The first run is held until the second is cancelled (a deadline, not a guess).
        let gate = DispatchSemaphore(value: 0)
        let order = Mutex<[String]>([])
        fixture.fakes.machines.setHarness { command in
            let prompt = String((command.argv.last ?? "").split(separator: " ").last ?? "")
            order.withLock { $0.append(prompt) }
            if prompt == "alpha-1" { _ = gate.wait(timeout: .now() + 60) }
            return .init(stdout: "ran \(prompt)\n")
        }
        let store = InMemoryServiceStore()
        let runs = service(fixture, store: store, maxConcurrent: 1)
        var ids: [String] = []
        for prompt in ["alpha-1", "alpha-2"] {
            ids.append(
                try await runs.submit(
                    agent: "alpha", prompt: prompt, timeout: nil, continueSession: false, idempotencyKey: nil,
                    token: nil, actor: "t"
                ).run.id)
        }
        let cancelled = try await runs.cancel(ids[1])
        gate.signal()
        #expect(cancelled.status == .cancelled)
        let done = try await finalRuns(store, count: 2)
        #expect(done.first { $0.id == ids[1] }?.status == .cancelled)
        #expect(order.withLock { $0 } == ["alpha-1"], "the cancelled run never started")
        #expect(try announced(store) == ["\(ids[0]) succeeded", "\(ids[1]) cancelled"].sorted())
        await #expect(throws: CoreError.self) { try await runs.cancel(ids[0]) }
    }
}

/// The event streams' looks at their runs, made together: a waiting stream gets its run at the
/// first look that finds it changed, with the live log of a run going on from where it left off,
/// or as it is once it has waited long enough.
@Suite struct RunWatchTests {
    func run(_ id: String, _ agent: String, _ status: ServiceRunStatus) -> ServiceRun {
        ServiceRun(
            id: id, agent: agent, status: status, prompt: nil, timeoutSeconds: nil, continueSession: false,
            idempotencyKey: nil, tokenID: nil, requestedBy: "test", createdAt: Date())
    }

    @Test func waitingStreamsSeeTheirRunsAndTheOutputAfterWhatTheyHave() async throws {
        let store = InMemoryServiceStore()
        let state = InMemoryState()
        var going = run("run_a", "alpha", .queued)
        let waiting = run("run_b", "beta", .queued)
        _ = try store.submit([going, waiting], queueLimit: 10)
        going.status = .running
        going.recordID = "record-a"
        try store.update(going)
        try state.resetLiveLog(agent: "alpha", run: "record-a")
        try state.appendLiveLog(agent: "alpha", Array("hello world\n".utf8))
        let watch = RunWatch(store: store, state: state, interval: .milliseconds(10), patience: .milliseconds(200))

        // Three streams waiting at once, one of them on a run that is not there.
        async let first = watch.next(going, offset: 6)
        async let second = watch.next(waiting, offset: 0)
        async let third = watch.next(run("run_gone", "alpha", .queued), offset: 0)
        let (a, b, c) = await (first, second, third)
        #expect(a.run?.status == .running)
        #expect(a.output.map { String(decoding: $0, as: UTF8.self) } == "world\n")
        #expect(b.run?.status == .queued && b.output == nil, "a run not going on has no output to follow")
        #expect(c.run == nil && c.output == nil)

        // What changed since shows at the next look: more output, then the end.
        try state.appendLiveLog(agent: "alpha", Array("more\n".utf8))
        let later = await watch.next(going, offset: 12)
        #expect(later.output.map { String(decoding: $0, as: UTF8.self) } == "more\n")
        // The agent's next run started the live log afresh: this run's last lines are still its own,
        // and the next run's output is never taken for more of them.
        try state.appendLiveLog(agent: "alpha", Array("last\n".utf8))
        try state.resetLiveLog(agent: "alpha", run: "record-b")
        try state.appendLiveLog(agent: "alpha", Array("the next run prints more than this one did\n".utf8))
        let last = await watch.next(going, offset: 17)
        #expect(last.output.map { String(decoding: $0, as: UTF8.self) } == "last\n")
        try state.resetLiveLog(agent: "alpha", run: "record-c")
        let elsewhere = await watch.next(going, offset: 22)
        #expect(elsewhere.run?.status == .running && elsewhere.output == nil)
        going.status = .succeeded
        try store.update(going)
        let ended = await watch.next(going, offset: 22)
        #expect(ended.run?.status == .succeeded && ended.output == nil)

        // Nothing new: the stream is woken only once it has waited its patience out.
        let asked = ContinuousClock.now
        let unchanged = await watch.next(waiting, offset: 0)
        #expect(unchanged.run?.status == .queued)
        #expect(ContinuousClock.now - asked >= .milliseconds(200))
    }
}
