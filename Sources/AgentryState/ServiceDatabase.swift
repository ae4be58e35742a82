import AgentryCore
import Foundation
import GRDB
import Synchronization

/// `service.sqlite` in the state directory (WAL): the service's tokens and the runs it accepted.
/// Its own file, so that accepting a run never waits on the state's writer lock (an apply holds
/// it); SQLite orders the writers of this one (the service and `agentry token`), each briefly.
public final class ServiceDatabase: ServiceStore {
    public let path: String
    private let opened = Mutex<DatabasePool?>(nil)

    public static let fileName = "service.sqlite"
    public static let lockName = "service.lock"

    /// Makes this process the state directory's one service, for as long as it lives: a second
    /// `agentry serve` would run the same queued runs and mark this one's live runs interrupted.
    public func holdServiceLock() throws {
        let folder = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let lockPath = folder + "/" + Self.lockName
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StateError(code: .io, message: "cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(descriptor, &buffer, buffer.count)
            close(descriptor)
            let holder = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : "?"
            throw StateError(
                code: .locked(pid: Int32(holder.trimmingCharacters(in: .whitespacesAndNewlines))),
                message:
                    "another agentry serve (pid \(holder.trimmingCharacters(in: .whitespacesAndNewlines))) uses the state directory \(folder); one service per state directory"
            )
        }
        _ = ftruncate(descriptor, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pwrite(descriptor, pid, pid.count, 0)
        // Held until the process ends (the descriptor is never closed).
    }

    public init(stateDirectory: String) {
        path = stateDirectory + "/" + Self.fileName
    }

    /// Replaced (a new file) after each revocation: its identity is `revocations()`.
    var revocationsPath: String { path + "-revocations" }

    public func revocations() -> String? {
        var status = stat()
        guard stat(revocationsPath, &status) == 0 else { return nil }
        return "\(status.st_ino).\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
    }

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE tokens (
                        id TEXT PRIMARY KEY NOT NULL,
                        hash TEXT NOT NULL UNIQUE,
                        scope TEXT NOT NULL,
                        agents TEXT NOT NULL,
                        created_at DATETIME NOT NULL,
                        created_by TEXT NOT NULL,
                        expires_at DATETIME,
                        revoked_at DATETIME
                    );
                    CREATE TABLE runs (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        id TEXT NOT NULL UNIQUE,
                        agent TEXT NOT NULL,
                        status TEXT NOT NULL,
                        prompt TEXT,
                        timeout_seconds INTEGER,
                        continue_session INTEGER NOT NULL,
                        idempotency_key TEXT,
                        token_id TEXT,
                        requested_by TEXT NOT NULL,
                        created_at DATETIME NOT NULL,
                        started_at DATETIME,
                        finished_at DATETIME,
                        record_id TEXT,
                        history_commit TEXT,
                        exit_status INTEGER,
                        message TEXT
                    );
                    CREATE UNIQUE INDEX runs_idempotency ON runs(token_id, idempotency_key)
                        WHERE idempotency_key IS NOT NULL;
                    CREATE INDEX runs_agent ON runs(agent, seq);
                    CREATE INDEX runs_status ON runs(status, seq);
                    """)
        }
        migrator.registerMigration("v2: triggers and schedules") { db in
            try db.execute(
                sql: """
                    ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'api';
                    CREATE TABLE schedule_events (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        agent TEXT NOT NULL,
                        due_at DATETIME NOT NULL,
                        outcome TEXT NOT NULL,
                        run_id TEXT,
                        message TEXT NOT NULL
                    );
                    CREATE INDEX schedule_events_agent ON schedule_events(agent, seq);
                    """)
        }
        migrator.registerMigration("v3: suspensions") { db in
            try db.execute(
                sql: """
                    CREATE TABLE suspensions (
                        agent TEXT PRIMARY KEY NOT NULL,
                        actor TEXT NOT NULL,
                        reason TEXT NOT NULL,
                        since DATETIME NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v4: deliveries") { db in
            try db.execute(
                sql: """
                    CREATE TABLE deliveries (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        id TEXT NOT NULL UNIQUE,
                        url TEXT NOT NULL,
                        type TEXT NOT NULL,
                        payload TEXT NOT NULL,
                        status TEXT NOT NULL,
                        attempts INTEGER NOT NULL,
                        last_status INTEGER,
                        last_error TEXT,
                        created_at DATETIME NOT NULL,
                        next_attempt_at DATETIME,
                        delivered_at DATETIME
                    );
                    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
                    """)
        }
        migrator.registerMigration("v5: conditions") { db in
            try db.execute(
                sql: """
                    CREATE TABLE conditions (
                        agent TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        status INTEGER NOT NULL,
                        reason TEXT NOT NULL,
                        message TEXT NOT NULL,
                        observed_commit TEXT,
                        since DATETIME NOT NULL,
                        PRIMARY KEY (agent, kind)
                    );
                    """)
        }
        return migrator
    }()

