import AgentryCore
import AgentryState
import Foundation
import GRDB
import TestSupport
import Testing

@Suite struct StateStoreTests {
    func record(_ name: String) -> AgentRecord {
        AgentRecord(
            name: name, appliedRevision: "r1", appliedFields: [("model", "sonnet"), ("secrets.T", "ref a/b")],
            appliedCommit: "c1", lifecycle: "active", deletionPolicy: "retain", updatedAt: Date())
    }

    func event(_ agent: String?, _ kind: String, _ actor: String, _ message: String) -> EventRecord {
        EventRecord(time: Date(), agent: agent, kind: kind, actor: actor, message: message)
    }

    @Test func storesAgentsAndEventsInAWALDatabase() throws {
        let directory = try TemporaryDirectory()
        let store = SQLiteStateStore(directory: directory.path + "/state")
        #expect(!store.exists)
        #expect(try store.agents().isEmpty, "no database yet: an empty state, nothing created")
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/state"))
        #expect(throws: StateError.self, "writes need the writer lock") { try store.save(record("triage")) }
        let lock = try store.lockForWriting()
        try store.save(record("triage"))
        try store.append(event("triage", "kill", "ana", "leaking tokens"))
        try store.append(event(nil, "apply", "ci", "applied c1"))
        lock.release()
        #expect(store.exists)
        #expect(try store.agents().map(\.name) == ["triage"])
        #expect(try store.agent("triage")?.fields.first?.1 == "sonnet")
        #expect(try store.events(agent: nil, limit: 100).map(\.kind) == ["apply", "kill"], "newest first")
        #expect(try store.events(agent: "triage", limit: 100).map(\.actor) == ["ana"])

        let mode = try DatabaseQueue(path: directory.path + "/state/state.sqlite").read { db in
            try String.fetchOne(db, sql: "PRAGMA journal_mode")
        }
        #expect(mode == "wal")
    }

    @Test func appliedFieldsAreReadForTheAgentsAskedFor() throws {
        let directory = try TemporaryDirectory()
        let store = SQLiteStateStore(directory: directory.path + "/state")
        let lock = try store.lockForWriting()
        let names = (0..<100).map { "agent-\($0)" }
        for name in names {
            try store.save(
                AgentRecord(
                    name: name, appliedRevision: "r1", appliedFields: [("model", "model-of-\(name)")],
                    appliedCommit: "c1", lifecycle: "active", deletionPolicy: "retain", updatedAt: Date()))
        }
        lock.release()
        #expect(try store.appliedAgents(fields: false).allSatisfy { $0.fieldsJSON == nil }, "a plan reads them later")
        let all = try store.appliedAgents(fields: true)
        #expect(all.count == 100 && all.allSatisfy { $0.fieldsJSON?.contains("model-of-\($0.name)") == true })
        // A few are looked up one by one, many are read in one pass: the same answer, and names not
        // in the state are left out.
        for asked in [Set(["agent-3", "agent-42", "gone"]), Set(names.prefix(80) + ["gone"])] {
            let fields = try store.appliedFields(of: asked)
            #expect(Set(fields.keys) == asked.subtracting(["gone"]))
            for (name, stored) in fields {
                #expect(AgentRecord.decodeFields(stored).map(\.1) == ["model-of-\(name)"])
            }
        }
    }

    /// The live log names its run: a reader following one run is never handed the next run's
    /// output as more of it, even when the next run has printed more; and the run before the
    /// latest is kept for a reader still after its last lines.
    @Test func theLiveLogNamesItsRunAndANewRunStartsItAfresh() throws {
        let directory = try TemporaryDirectory()
        let store = SQLiteStateStore(directory: directory.path + "/state")
        func text(_ live: LiveOutput?) -> String? { live.map { String(decoding: $0.bytes, as: UTF8.self) } }
        let (first, second, third) = ("20261204T100000Z-aaaa", "20261204T100001Z-bbbb", "20261204T100002Z-cccc")
        #expect(try store.liveLog(agent: "triage", run: nil, from: 0) == nil)
        try store.appendLiveLog(agent: "triage", Array("before any run\n".utf8))
        #expect(
            try store.liveLog(agent: "triage", run: nil, from: 0) == nil,
            "output is kept only for a run that started one")

