import AgentryCore
import Foundation
import GRDB

extension AgentRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "agents"
}

extension EventRecord: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "events"

    public mutating func didInsert(_ inserted: InsertionSuccess) {
        id = inserted.rowID
    }
}

extension SQLiteStateStore {
    // MARK: - Agents

    public func agents() throws -> [AgentRecord] {
        let records = try reading([]) { db in try AgentRecord.order(Column("name")).fetchAll(db) }
        try Self.checked(records.map(\.name))
        return records
    }

    /// Names read back from the database become paths and guest names: one that is not an agent
    /// name (a database changed outside agentry) stops the command, naming it.
    @discardableResult
    static func checked(_ names: [String]) throws -> [String] {
        if let bad = names.first(where: { !ResourceName.isValid($0) }) {
            throw StateError(
                code: .corrupt,
                message:
                    "the state database holds an agent named \(bad.debugDescription), which is not an agent name (a DNS label); it was changed outside agentry"
            )
        }
        return names
    }

    public func appliedAgents(fields: Bool) throws -> [AppliedAgent] {
        let rows: [AppliedAgent] = try reading([]) { db in
            let cursor = try Row.fetchCursor(
                db,
                sql:
                    "SELECT name, applied_revision, lifecycle, deletion_policy, machine_state\(fields ? ", applied_fields" : "") FROM agents"
            )
            var rows: [AppliedAgent] = []
            while let row = try cursor.next() {
                rows.append(
                    AppliedAgent(
                        name: row[0], revision: row[1], lifecycle: row[2], deletionPolicy: row[3], machineState: row[4],
                        fieldsJSON: fields ? row[5] : nil))
            }
            return rows
        }
        try Self.checked(rows.map(\.name))
        return rows
    }

    public func appliedFields(of names: Set<String>) throws -> [String: String] {
        try reading([:]) { db in
            var fields: [String: String] = [:]
            // A few are looked up; many are read in one pass.
            if names.count <= 64 {
                let select = try db.cachedStatement(sql: "SELECT applied_fields FROM agents WHERE name = ?")
                for name in names {
                    if let stored = try String.fetchOne(select, arguments: [name]) { fields[name] = stored }
                }
            } else {
                let cursor = try Row.fetchCursor(db, sql: "SELECT name, applied_fields FROM agents")
                while let row = try cursor.next() {
                    let name: String = row[0]
                    if names.contains(name) { fields[name] = row[1] }
                }
            }
            return fields
        }
    }

    public func agent(_ name: String) throws -> AgentRecord? {
        try reading(nil) { db in try AgentRecord.fetchOne(db, key: name) }
    }

    public func save(_ record: AgentRecord) throws {
        let pool = try writer()
        try describing { try pool.write { db in try record.save(db) } }
    }

    public func removeAgent(_ name: String) throws {
        let pool = try writer()
        _ = try describing { try pool.write { db in try AgentRecord.deleteOne(db, key: name) } }
    }

    // MARK: - Kill switch

    public func killSwitch(_ name: String) throws -> KillSwitch? {
        try reading(nil) { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT reason, actor, time FROM kill_switch WHERE name = ?"),
                    arguments: [name])
            else { return nil }
            return KillSwitch(reason: row["reason"], actor: row["actor"], time: row["time"])
        }
    }

    public func killedAgents() throws -> Set<String> {
        Set(try Self.checked(try reading([]) { db in try String.fetchAll(db, sql: "SELECT name FROM kill_switch") }))
    }

    public func setKillSwitch(_ name: String, reason: String?, actor: String, at time: Date) throws {
        guard let pool = try pool(create: true) else { return }
        try describing {
            try pool.write { db in
                if let reason {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO kill_switch (name, reason, actor, time) VALUES (?, ?, ?, ?)",
                        arguments: [name, reason, actor, time])
                } else {
                    try db.execute(sql: "DELETE FROM kill_switch WHERE name = ?", arguments: [name])
                }
                var event = EventRecord(
                    time: time, agent: name, kind: reason == nil ? "unkill" : "kill", actor: actor,
                    message: reason.map { "killed: \($0)" } ?? "kill switch lifted")
                try event.insert(db)
            }
        }
    }

    // MARK: - Events

    public func append(_ event: EventRecord) throws {
        let pool = try writer()
        try describing {
            try pool.write { db in
                var event = event
                try event.insert(db)
            }
        }
    }

    public func events(agent: String?, limit: Int) throws -> [EventRecord] {
        try reading([]) { db in
            var request = EventRecord.order(Column("id").desc).limit(limit)
            if let agent { request = request.filter(Column("agent") == agent) }
            return try request.fetchAll(db)
        }
    }
}