    func pool() throws -> DatabasePool {
        try opened.withLock { opened in
            if let opened { return opened }
            var configuration = Configuration()
            configuration.busyMode = .timeout(10)
            configuration.label = "agentry-service"
            do {
                let pool = try DatabasePool(path: path, configuration: configuration)
                if try pool.read({ try Self.migrator.hasBeenSuperseded($0) }) {
                    throw StateError(
                        code: .newerSchema,
                        message:
                            "\(path) was written by a newer agentry; upgrade agentry, or point --state-dir elsewhere")
                }
                try Self.migrator.migrate(pool)
                // Readers that saw the schema before the migration would prepare (and cache)
                // statements against it: they start afresh.
                pool.invalidateReadOnlyConnections()
                opened = pool
                return pool
            } catch let error as StateError {
                throw error
            } catch {
                throw SQLiteStateStore.describe(error, path: path)
            }
        }
    }

    func reading<T>(_ body: (Database) throws -> T) throws -> T {
        let pool = try pool()
        do { return try pool.read(body) } catch { throw SQLiteStateStore.describe(error, path: path) }
    }

    func writing<T>(_ body: (Database) throws -> T) throws -> T {
        let pool = try pool()
        do { return try pool.write(body) } catch { throw SQLiteStateStore.describe(error, path: path) }
    }

    // MARK: Tokens

    public func saveToken(_ token: APIToken, hash: String) throws {
        try writing { db in
            try db.execute(
                sql: """
                    INSERT INTO tokens (id, hash, scope, agents, created_at, created_by, expires_at, revoked_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    token.id, hash, token.scope.rawValue, token.agents.joined(separator: ","), token.createdAt,
                    token.createdBy, token.expiresAt, token.revokedAt,
                ])
        }
    }

    static func token(_ row: Row) -> APIToken? {
        guard let scope = TokenScope(rawValue: row["scope"]) else { return nil }
        let agents: String = row["agents"]
        return APIToken(
            id: row["id"], scope: scope, agents: agents.split(separator: ",").map(String.init),
            createdAt: row["created_at"], createdBy: row["created_by"], expiresAt: row["expires_at"],
            revokedAt: row["revoked_at"])
    }

    public func token(hash: String) throws -> APIToken? {
        try reading { db in
            try Self.one(db, "SELECT * FROM tokens WHERE hash = ?", [hash]).flatMap(Self.token)
        }
    }

    public func tokens() throws -> [APIToken] {
        try reading { db in
            try Row.fetchAll(db, sql: "SELECT * FROM tokens ORDER BY created_at, id").compactMap(Self.token)
        }
    }

    public func revokeToken(id: String, at time: Date) throws -> Bool {
        let found = try writing { db in
            guard try Row.fetchOne(db, sql: "SELECT id FROM tokens WHERE id = ?", arguments: [id]) != nil else {
                return false
            }
            try db.execute(
                sql: "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", arguments: [time, id])
            return true
        }
        guard found else { return false }
        // After the commit: a running service that sees the new file checks its tokens afresh.
        do {
            try Data(UUID().uuidString.utf8).write(to: URL(fileURLWithPath: revocationsPath), options: .atomic)
        } catch {
            throw StateError(
                code: .io,
                message:
                    "the token is revoked, but a running agentry serve could not be told (\(revocationsPath): \(error.localizedDescription)); restart it"
            )
        }
        return true
    }

    // MARK: Runs

    static func run(_ row: Row) -> ServiceRun? {
        guard let status = ServiceRunStatus(rawValue: row["status"]) else { return nil }
        var run = ServiceRun(
            id: row["id"], agent: row["agent"], status: status, prompt: row["prompt"],
            timeoutSeconds: row["timeout_seconds"], continueSession: row["continue_session"],
            idempotencyKey: row["idempotency_key"], tokenID: row["token_id"], requestedBy: row["requested_by"],
            createdAt: row["created_at"])
        run.startedAt = row["started_at"]
        run.finishedAt = row["finished_at"]
        run.recordID = row["record_id"]
        run.historyCommit = row["history_commit"]
        run.exitStatus = row["exit_status"]
        run.message = row["message"]
        run.trigger = row["trigger"]
        return run
    }

    public func submit(_ runs: [ServiceRun], queueLimit: Int) throws -> [(run: ServiceRun, created: Bool)?] {
        try writing { db in try runs.map { try Self.submit($0, queueLimit: queueLimit, db) } }
    }

    static func submit(_ run: ServiceRun, queueLimit: Int, _ db: Database) throws -> (run: ServiceRun, created: Bool)? {
        if let key = run.idempotencyKey,
            let existing = try Self.one(db, Self.runByKey, [run.tokenID, key]).flatMap(Self.run)
        {
            return (existing, false)
        }
        if try Self.count(db, Self.queuedOfAgent, [run.agent, run.agent]) >= queueLimit { return nil }
        try db.cachedStatement(
            sql: """
                INSERT INTO runs (id, agent, status, prompt, timeout_seconds, continue_session, idempotency_key,
                    token_id, requested_by, created_at, trigger)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                run.id, run.agent, run.status.rawValue, run.prompt, run.timeoutSeconds, run.continueSession,
                run.idempotencyKey, run.tokenID, run.requestedBy, run.createdAt, run.trigger,
            ])
        return (run, true)
    }

