import AgentryCore
import AgentryState
import Foundation
import GRDB
import TestSupport
import Testing

/// `service.sqlite`: what the service stores survives a restart, keys deduplicate per token,
/// pages follow each other, tokens are kept as hashes only.
@Suite struct ServiceDatabaseTests {
    func run(_ id: String, agent: String = "a", key: String? = nil, token: String? = "tok_1") -> ServiceRun {
        ServiceRun(
            id: id, agent: agent, prompt: "p \(id)", timeoutSeconds: 60, continueSession: false, idempotencyKey: key,
            tokenID: token, requestedBy: "token tok_1", createdAt: Date(timeIntervalSince1970: 1_800_000_000))
    }

    /// One run stored alone, as its request would be when no other arrives meanwhile.
    func submit(_ store: ServiceDatabase, _ run: ServiceRun) throws -> (run: ServiceRun, created: Bool) {
        try #require(try store.submit([run], queueLimit: 100)[0])
    }

    /// Runs gathered into one commit are stored each in turn: a key sent twice in one batch gives
    /// one run, and the agent's bound counts the batch's own runs.
    @Test func aBatchIsStoredRunByRun() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        let store = ServiceDatabase(stateDirectory: folder.path)
        let stored = try store.submit(
            [run("run_1", key: "k"), run("run_2", key: "k"), run("run_3"), run("run_4"), run("run_5", agent: "b")],
            queueLimit: 2)
        #expect(stored.map { $0?.run.id } == ["run_1", "run_1", "run_3", nil, "run_5"])
        #expect(stored.map { $0?.created } == [true, false, true, nil, true])
        #expect(try store.queuedCount(agent: "a") == 2 && store.run(id: "run_4") == nil)
    }

    /// A status write made only while the stored status is the one expected: a start loses to a
    /// cancel that came first, and a late "running" mark to the run's end.
    @Test func statusWritesAreComparedAndSet() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        let store = ServiceDatabase(stateDirectory: folder.path)
        var queued = try submit(store, run("run_1")).run
        queued.status = .cancelled
        #expect(try store.update(queued, ifStatus: .queued))
        var starting = queued
        starting.status = .starting
        #expect(try !store.update(starting, ifStatus: .queued), "cancelled first: not started")
        #expect(try store.run(id: "run_1")?.status == .cancelled)

        var live = try submit(store, run("run_2")).run
        live.status = .starting
        #expect(try store.update(live, ifStatus: .queued))
        live.status = .succeeded
        try store.update(live)
        var late = live
        late.status = .running
        #expect(try !store.update(late, ifStatus: .starting), "the end came first")
        #expect(try store.run(id: "run_2")?.status == .succeeded)
    }

    struct Now: WallClock {
        func now() -> Date { Date() }
        func sleep(for duration: Duration) async {}
        func pause(for duration: Duration) {}
    }

    /// A token found good is checked from memory afterwards, until a revocation (by another process:
    /// here another store on the same file, as `agentry token revoke`) is seen: then at once it is
    /// read again, and refused.
    @Test func aTokenKnownGoodIsRefusedAsSoonAsItIsRevoked() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        let service = Tokens(store: ServiceDatabase(stateDirectory: folder.path), clock: Now())
        let cli = Tokens(store: ServiceDatabase(stateDirectory: folder.path), clock: Now())
        let (token, text) = try cli.create(scope: .run, agents: ["a"], expiresIn: nil, by: "test")
        let header = "Bearer " + text
        func id(_ verdict: Result<APIToken, Tokens.Refusal>?) -> String? {
            if case .success(let token)? = verdict { return token.id }
            return nil
        }
        #expect(service.authorizeKnown(header, scope: .run, agent: nil) == nil, "not read yet")
        #expect(id(try service.authorize(header, scope: .run, agent: nil)) == token.id)
        #expect(id(service.authorizeKnown(header, scope: .run, agent: nil)) == token.id, "now from memory")
        // From memory, the scope and the agents are checked as from the database.
        if case .failure(.forbidden)? = service.authorizeKnown(header, scope: .admin, agent: nil) {
        } else {
            Issue.record("a run token passed as admin")
        }
        if case .failure(.forbidden)? = try? service.authorize(header, scope: .run, agent: "b") {
        } else {
            Issue.record("a token for a passed for b")
        }
        try cli.revoke(id: token.id)
        #expect(service.authorizeKnown(header, scope: .run, agent: nil) == nil, "read again after a revocation")
        #expect(
            try service.authorize(header, scope: .run, agent: nil)
                == .failure(.unauthenticated("the token \(token.id) was revoked")))
        #expect(service.authorizeKnown(header, scope: .run, agent: nil) == nil, "a revoked token is not kept")
    }

    @Test func runsSurviveARestartAndPagesFollowEachOther() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        do {
            let store = ServiceDatabase(stateDirectory: folder.path)
            #expect(try submit(store, run("run_1", key: "k")).created)
            #expect(try submit(store, run("run_2", key: "k")).run.id == "run_1", "the same key gives the first run")
            #expect(try submit(store, run("run_3", key: "k", token: "tok_2")).created, "another token's key is its own")
            for index in 4...7 {
                _ = try submit(store, run("run_\(index)", agent: index.isMultiple(of: 2) ? "a" : "b"))
            }
            var scheduled = run("run_8", agent: "c", token: nil)
            scheduled.trigger = "schedule"
            _ = try submit(store, scheduled)
            let due = Date(timeIntervalSince1970: 1_800_000_300)
            try store.recordScheduleEvent(
                ScheduleEvent(agent: "c", dueAt: due, outcome: .started, runID: "run_8", message: "started"))
            try store.recordScheduleEvent(
                ScheduleEvent(agent: "c", dueAt: due + 60, outcome: .skipped, runID: "run_8", message: "skipped"))
            var started = try #require(try store.run(id: "run_1"))
            started.status = .running
            started.recordID = "20270115-080000-abcd"
            try store.update(started)
        }
        // A new process (a restarted service) sees everything, in order.
        let store = ServiceDatabase(stateDirectory: folder.path)
        #expect(try store.run(id: "run_1")?.status == .running)
        #expect(try store.run(id: "run_1")?.recordID == "20270115-080000-abcd")
        #expect(try store.run(id: "run_1")?.timeoutSeconds == 60)
        #expect(try store.run(id: "run_1")?.trigger == "api")
        #expect(try store.run(id: "run_8")?.trigger == "schedule")
        #expect(try store.scheduleEvents(agent: "c", limit: 5).map(\.outcome) == [.skipped, .started])
        #expect(
            try store.scheduleEvents(agent: "c", limit: 5).last?.dueAt == Date(timeIntervalSince1970: 1_800_000_300))
        #expect(try store.skippedCount(agent: "c") == 1 && store.skippedCount(agent: "a") == 0)
        // Suspensions: one per agent and one for the service; a second keeps the first.
        let since = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(try store.suspend(Suspension(agent: "a", actor: "ops", reason: "why", since: since)).created)
        let again = try store.suspend(Suspension(agent: "a", actor: "other", reason: "again", since: since + 1))
        #expect(!again.created && again.suspension.actor == "ops")
        #expect(try store.suspend(Suspension(agent: nil, actor: "ops", reason: "all", since: since)).created)
        #expect(try store.suspensions().map(\.agent) == [nil, "a"])
        #expect(try store.resume(agent: nil) && !store.resume(agent: nil) && store.suspensions().map(\.agent) == ["a"])
        let live = try store.runs(agent: nil, statuses: [.running], limit: 10, before: nil)
        #expect(live.map(\.id) == ["run_1"])
        let first = try store.runs(agent: "a", statuses: nil, limit: 2, before: nil)
        #expect(first.map(\.id) == ["run_6", "run_4"], "newest first")
        let second = try store.runs(agent: "a", statuses: nil, limit: 2, before: first.last?.id)
        #expect(second.map(\.id) == ["run_3", "run_1"])
        #expect(try store.runs(agent: "a", statuses: nil, limit: 2, before: second.last?.id).isEmpty)
    }

    /// The reconcile loop's conditions outlive the service: read back as written (the time of each
    /// transition to the millisecond), replaced agent by agent, removed with an empty list; a row
    /// the database should not hold (no agent name, no known kind) is left out.
    @Test func conditionsSurviveARestartAgentByAgent() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        let since = Date(timeIntervalSince1970: 1_800_000_000.125)
        func conditions(_ reason: String, stalled: Bool) -> [AgentCondition] {
            [
                AgentCondition(
                    kind: .ready, status: !stalled, reason: reason, message: "said \(reason)", observedCommit: "c1",
                    since: since),
                AgentCondition(
                    kind: .stalled, status: stalled, reason: reason, message: "said \(reason)", observedCommit: nil,
                    since: since + 1),
            ]
        }
        do {
            let store = ServiceDatabase(stateDirectory: folder.path)
            #expect(try store.conditions().isEmpty)
            try store.saveConditions([
                "a": conditions("Applied", stalled: false), "b": conditions("ApplyFailed", stalled: true),
            ])
            try store.saveConditions(["a": conditions("ValidationFailed", stalled: true)])
        }
        let store = ServiceDatabase(stateDirectory: folder.path)
        let read = try store.conditions()
        #expect(read["a"] == conditions("ValidationFailed", stalled: true), "\(read)")
        #expect(read["b"] == conditions("ApplyFailed", stalled: true))
        try store.saveConditions(["b": []])
        #expect(try store.conditions().keys.sorted() == ["a"])

        let pool = try DatabaseQueue(path: folder.path + "/service.sqlite")
        try pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO conditions (agent, kind, status, reason, message, since) VALUES
                    ('../x', 'Ready', 1, 'r', 'm', '2027-01-01 00:00:00.000'),
                    ('c', 'Sleepy', 1, 'r', 'm', '2027-01-01 00:00:00.000')
                    """)
        }
        #expect(try store.conditions().keys.sorted() == ["a"])
    }

    /// A run's end and what announces it are stored together or not at all.
    @Test func aRunsEndAndItsAnnouncementAreOneTransaction() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        let store = ServiceDatabase(stateDirectory: folder.path)
        var run = ServiceRun(
            id: "run_1", agent: "a", prompt: nil, timeoutSeconds: nil, continueSession: false, idempotencyKey: nil,
            tokenID: nil, requestedBy: "t", createdAt: Date())
        _ = try store.submit([run], queueLimit: 10)
        func delivery(_ id: String) -> Delivery {
            Delivery(id: id, url: "http://hook.example/", type: "run.completed", payload: "{}", createdAt: Date())
        }
        try store.enqueue([delivery("msg_taken")])
        run.status = .cancelled
        // The announcement cannot be stored (its id is taken): the end is not written either.
        #expect(throws: (any Error).self) {
            try store.end(run, ifStatus: .queued, announcing: [delivery("msg_new"), delivery("msg_taken")])
        }
        #expect(try store.run(id: "run_1")?.status == .queued)
        #expect(try store.deliveries(limit: 10, before: nil).map(\.id) == ["msg_taken"])
        // Not in the status asked for: neither.
        #expect(try !store.end(run, ifStatus: .running, announcing: [delivery("msg_new")]))
        #expect(try store.deliveries(limit: 10, before: nil).count == 1)
        // Both.
        #expect(try store.end(run, ifStatus: .queued, announcing: [delivery("msg_new")]))
        #expect(try store.run(id: "run_1")?.status == .cancelled)
        #expect(try store.deliveries(limit: 10, before: nil).map(\.id) == ["msg_new", "msg_taken"])
    }

    @Test func tokensAreFoundByHashAndRevokedById() throws {
        let folder = try TemporaryDirectory("agentry-service-db")
        let store = ServiceDatabase(stateDirectory: folder.path)
        let tokens = Tokens(store: store, clock: SystemClockForTests())
        let (made, text) = try tokens.create(scope: .run, agents: ["a"], expiresIn: .seconds(3600), by: "ana")
        let raw = try Data(contentsOf: URL(fileURLWithPath: folder.path + "/service.sqlite"))
        #expect(raw.range(of: Data(text.utf8)) == nil, "the token's text is not in the database")
        guard case .success(let found) = try tokens.authorize("Bearer \(text)", scope: .read, agent: "a") else {
            Issue.record("a good token was refused")
            return
        }
        #expect(found.id == made.id && found.scope == .run && found.agents == ["a"] && found.createdBy == "ana")
        #expect(
            try tokens.authorize("Bearer \(text)", scope: .admin, agent: "a")
                == .failure(.forbidden("the token \(made.id) has scope run; this needs admin")))
        if case .success = try tokens.authorize("Bearer \(text)", scope: .run, agent: "b") {
            Issue.record("a token for a was accepted for b")
        }
        try tokens.revoke(id: made.id)
        if case .success = try tokens.authorize("Bearer \(text)", scope: .read, agent: "a") {
            Issue.record("a revoked token was accepted")
        }
        #expect(throws: CoreError.self) { try tokens.revoke(id: "tok_nope") }
    }
}

struct SystemClockForTests: WallClock {
    func now() -> Date { Date() }
    func sleep(for duration: Duration) async { try? await Task.sleep(for: duration) }
    func pause(for duration: Duration) { usleep(UInt32(duration.components.seconds * 1_000_000)) }
}