extension SQLiteStateStore {
    // MARK: - Settings

    public func setting(_ key: String) throws -> String? {
        try reading(nil) { db in
            try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key])
        }
    }

    public func setSetting(_ key: String, _ value: String?) throws {
        let pool = try writer()
        try describing {
            try pool.write { db in
                if let value {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", arguments: [key, value])
                } else {
                    try db.execute(sql: "DELETE FROM settings WHERE key = ?", arguments: [key])
                }
            }
        }
    }

    // MARK: - The audit journal

    struct AuditHeader: Codable {
        var desiredCommit, ref, summary, actor, repository, branch: String
        var pid: Int32?
        var host: String?
    }

    /// Whether the process `pid` of `host` is this host's and alive (an agentry, by its name; a
    /// killed one its parent has not reaped yet is not).
    static func isAlive(pid: Int32?, host: String?) -> Bool {
        guard let pid, pid > 0, host == ProcessInfo.processInfo.hostName else { return false }
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? ""
        let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        // `pid (comm) S ...`: the state follows the last parenthesis.
        let processState = status.split(separator: ")").last?.split(separator: " ").first ?? "?"
        return name.hasPrefix("agentry") && processState != "Z" && processState != "X"
    }

    public func beginAudit(_ audit: PendingAudit) throws {
        let pool = try writer()
        let header = AuditHeader(
            desiredCommit: audit.desiredCommit, ref: audit.ref, summary: audit.summary, actor: audit.actor,
            repository: audit.repository, branch: audit.branch, pid: audit.pid, host: audit.host)
        let text = String(decoding: try JSONEncoder().encode(header), as: UTF8.self)
        try describing {
            try pool.write { db in
                try db.execute(
                    sql:
                        "INSERT OR REPLACE INTO pending_audits (apply_id, header, steps, started_at) VALUES (?, ?, ?, ?)",
                    arguments: [audit.id, text, audit.steps.map { $0 + "\n" }.joined(), audit.startedAt])
            }
        }
    }

    public func appendAudit(_ id: String, step: String) throws {
        let pool = try writer()
        try describing {
            try pool.write { db in
                try db.execute(
                    sql: "UPDATE pending_audits SET steps = steps || ? WHERE apply_id = ?",
                    arguments: [step + "\n", id])
            }
        }
    }

    public func pendingAudits() throws -> [PendingAudit] {
        try reading([]) { db in
            try Row.fetchAll(
                db, sql: "SELECT apply_id, header, steps, started_at FROM pending_audits ORDER BY started_at"
            )
            .compactMap { row -> PendingAudit? in
                let text: String = row["header"]
                guard let header = try? JSONDecoder().decode(AuditHeader.self, from: Data(text.utf8)) else {
                    return nil
                }
                let steps: String = row["steps"]
                var audit = PendingAudit(
                    id: row["apply_id"], desiredCommit: header.desiredCommit, ref: header.ref, summary: header.summary,
                    actor: header.actor, repository: header.repository, branch: header.branch,
                    startedAt: row["started_at"], steps: steps.split(separator: "\n").map(String.init),
                    pid: header.pid, host: header.host)
                audit.live = Self.isAlive(pid: header.pid, host: header.host)
                return audit
            }
        }
    }

    public func finishAudit(_ id: String) throws {
        let pool = try writer()
        try describing {
            try pool.write { db in try db.execute(sql: "DELETE FROM pending_audits WHERE apply_id = ?", arguments: [id])
            }
        }
    }
}
