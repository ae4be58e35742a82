import Foundation
import GRDB

#if canImport(Glibc)
    import Glibc
#endif

/// A state store failure, with what to do about it.
public struct StateError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// Another process holds the writer lock.
        case locked(pid: Int32?)
        /// The database was written by a newer agentry.
        case newerSchema
        /// The file is not a readable agentry database.
        case corrupt
        case io
    }

    public var code: Code
    public var message: String

    public var description: String { message }
}

/// One agent's row in the state database.
public struct AgentRecord: Sendable, Hashable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "agents"

    public var name: String
    public var appliedRevision: String
    /// The applied resolved fields as a JSON array of `[field, value]` pairs.
    public var appliedFields: String
    public var appliedCommit: String
    public var lifecycle: String
    public var deletionPolicy: String
    public var machineID: String?
    public var machineState: String?
    /// `kvm` or `tcg` once the machine has booted.
    public var accelerator: String?
    public var updatedAt: Date
    public var lastRunAt: Date?

    public init(
        name: String, appliedRevision: String, appliedFields: [(String, String)], appliedCommit: String,
        lifecycle: String, deletionPolicy: String, machineID: String? = nil, machineState: String? = nil,
        accelerator: String? = nil, updatedAt: Date = Date(), lastRunAt: Date? = nil
    ) {
        self.name = name
        self.appliedRevision = appliedRevision
        self.appliedFields = Self.encode(appliedFields)
        self.appliedCommit = appliedCommit
        self.lifecycle = lifecycle
        self.deletionPolicy = deletionPolicy
        self.machineID = machineID
        self.machineState = machineState
        self.accelerator = accelerator
        self.updatedAt = updatedAt
        self.lastRunAt = lastRunAt
    }

    enum CodingKeys: String, CodingKey {
        case name
        case appliedRevision = "applied_revision"
        case appliedFields = "applied_fields"
        case appliedCommit = "applied_commit"
        case lifecycle
        case deletionPolicy = "deletion_policy"
        case machineID = "machine_id"
        case machineState = "machine_state"
        case accelerator
        case updatedAt = "updated_at"
        case lastRunAt = "last_run_at"
    }

    /// Decodes applied fields stored by `AgentRecord`.
    public static func decodeFields(_ json: String) -> [(String, String)] {
        guard let pairs = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String]] else { return [] }
        return pairs.compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
    }

    static func encode(_ fields: [(String, String)]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: fields.map { [$0.0, $0.1] })) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The applied fields, decoded.
    public var fields: [(String, String)] { Self.decodeFields(appliedFields) }
}

/// An entry of the event log: who did what to which agent, and why.
public struct EventRecord: Sendable, Hashable, Codable, FetchableRecord {
    public static let databaseTableName = "events"

    public var id: Int64?
    public var time: Date
    public var agent: String?
    public var kind: String
    public var actor: String
    public var message: String

    public init(time: Date = Date(), agent: String?, kind: String, actor: String, message: String) {
        self.time = time
        self.agent = agent
        self.kind = kind
        self.actor = actor
        self.message = message
    }
}

/// The actual-state database (`state.sqlite`, WAL) in the state directory.
///
/// Any number of readers; one writer at a time, by an exclusive lock on `state.lock` that holds the
/// writer's pid, so a second writer fails at once naming the holder. Readers are never blocked.
public final class StateStore: @unchecked Sendable {
    public let directory: String
    let pool: DatabasePool
    /// The writer lock's file descriptor, while this store holds it.
    private var lockDescriptor: Int32?

    public static let databaseName = "state.sqlite"
    public static let lockName = "state.lock"

    /// `--state-dir`, else `AGENTRY_STATE_DIR`, else `/var/lib/agentry` as root, else
    /// `$XDG_STATE_HOME/agentry` (`~/.local/state/agentry`).
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["AGENTRY_STATE_DIR"], !explicit.isEmpty { return explicit }
        if getuid() == 0 { return "/var/lib/agentry" }
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty { return xdg + "/agentry" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state/agentry"
    }