        try store.resetLiveLog(agent: "triage", run: first)
        try store.appendLiveLog(agent: "triage", Array("first\n".utf8))
        try store.appendLiveLog(agent: "triage", Array("second\n".utf8))
        #expect(try store.liveLog(agent: "triage", run: nil, from: 0)?.run == first)
        #expect(
            try text(store.liveLog(agent: "triage", run: first, from: 6)) == "second\n",
            "offsets count the output alone")
        #expect(try text(store.liveLog(agent: "triage", run: first, from: 13)) == "")
        #expect(try store.liveLog(agent: "triage", run: first, from: 14) == nil)
        #expect(try store.liveLog(agent: "triage", run: second, from: 0) == nil, "no such run")

        try store.resetLiveLog(agent: "triage", run: second)
        try store.appendLiveLog(agent: "triage", Array("the next run, longer than the first\n".utf8))
        #expect(try store.liveLog(agent: "triage", run: nil, from: 13)?.run == second, "the latest is another run's")
        #expect(try text(store.liveLog(agent: "triage", run: first, from: 6)) == "second\n", "the one before is kept")
        #expect(
            try text(store.liveLog(agent: "triage", run: second, from: 0)) == "the next run, longer than the first\n")

        try store.resetLiveLog(agent: "triage", run: third)
        #expect(try store.liveLog(agent: "triage", run: first, from: 0) == nil, "two runs back: gone")
        #expect(try text(store.liveLog(agent: "triage", run: second, from: 4)) == "next run, longer than the first\n")
        #expect(try text(store.liveLog(agent: "other", run: nil, from: 0)) == nil)
    }

    @Test func aSecondWriterFailsAtOnceNamingTheHolder() throws {
        let directory = try TemporaryDirectory()
        try SQLiteStateStore(directory: directory.path).withWriterLockIfFree {}
        // Another process takes the writer lock the way agentry does (flock, pid in the file).
        let holder = try BackgroundProcess(
            "python3",
            [
                "-c",
                """
                import fcntl, os, sys, time
                f = open(sys.argv[1], "a+"); fcntl.flock(f, fcntl.LOCK_EX)
                f.truncate(0); f.write(str(os.getpid()) + "\\n"); f.flush()
                print("locked", flush=True); time.sleep(30)
                """,
                directory.path + "/state.lock",
            ])
        #expect(holder.firstLine() == "locked")  // the lock is held from here on

        let started = Date()
        let store = SQLiteStateStore(directory: directory.path)
        #expect {
            try store.lockForWriting()
        } throws: { error in
            guard let error = error as? StateError, case .locked(let pid) = error.code else { return false }
            return pid == holder.pid && error.message.contains("process \(holder.pid)")
        }
        #expect(Date().timeIntervalSince(started) < 2, "fails at once, never waits")

        // Readers are never blocked by the writer.
        #expect(try store.agents().isEmpty)
        #expect(try store.withWriterLockIfFree {} == false)
    }

    /// A journalled audit is another apply's still going only while its process lives on this host:
    /// killed (reaped or not), elsewhere, or not an agentry, it was interrupted.
    @Test func anAuditIsLiveOnlyWhileItsApplyLives() async throws {
        let directory = try TemporaryDirectory()
        let store = SQLiteStateStore(directory: directory.path + "/state")
        // A process named as agentry is (the kernel names it after the link it was started by).
        try FileManager.default.createSymbolicLink(
            atPath: directory.path + "/agentry-apply", withDestinationPath: "/bin/sleep")
        let apply = try BackgroundProcess(directory.path + "/agentry-apply", ["30"])
        let other = try BackgroundProcess("sleep", ["30"])
        let here = ProcessInfo.processInfo.hostName
        let lock = try store.lockForWriting()
        for (id, pid, host) in [
            ("live", apply.pid, here), ("elsewhere", apply.pid, "another-host"), ("not-agentry", other.pid, here),
            ("gone", Int32.max - 1, here), ("unknown", nil, nil),
        ] as [(String, Int32?, String?)] {
            try store.beginAudit(
                PendingAudit(
                    id: id, desiredCommit: "c", ref: "HEAD", summary: "", actor: "ci", repository: "/r",
                    branch: "agentry/history", startedAt: Date(), pid: pid, host: host))
        }
        lock.release()
        try await waitUntil("the stand-in apply runs") {
            (try? String(contentsOfFile: "/proc/\(apply.pid)/comm", encoding: .utf8)) == "agentry-apply\n"
        }
        let live = { try Dictionary(uniqueKeysWithValues: store.pendingAudits().map { ($0.id, $0.live) }) }
        #expect(
            try live() == ["live": true, "elsewhere": false, "not-agentry": false, "gone": false, "unknown": false])
        // Killed and not yet reaped by its parent (a zombie): not live.
        kill(apply.pid, SIGKILL)
        try await waitUntil("the stand-in apply is dead") {
            let stat = (try? String(contentsOfFile: "/proc/\(apply.pid)/stat", encoding: .utf8)) ?? ""
            return stat.contains(") Z ")
        }
        #expect(try live()["live"] == false)
    }

    @Test func aDatabaseFromANewerAgentryIsRefused() throws {
        let directory = try TemporaryDirectory()
        let store = SQLiteStateStore(directory: directory.path)
        try store.withWriterLockIfFree { try store.append(event(nil, "apply", "ci", "applied")) }
        try DatabaseQueue(path: directory.path + "/state.sqlite").write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        #expect {
            try SQLiteStateStore(directory: directory.path).agents()
        } throws: { error in
            guard let error = error as? StateError, error.code == .newerSchema else { return false }
            return error.message.contains("newer agentry")
        }
    }

    @Test func aCorruptFileIsAClearError() throws {
        let directory = try TemporaryDirectory()
        try directory.write("state.sqlite", String(repeating: "this is not sqlite ", count: 500))
        #expect {
            try SQLiteStateStore(directory: directory.path).agents()
        } throws: { error in
            guard let error = error as? StateError, error.code == .corrupt else { return false }
            return error.message.contains("not a readable agentry state database")
        }
    }

    /// A state that is not there is said to be missing, however it is missing; reading never
    /// creates one.
    @Test func aMissingStateIsAnErrorNeverAnEmptyOne() throws {
        let directory = try TemporaryDirectory()
        try directory.write("a-file", "not a folder\n")
        try FileManager.default.createDirectory(atPath: directory.path + "/empty", withIntermediateDirectories: true)
        for (folder, says) in [
            ("absent", "the folder does not exist"), ("a-file", "is a file"),
            ("empty", "holds no agentry state database"),
        ] {
            let store = SQLiteStateStore(directory: directory.path + "/" + folder)
            #expect(throws: StateError.self) { try store.checkReadable() }
            do {
                try store.checkReadable()
            } catch let error as StateError {
                #expect(error.code == .missing && error.message.contains(says), "\(error.message)")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/absent"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path + "/empty").isEmpty)
    }

    /// Agent names read back become paths: a row whose name is not an agent name is refused.
    @Test func namesFromTheDatabaseAreChecked() throws {
        let directory = try TemporaryDirectory()
        let store = SQLiteStateStore(directory: directory.path)
        let lock = try store.lockForWriting()
        try store.save(record("fine"))
        lock.release()
        try DatabaseQueue(path: directory.path + "/state.sqlite").write { db in
            try db.execute(sql: "UPDATE agents SET name = '../../etc' WHERE name = 'fine'")
        }
        #expect {
            try SQLiteStateStore(directory: directory.path).agents()
        } throws: { error in
            (error as? StateError)?.code == .corrupt && "\(error)".contains("\"../../etc\"")
        }
        #expect(throws: StateError.self) { try SQLiteStateStore(directory: directory.path).appliedAgents(fields: true) }
    }

    /// A database written by the first schema (v1) migrates forward and keeps its rows.
    @Test func migratesFromTheFirstSchema() throws {
        let directory = try TemporaryDirectory()
        let fixture = Agentry.packageRoot.appendingPathComponent("Tests/AgentryStateTests/Fixtures/state-v1.sql")
        let sql = try String(contentsOf: fixture, encoding: .utf8)
        try DatabaseQueue(path: directory.path + "/state.sqlite").write { db in try db.execute(sql: sql) }

        let store = SQLiteStateStore(directory: directory.path)
        let agent = try #require(try store.agent("triage"))
        #expect(agent.appliedRevision == "0f1e2d")
        #expect(agent.accelerator == nil)
        #expect(try store.events(agent: nil, limit: 1).first?.message == "applied")
        let applied = try DatabaseQueue(path: directory.path + "/state.sqlite").read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier")
        }
        #expect(applied == SQLiteStateStore.schemaVersions)
    }

    @Test func defaultDirectoryFollowsTheEnvironment() {
        #expect(SQLiteStateStore.defaultDirectory(environment: ["AGENTRY_STATE_DIR": "/srv/agentry"]) == "/srv/agentry")
        if getuid() == 0 {
            #expect(SQLiteStateStore.defaultDirectory(environment: [:]) == "/var/lib/agentry")
        } else {
            #expect(SQLiteStateStore.defaultDirectory(environment: ["XDG_STATE_HOME": "/x"]) == "/x/agentry")
        }
    }
}
