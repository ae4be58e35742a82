import AgentryCore
import AgentryModel
import AgentryTesting
import Foundation
import Synchronization
import TestSupport
import Testing

/// `run.schedule` in the service, on fake machines and a clock that stands still: a due schedule
/// starts one run with trigger `schedule`, a run still going skips the next, a killed agent's is
/// refused, and each of these is recorded.
@Suite struct SchedulerTests {
    func scheduledAgent(_ fixture: Fixture, _ name: String, schedule: String) throws {
        try fixture.write(
            "agents/\(name).yaml",
            """
            apiVersion: agentry/v1
            kind: Agent
            metadata: {name: \(name), owner: test}
            spec:
              instructions: "Greet people."
              harness: shell
              model: local
              environment: tiny
              run: {prompt: "scheduled hello", timeout: 2m, schedule: "\(schedule)"}

            """)
    }

    @Test func aDueScheduleRunsOnceSkipsWhileARunGoesAndIsRefusedForAKilledAgent() async throws {
        let fixture = try Fixture()
        try scheduledAgent(fixture, "alpha", schedule: "*/5 * * * *")
        try fixture.agent("beta")
        _ = try fixture.commit()
        let applied = try await fixture.apply()
        // The commit's schedules come with the apply: only the agent that has one.
        #expect(applied.schedules == ["alpha": RunSchedule(expression: "*/5 * * * *", timeZone: "UTC")])

        let release = Mutex(false)
        fixture.fakes.machines.setHarness { _ in
            let deadline = Date().addingTimeInterval(30)
            while !release.withLock({ $0 }) && Date() < deadline { usleep(10_000) }
            return .init(stdout: "ran\n")
        }
        let store = InMemoryServiceStore()
        let runs = RunService(
            ports: fixture.ports, store: store,
            settings: .init(repository: fixture.repo.path, path: "", historyBranch: "agentry/history", maxConcurrent: 2)
        )
        let clock = fixture.fakes.clock
        let scheduler = Scheduler(runs: runs, clock: clock, logger: fixture.ports.logger)
        await scheduler.update(applied.schedules ?? [:])
        let first = try #require(await scheduler.entry(of: "alpha")?.next)
        #expect(first > clock.now() && first.timeIntervalSince(clock.now()) <= 300)
        #expect(Int(first.timeIntervalSince1970) % 300 == 0, "on a five-minute boundary")

        // Not due yet: nothing.
        #expect(await scheduler.tick(now: first.addingTimeInterval(-1)).isEmpty)
        // Due (and late): one run, once.
        let started = await scheduler.tick(now: first.addingTimeInterval(10))
        #expect(started.map(\.outcome) == [.started], "\(started)")
        #expect(await scheduler.tick(now: first.addingTimeInterval(20)).isEmpty, "fires once per due time")
        let run = try #require(try store.run(id: started.first?.runID ?? ""))
        #expect(run.trigger == "schedule" && run.requestedBy == "schedule")

        // The next due time comes while that run still holds the machine: skipped, and said why.
        let second = try #require(await scheduler.entry(of: "alpha")?.next)
        #expect(second == first.addingTimeInterval(300))
        let skipped = await scheduler.tick(now: second)
        #expect(skipped.first?.outcome == .skipped && skipped.first?.runID == run.id, "\(skipped)")
        #expect(try store.skippedCount(agent: "alpha") == 1)

        release.withLock { $0 = true }
        try await waitUntil("the scheduled run to end", seconds: 30) {
            try store.run(id: run.id)?.status.isFinal == true
        }
        let ended = try #require(try store.run(id: run.id))
        #expect(ended.status == .succeeded && ended.recordID != nil, "\(ended)")
        let recordFile = fixture.fakes.history.all.flatMap(\.files).last { $0.path.hasSuffix("/record.yaml") }
        let recordText = try #require(recordFile.map { String(decoding: $0.bytes, as: UTF8.self) })
        #expect(recordText.contains("trigger:\n  kind: \"schedule\""), "history says what started it: \(recordText)")

        // A suspended agent's schedule is skipped, saying so.
        _ = try store.suspend(Suspension(agent: "alpha", actor: "ops", reason: "quiet hours", since: Date()))
        let quiet = try #require(await scheduler.entry(of: "alpha")?.next)
        let paused = await scheduler.tick(now: quiet)
        #expect(paused.first?.outcome == .skipped && paused.first?.message.contains("quiet hours") == true)
        #expect(try store.runs(agent: "alpha", statuses: nil, limit: 10, before: nil).count == 1, "no run started")
        _ = try store.resume(agent: "alpha")

        // A killed agent's schedule is refused, and recorded as such.
        try fixture.fakes.state.setKillSwitch("alpha", reason: "runaway", actor: "ops", at: Date())
        let third = try #require(await scheduler.entry(of: "alpha")?.next)
        let refused = await scheduler.tick(now: third)
        #expect(refused.first?.outcome == .refused && refused.first?.message.contains("killed") == true, "\(refused)")
        let events = try store.scheduleEvents(agent: "alpha", limit: 10).map(\.outcome)
        #expect(events == [.refused, .skipped, .skipped, .started])
    }