    public func run(id: String) throws -> ServiceRun? {
        try reading { db in try Self.one(db, "SELECT * FROM runs WHERE id = ?", [id]).flatMap(Self.run) }
    }

    public func run(idempotencyKey key: String, tokenID: String?) throws -> ServiceRun? {
        try reading { db in try Self.one(db, Self.runByKey, [tokenID, key]).flatMap(Self.run) }
    }

    static let runByKey = "SELECT * FROM runs WHERE token_id IS ? AND idempotency_key = ?"
    static let queuedOfAgent = "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND (? IS NULL OR agent = ?)"

    /// The first row of a statement compiled once per connection: the queries every request and
    /// every event stream's look make (GRDB authorizes each compilation, column by column).
    static func one(_ db: Database, _ sql: String, _ arguments: StatementArguments) throws -> Row? {
        try Row.fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func count(_ db: Database, _ sql: String, _ arguments: StatementArguments) throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: sql), arguments: arguments) ?? 0
    }

    public func queuedHeads() throws -> [(id: String, agent: String)] {
        try reading { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, agent FROM runs WHERE seq IN
                        (SELECT MIN(seq) FROM runs WHERE status = 'queued' GROUP BY agent)
                    ORDER BY seq
                    """
            ).map { (id: $0["id"], agent: $0["agent"]) }
        }
    }

    public func queuedCount(agent: String?) throws -> Int {
        try reading { db in
            try Self.count(db, Self.queuedOfAgent, [agent, agent])
        }
    }

    public func runs(agent: String?, statuses: Set<ServiceRunStatus>?, limit: Int, before: String?) throws
        -> [ServiceRun]
    {
        try reading { db in
            var clauses: [String] = []
            var arguments: StatementArguments = []
            if let agent {
                clauses.append("agent = ?")
                _ = arguments.append(contentsOf: [agent])
            }
            if let statuses {
                clauses.append("status IN (\(statuses.map { _ in "?" }.joined(separator: ",")))")
                _ = arguments.append(contentsOf: StatementArguments(statuses.map(\.rawValue)))
            }
            if let before {
                clauses.append("seq < (SELECT seq FROM runs WHERE id = ?)")
                _ = arguments.append(contentsOf: [before])
            }
            let filter = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Row.fetchAll(
                db, sql: "SELECT * FROM runs \(filter) ORDER BY seq DESC LIMIT \(max(0, min(limit, Int(Int32.max))))",
                arguments: arguments
            ).compactMap(Self.run)
        }
    }

    public func update(_ run: ServiceRun) throws {
        _ = try writing { try Self.write(run, ifStatus: nil, $0) }
    }

    public func update(_ run: ServiceRun, ifStatus status: ServiceRunStatus) throws -> Bool {
        try writing { try Self.write(run, ifStatus: status, $0) }
    }

    public func end(_ run: ServiceRun, ifStatus status: ServiceRunStatus?, announcing deliveries: [Delivery]) throws
        -> Bool
    {
        try writing { db in
            guard try Self.write(run, ifStatus: status, db) else { return false }
            try Self.insert(deliveries, db)
            return true
        }
    }

    /// The run's row, when its status is `status` (any, when nil); whether it was written.
    static func write(_ run: ServiceRun, ifStatus status: ServiceRunStatus?, _ db: Database) throws -> Bool {
        try db.execute(
            sql: """
                UPDATE runs SET status = ?, started_at = ?, finished_at = ?, record_id = ?, history_commit = ?,
                    exit_status = ?, message = ?
                WHERE id = ? AND (? IS NULL OR status = ?)
                """,
            arguments: [
                run.status.rawValue, run.startedAt, run.finishedAt, run.recordID, run.historyCommit,
                run.exitStatus, run.message, run.id, status?.rawValue, status?.rawValue,
            ])
        return db.changesCount > 0
    }

    // MARK: Schedules

    /// Schedule events kept per agent (the oldest go): a schedule fires forever.
    public static let keptScheduleEvents = 1000
    /// Finished deliveries kept (the oldest go).
    public static let keptDeliveries = 10000

    public func recordScheduleEvent(_ event: ScheduleEvent) throws {
        try writing { db in
            try db.execute(
                sql: "INSERT INTO schedule_events (agent, due_at, outcome, run_id, message) VALUES (?, ?, ?, ?, ?)",
                arguments: [event.agent, event.dueAt, event.outcome.rawValue, event.runID, event.message])
            try db.execute(
                sql: """
                    DELETE FROM schedule_events WHERE agent = ? AND seq <=
                        (SELECT seq FROM schedule_events WHERE agent = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)
                    """, arguments: [event.agent, event.agent, Self.keptScheduleEvents])
        }
    }

    public func scheduleEvents(agent: String, limit: Int) throws -> [ScheduleEvent] {
        try reading { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM schedule_events WHERE agent = ? ORDER BY seq DESC LIMIT ?",
                arguments: [agent, max(0, min(limit, Int(Int32.max)))]
            ).compactMap { row in
                guard let outcome = ScheduleEvent.Outcome(rawValue: row["outcome"]) else { return nil }
                return ScheduleEvent(
                    agent: row["agent"], dueAt: row["due_at"], outcome: outcome, runID: row["run_id"],
                    message: row["message"])
            }
        }
    }

    public func skippedCount(agent: String) throws -> Int {
        try reading { db in
            try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM schedule_events WHERE agent = ? AND outcome = 'skipped'",
                arguments: [agent]) ?? 0
        }
    }

    // MARK: Suspensions

    /// The row key of the whole service's suspension (agent names are DNS labels, never `*`).
    static let everyAgent = "*"

    static func suspension(_ row: Row) -> Suspension {
        let agent: String = row["agent"]
        return Suspension(
            agent: agent == everyAgent ? nil : agent, actor: row["actor"], reason: row["reason"], since: row["since"])
    }

    public func suspend(_ suspension: Suspension) throws -> (suspension: Suspension, created: Bool) {
        try writing { db in
            let key = suspension.agent ?? Self.everyAgent
            if let existing = try Row.fetchOne(db, sql: "SELECT * FROM suspensions WHERE agent = ?", arguments: [key]) {
                return (Self.suspension(existing), false)
            }
            try db.execute(
                sql: "INSERT INTO suspensions (agent, actor, reason, since) VALUES (?, ?, ?, ?)",
                arguments: [key, suspension.actor, suspension.reason, suspension.since])
            return (suspension, true)
        }
    }

    public func resume(agent: String?) throws -> Bool {
        try writing { db in
            try db.execute(sql: "DELETE FROM suspensions WHERE agent = ?", arguments: [agent ?? Self.everyAgent])
            return db.changesCount > 0
        }
    }

    public func suspensions() throws -> [Suspension] {
        try reading { db in
            try Row.fetchAll(db, sql: "SELECT * FROM suspensions ORDER BY agent").map(Self.suspension)
        }
    }

    // MARK: Conditions

    public func conditions() throws -> [String: [AgentCondition]] {
        try reading { db in
            var conditions: [String: [AgentCondition]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM conditions ORDER BY agent") {
                let agent: String = row["agent"]
                // What the database says is checked like any other input: a row of no known kind,
                // or of no agent name, is left out.
                guard ResourceName.isValid(agent), let kind = AgentCondition.Kind(rawValue: row["kind"]) else {
                    continue
                }
                conditions[agent, default: []].append(
                    AgentCondition(
                        kind: kind, status: row["status"], reason: row["reason"], message: row["message"],
                        observedCommit: row["observed_commit"], since: row["since"]))
            }
            return conditions.mapValues { list in
                list.sorted { AgentCondition.Kind.order($0.kind) < AgentCondition.Kind.order($1.kind) }
            }
        }
    }

    public func saveConditions(_ changed: [String: [AgentCondition]]) throws {
        guard !changed.isEmpty else { return }
        try writing { db in
            for (agent, list) in changed {
                try db.execute(sql: "DELETE FROM conditions WHERE agent = ?", arguments: [agent])
                for condition in list {
                    try db.execute(
                        sql: """
                            INSERT INTO conditions (agent, kind, status, reason, message, observed_commit, since)
                            VALUES (?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            agent, condition.kind.rawValue, condition.status, condition.reason, condition.message,
                            condition.observedCommit, condition.since,
                        ])
                }
            }
        }
    }

    // MARK: Deliveries

    static func delivery(_ row: Row) -> Delivery? {
        guard let status = Delivery.Status(rawValue: row["status"]) else { return nil }
        var delivery = Delivery(
            id: row["id"], url: row["url"], type: row["type"], payload: row["payload"], createdAt: row["created_at"])
        delivery.status = status
        delivery.attempts = row["attempts"]
        delivery.lastStatus = row["last_status"]
        delivery.lastError = row["last_error"]
        delivery.nextAttemptAt = row["next_attempt_at"]
        delivery.deliveredAt = row["delivered_at"]
        return delivery
    }

    public func enqueue(_ deliveries: [Delivery]) throws {
        try writing { try Self.insert(deliveries, $0) }
    }

    /// Stores `deliveries`, and lets the oldest finished ones beyond `keptDeliveries` go.
    static func insert(_ deliveries: [Delivery], _ db: Database) throws {
        guard !deliveries.isEmpty else { return }
        try db.execute(
            sql: """
                DELETE FROM deliveries WHERE status != 'pending' AND seq <=
                    (SELECT seq FROM deliveries WHERE status != 'pending' ORDER BY seq DESC LIMIT 1 OFFSET ?)
                """, arguments: [Self.keptDeliveries])
        for delivery in deliveries {
            try db.execute(
                sql: """
                    INSERT INTO deliveries (id, url, type, payload, status, attempts, last_status, last_error,
                        created_at, next_attempt_at, delivered_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    delivery.id, delivery.url, delivery.type, delivery.payload, delivery.status.rawValue,
                    delivery.attempts, delivery.lastStatus, delivery.lastError, delivery.createdAt,
                    delivery.nextAttemptAt, delivery.deliveredAt,
                ])
        }
    }

    public func dueDeliveries(at time: Date, limit: Int) throws -> [Delivery] {
        try reading { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?
                    ORDER BY next_attempt_at, seq LIMIT ?
                    """, arguments: [time, max(0, min(limit, 1000))]
            ).compactMap(Self.delivery)
        }
    }

    public func nextDeliveryTime() throws -> Date? {
        try reading { db in
            try Date.fetchOne(db, sql: "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'")
        }
    }

    public func update(_ delivery: Delivery) throws {
        try writing { db in
            try db.execute(
                sql: """
                    UPDATE deliveries SET status = ?, attempts = ?, last_status = ?, last_error = ?,
                        next_attempt_at = ?, delivered_at = ?
                    WHERE id = ?
                    """,
                arguments: [
                    delivery.status.rawValue, delivery.attempts, delivery.lastStatus, delivery.lastError,
                    delivery.nextAttemptAt, delivery.deliveredAt, delivery.id,
                ])
        }
    }

    public func deliveries(limit: Int, before: String?) throws -> [Delivery] {
        try reading { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM deliveries
                    WHERE (? IS NULL OR seq < (SELECT seq FROM deliveries WHERE id = ?))
                    ORDER BY seq DESC LIMIT ?
                    """, arguments: [before, before, max(0, min(limit, 1000))]
            ).compactMap(Self.delivery)
        }
    }
}