    private init(directory: String, pool: DatabasePool) {
        self.directory = directory
        self.pool = pool
    }

    deinit {
        if let lockDescriptor { close(lockDescriptor) }
    }

    /// Opens an existing state database without the writer lock; nil when there is none yet.
    /// Readers are never blocked by a writer.
    public static func openForReading(_ directory: String) throws -> StateStore? {
        let path = directory + "/" + databaseName
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try open(directory: directory)
    }

    /// Opens the state database without the writer lock, creating it (briefly under the lock) when
    /// it does not exist yet.
    public static func openCreating(_ directory: String) throws -> StateStore {
        if let store = try openForReading(directory) { return store }
        return try openForWriting(directory).releasingWriterLock()
    }

    /// Opens (creating if needed) the state database and holds the writer lock until the store is
    /// released; fails at once, naming the holder's pid, when another process holds it.
    public static func openForWriting(_ directory: String) throws -> StateStore {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw StateError(code: .io, message: "cannot create the state directory \(directory): \(error.localizedDescription)")
        }
        let descriptor = try acquireLock(directory)
        do {
            let store = try open(directory: directory, holdingLock: descriptor)
            store.lockDescriptor = descriptor
            return store
        } catch {
            close(descriptor)
            throw error
        }
    }

    func releasingWriterLock() -> StateStore {
        if let lockDescriptor { close(lockDescriptor) }
        lockDescriptor = nil
        return self
    }

    /// Runs `body` under the writer lock, taking it briefly if this store does not hold it. Returns
    /// false, without running `body`, when another process holds the lock.
    @discardableResult
    public func withWriterLockIfFree(_ body: () throws -> Void) rethrows -> Bool {
        if lockDescriptor != nil {
            try body()
            return true
        }
        guard let descriptor = try? Self.acquireLock(directory) else { return false }
        lockDescriptor = descriptor
        defer { _ = releasingWriterLock() }
        try body()
        return true
    }

    static func acquireLock(_ directory: String) throws -> Int32 {
        let path = directory + "/" + lockName
        let descriptor = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StateError(code: .io, message: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(descriptor, &buffer, buffer.count, 0)
            close(descriptor)
            let pid = count > 0 ? Int32(String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) : nil
            let holder = pid.map { "process \($0)" } ?? "another process"
            throw StateError(
                code: .locked(pid: pid),
                message: "the state in \(directory) is locked by \(holder) (another agentry apply or reconcile is writing); try again when it finishes")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pwrite(descriptor, pid, pid.count, 0)
        return descriptor
    }

    static func open(directory: String, holdingLock: Int32? = nil) throws -> StateStore {
        let path = directory + "/" + databaseName
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "agentry-state"
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw describe(error, path: path)
        }
        let store = StateStore(directory: directory, pool: pool)
        do {
            let (superseded, complete) = try pool.read { db in
                (try migrator.hasBeenSuperseded(db), try migrator.hasCompletedMigrations(db))
            }
            if superseded {
                throw StateError(
                    code: .newerSchema,
                    message: "\(path) was written by a newer agentry (its schema has migrations this version does not know); upgrade agentry, or point --state-dir elsewhere")
            }
            if !complete {
                // Migrating is writing: only under the writer lock.
                if holdingLock != nil {
                    try migrator.migrate(pool)
                } else {
                    let descriptor = try acquireLock(directory)
                    defer { close(descriptor) }
                    try migrator.migrate(pool)
                }
            }
        } catch let error as StateError {
            throw error
        } catch {
            throw describe(error, path: path)
        }
        return store
    }

    static func describe(_ error: Error, path: String) -> StateError {
        if let database = error as? DatabaseError,
            database.resultCode == .SQLITE_NOTADB || database.resultCode == .SQLITE_CORRUPT
        {
            return StateError(
                code: .corrupt,
                message: "\(path) is not a readable agentry state database (\(database.message ?? "corrupt")); move it aside to start afresh")
        }
        return StateError(code: .io, message: "cannot use \(path): \(error)")
    }

    /// Schema versions. Never edit a shipped migration: add the next one.
    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE agents (
                        name TEXT PRIMARY KEY NOT NULL,
                        applied_revision TEXT NOT NULL,
                        applied_fields TEXT NOT NULL DEFAULT '[]',
                        applied_commit TEXT NOT NULL,
                        lifecycle TEXT NOT NULL,
                        deletion_policy TEXT NOT NULL,
                        machine_id TEXT,
                        machine_state TEXT,
                        updated_at DATETIME NOT NULL
                    );
                    CREATE TABLE events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        time DATETIME NOT NULL,
                        agent TEXT,
                        kind TEXT NOT NULL,
                        actor TEXT NOT NULL,
                        message TEXT NOT NULL
                    );
                    CREATE INDEX events_agent ON events(agent, id);
                    """)
        }
        migrator.registerMigration("v2") { db in
            try db.execute(
                sql: """
                    ALTER TABLE agents ADD COLUMN accelerator TEXT;
                    ALTER TABLE agents ADD COLUMN last_run_at DATETIME;
                    CREATE TABLE parse_snapshots (
                        key TEXT PRIMARY KEY NOT NULL,
                        source TEXT NOT NULL,
                        created_at DATETIME NOT NULL,
                        data BLOB NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v3") { db in
            // Per-file parse results, consistent with the repository's derived snapshot.
            try db.execute(
                sql: """
                    CREATE TABLE parse_cache (
                        repository TEXT NOT NULL,
                        path TEXT NOT NULL,
                        blob_id TEXT NOT NULL,
                        result BLOB NOT NULL,
                        PRIMARY KEY (repository, path)
                    );
                    """)
        }
        migrator.registerMigration("v4") { db in
            // The operator's kill switch: an agent listed here is stopped and never started again
            // until it is removed (agentry unkill).
            try db.execute(
                sql: """
                    CREATE TABLE kill_switch (
                        name TEXT PRIMARY KEY NOT NULL,
                        reason TEXT NOT NULL,
                        actor TEXT NOT NULL,
                        time DATETIME NOT NULL
                    );
                    """)
        }
        return migrator
    }()

    /// The schema versions this agentry knows, oldest first.
    public static var schemaVersions: [String] { migrator.migrations }

    func requireWriter() throws {
        guard lockDescriptor != nil else {
            throw StateError(code: .io, message: "internal: the state store was opened for reading only")
        }
    }

    // MARK: - Agents

    public func agents() throws -> [AgentRecord] {
        try pool.read { db in try AgentRecord.order(Column("name")).fetchAll(db) }
    }

    /// What planning reads of every agent, without decoding whole records: name, applied revision,
    /// lifecycle, deletion policy, machine state, and the applied fields as stored (JSON).
    public func appliedAgents() throws -> [(name: String, revision: String, lifecycle: String, deletionPolicy: String, machineState: String?, fieldsJSON: String)] {
        try pool.read { db in
            let cursor = try Row.fetchCursor(
                db,
                sql: "SELECT name, applied_revision, lifecycle, deletion_policy, machine_state, applied_fields FROM agents")
            var rows: [(String, String, String, String, String?, String)] = []
            while let row = try cursor.next() { rows.append((row[0], row[1], row[2], row[3], row[4], row[5])) }
            return rows
        }
    }

    public func agent(_ name: String) throws -> AgentRecord? {
        try pool.read { db in try AgentRecord.fetchOne(db, key: name) }
    }

    public func save(_ record: AgentRecord) throws {
        try requireWriter()
        try pool.write { db in try record.save(db) }
    }

    public func removeAgent(_ name: String) throws {
        try requireWriter()
        _ = try pool.write { db in try AgentRecord.deleteOne(db, key: name) }
    }

    // MARK: - Kill switch

    /// Why an agent is killed, when it is.
    public func killSwitch(_ name: String) throws -> (reason: String, actor: String, time: Date)? {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT reason, actor, time FROM kill_switch WHERE name = ?", arguments: [name])
            else { return nil }
            return (row["reason"], row["actor"], row["time"])
        }
    }

    public func killedAgents() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, sql: "SELECT name FROM kill_switch")) }
    }

    /// Sets or clears the kill switch, with an event saying who and why. Deliberately not behind the
    /// writer lock: an operator stops an agent at once, even while an apply runs (SQLite serialises
    /// the two writes; apply reads the switch before it starts any machine).
    public func setKillSwitch(_ name: String, reason: String?, actor: String) throws {
        try pool.write { db in
            if let reason {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO kill_switch (name, reason, actor, time) VALUES (?, ?, ?, ?)",
                    arguments: [name, reason, actor, Date()])
            } else {
                try db.execute(sql: "DELETE FROM kill_switch WHERE name = ?", arguments: [name])
            }
            var event = EventRecord(
                agent: name, kind: reason == nil ? "unkill" : "kill", actor: actor,
                message: reason.map { "killed: \($0)" } ?? "kill switch lifted")
            try event.insert(db)
        }
    }

    // MARK: - Events

    public func append(_ event: EventRecord) throws {
        try requireWriter()
        try pool.write { db in
            var event = event
            try event.insert(db)
        }
    }

    /// Newest first.
    public func events(agent: String? = nil, limit: Int = 100) throws -> [EventRecord] {
        try pool.read { db in
            var request = EventRecord.order(Column("id").desc).limit(limit)
            if let agent { request = request.filter(Column("agent") == agent) }
            return try request.fetchAll(db)
        }
    }

    // MARK: - Parse snapshots (the loader's cache, by blob id)

    /// The cached snapshot for `key` (the agent repository's identity), with the source it was made from.
    public func snapshot(key: String) throws -> (source: String, data: Data)? {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT source, data FROM parse_snapshots WHERE key = ?", arguments: [key])
            else { return nil }
            return (row["source"], row["data"])
        }
    }

    /// Stores a snapshot with the per-file results that changed since the last one (`removed` paths
    /// are dropped; `replaceAll` first clears the repository's rows), in one transaction. Needs the
    /// writer lock: callers skip caching when another writer holds it.
    public func saveSnapshot(
        key: String, source: String, data: Data, files: [(path: String, blobID: String, result: Data)],
        removed: [String] = [], replaceAll: Bool = false
    ) throws {
        try requireWriter()
        try pool.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO parse_snapshots (key, source, created_at, data) VALUES (?, ?, ?, ?)",
                arguments: [key, source, Date(), data])
            if replaceAll {
                try db.execute(sql: "DELETE FROM parse_cache WHERE repository = ?", arguments: [key])
            }
            for path in removed {
                try db.execute(sql: "DELETE FROM parse_cache WHERE repository = ? AND path = ?", arguments: [key, path])
            }
            let insert = try db.makeStatement(
                sql: "INSERT OR REPLACE INTO parse_cache (repository, path, blob_id, result) VALUES (?, ?, ?, ?)")
            for file in files {
                try insert.execute(arguments: [key, file.path, file.blobID, file.result])
            }
        }
    }

    /// Per-file parse results of a repository: all of them, or those of `paths`.
    public func cachedFiles(key: String, paths: [String]? = nil) throws -> [(path: String, blobID: String, result: Data)] {
        try pool.read { db in
            var rows: [(String, String, Data)] = []
            if let paths {
                let select = try db.makeStatement(
                    sql: "SELECT path, blob_id, result FROM parse_cache WHERE repository = ? AND path = ?")
                for path in paths {
                    if let row = try Row.fetchOne(select, arguments: [key, path]) {
                        rows.append((row[0], row[1], row[2]))
                    }
                }
            } else {
                let cursor = try Row.fetchCursor(
                    db, sql: "SELECT path, blob_id, result FROM parse_cache WHERE repository = ?", arguments: [key])
                while let row = try cursor.next() { rows.append((row[0], row[1], row[2])) }
            }
            return rows
        }
    }
}

extension EventRecord: MutablePersistableRecord {
    public mutating func didInsert(_ inserted: InsertionSuccess) {
        id = inserted.rowID
    }
}