    @Test func aChangedScheduleCountsFromNowAndARemovedOneStops() async throws {
        let fixture = try Fixture()
        let store = InMemoryServiceStore()
        let runs = RunService(
            ports: fixture.ports, store: store,
            settings: .init(repository: fixture.repo.path, path: "", historyBranch: "agentry/history", maxConcurrent: 1)
        )
        let clock = fixture.fakes.clock
        let scheduler = Scheduler(runs: runs, clock: clock, logger: fixture.ports.logger)
        let hourly = RunSchedule(expression: "@hourly", timeZone: "UTC")
        await scheduler.update(["alpha": hourly])
        let first = await scheduler.entry(of: "alpha")?.next
        clock.advance(by: 120)
        await scheduler.update(["alpha": hourly])
        #expect(await scheduler.entry(of: "alpha")?.next == first, "an unchanged schedule keeps its time")
        await scheduler.update(["alpha": RunSchedule(expression: "* * * * *", timeZone: "UTC")])
        let changed = try #require(await scheduler.entry(of: "alpha")?.next)
        #expect(changed > clock.now() && changed.timeIntervalSince(clock.now()) <= 60)
        await scheduler.update([:])
        #expect(await scheduler.entry(of: "alpha") == nil)
        #expect(await scheduler.tick(now: changed.addingTimeInterval(3600)).isEmpty)
    }

    /// A service that passes only when asked reads the schedules at start, applying nothing; a
    /// paused agent has none.
    @Test func schedulesAreReadBeforeAnyPass() async throws {
        let fixture = try Fixture()
        try scheduledAgent(fixture, "alpha", schedule: "@daily")
        try scheduledAgent(fixture, "beta", schedule: "@hourly")
        try fixture.write(
            "agents/beta.yaml",
            try String(contentsOf: fixture.repo.url.appendingPathComponent("agents/beta.yaml"), encoding: .utf8)
                .replacingOccurrences(of: "environment: tiny", with: "environment: tiny\n  lifecycle: paused"))
        _ = try fixture.commit()
        let runs = RunService(
            ports: fixture.ports, store: InMemoryServiceStore(),
            settings: .init(repository: fixture.repo.path, path: "", historyBranch: "agentry/history", maxConcurrent: 1)
        )
        let scheduler = Scheduler(runs: runs, clock: fixture.fakes.clock, logger: fixture.ports.logger)
        let loop = Reconciler(
            ports: fixture.ports,
            settings: .init(
                target: fixture.target, interval: .seconds(60), historyBranch: "agentry/history", parallelism: 1),
            scheduler: scheduler)
        await loop.loadSchedules()
        #expect(await scheduler.entry(of: "alpha")?.schedule == RunSchedule(expression: "@daily", timeZone: "UTC"))
        #expect(await scheduler.entry(of: "beta") == nil, "a paused agent's schedule does not fire")
        #expect(try fixture.fakes.state.agent("alpha") == nil, "nothing was applied")
    }
}
