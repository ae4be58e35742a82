import AgentryBasics
import AgentryCore
import Foundation
import Synchronization

/// Why a fake refused: a test's way of making a port fail, or the core breaking a port's contract.
public struct FakeFailure: AgentryFailure {
    public var category: FailureCategory
    public var message: String

    public init(_ category: FailureCategory, _ message: String) {
        self.category = category
        self.message = message
    }
}

/// The actual state in memory, keeping the real store's contract: writes need the writer lock
/// (a write without it fails, so a test catches the core writing unguarded), and another process
/// holding the lock can be pretended (`lockedByAnotherProcess`).
public final class InMemoryState: StateStore, ParseCache {
    struct Contents {
        var agents: [String: AgentRecord] = [:]
        var kills: [String: KillSwitch] = [:]
        var events: [EventRecord] = []
        var repository: String?
        var settings: [String: String] = [:]
        var audits: [String: PendingAudit] = [:]
        var runs: [String: RunJournal] = [:]
        var liveLogs: [String: LiveOutput] = [:]
        var previousLiveLogs: [String: LiveOutput] = [:]
        var snapshots: [String: (String, Data)] = [:]
        var parses: [String: [String: CachedParse]] = [:]
        /// Writer locks held, by thread (as the real store: the lock is the thread's that took it).
        var holders: [UInt: Int] = [:]
        var lockedElsewhere = false
        var created = false
    }

    private let contents = Mutex(Contents())

    public init() {}

    /// Pretends another agentry process holds the writer lock.
    public var lockedByAnotherProcess: Bool {
        get { contents.withLock { $0.lockedElsewhere } }
        set { contents.withLock { $0.lockedElsewhere = newValue } }
    }

    /// How many writer locks are held now.
    public var heldLocks: Int { contents.withLock { $0.holders.values.reduce(0, +) } }

    /// Whether the calling thread holds the writer lock.
    var isWriter: Bool {
        let thread = UInt(pthread_self())
        return contents.withLock { ($0.holders[thread] ?? 0) > 0 }
    }

    public var exists: Bool { contents.withLock { $0.created } }

    public var location: String { "memory" }

    public func checkReadable() throws {
        guard exists else { throw FakeFailure(.notFound, "there is no agentry state (nothing was applied)") }
    }

    func write<T>(_ body: (inout Contents) throws -> T) throws -> T {
        try contents.withLock { contents in
            guard (contents.holders[UInt(pthread_self())] ?? 0) > 0 else {
                throw FakeFailure(.internalFailure, "written without the writer lock")
            }
            contents.created = true
            return try body(&contents)
        }
    }

    public func agents() throws -> [AgentRecord] {
        contents.withLock { $0.agents.values.sorted { $0.name < $1.name } }
    }

    public func agent(_ name: String) throws -> AgentRecord? { contents.withLock { $0.agents[name] } }

    public func appliedAgents(fields: Bool) throws -> [AppliedAgent] {
        try agents().map {
            AppliedAgent(
                name: $0.name, revision: $0.appliedRevision, lifecycle: $0.lifecycle, deletionPolicy: $0.deletionPolicy,
                machineState: $0.machineState, machineDetail: $0.machineDetail,
                fieldsJSON: fields ? $0.appliedFields : nil)
        }
    }

    public func appliedFields(of names: Set<String>) throws -> [String: String] {
        contents.withLock { contents in
            Dictionary(
                uniqueKeysWithValues: names.compactMap { name in contents.agents[name].map { (name, $0.appliedFields) }
                })
        }
    }

    public func save(_ record: AgentRecord) throws { try write { $0.agents[record.name] = record } }

    public func removeAgent(_ name: String) throws { try write { $0.agents[name] = nil } }

    public func killSwitch(_ name: String) throws -> KillSwitch? { contents.withLock { $0.kills[name] } }

    public func killedAgents() throws -> Set<String> { contents.withLock { Set($0.kills.keys) } }

    public func setKillSwitch(_ name: String, reason: String?, actor: String, at time: Date) throws {
        contents.withLock { contents in
            contents.created = true
            contents.kills[name] = reason.map { KillSwitch(reason: $0, actor: actor, time: time) }
            contents.events.append(
                EventRecord(
                    time: time, agent: name, kind: reason == nil ? "unkill" : "kill", actor: actor,
                    message: reason.map { "killed: \($0)" } ?? "kill switch lifted"))
        }
    }

    public func append(_ event: EventRecord) throws { try write { $0.events.append(event) } }

    public func events(agent: String?, limit: Int) throws -> [EventRecord] {
        contents.withLock { contents in
            Array(contents.events.reversed().filter { agent == nil || $0.agent == agent }.prefix(limit))
        }
    }

    public func rememberedRepository() -> String? { contents.withLock { $0.repository } }

    public func rememberRepository(_ absolutePath: String) { contents.withLock { $0.repository = absolutePath } }

    public func setting(_ key: String) throws -> String? { contents.withLock { $0.settings[key] } }

    public func setSetting(_ key: String, _ value: String?) throws { try write { $0.settings[key] = value } }

    public func beginAudit(_ audit: PendingAudit) throws { try write { $0.audits[audit.id] = audit } }

    public func saveRunJournal(_ journal: RunJournal) throws { contents.withLock { $0.runs[journal.agent] = journal } }

    public func runJournals() throws -> [RunJournal] {
        contents.withLock { $0.runs.values.sorted { $0.agent < $1.agent } }
    }

    public func clearRunJournal(agent: String) throws { contents.withLock { $0.runs[agent] = nil } }

    public func appendLiveLog(agent: String, _ bytes: [UInt8]) throws {
        contents.withLock { $0.liveLogs[agent]?.bytes += bytes }
    }

    public func resetLiveLog(agent: String, run: String) throws {
        contents.withLock {
            $0.previousLiveLogs[agent] = $0.liveLogs[agent]
            $0.liveLogs[agent] = LiveOutput(run: run, bytes: [])
        }
    }

    public func liveLog(agent: String, run: String?, from offset: Int) throws -> LiveOutput? {
        contents.withLock { contents in
            let latest = contents.liveLogs[agent]
            let found =
                run == nil || latest?.run == run
                ? latest
                : contents.previousLiveLogs[agent].flatMap {
                    $0.run == run ? $0 : nil
                }
            return found.flatMap {
                $0.bytes.count < offset ? nil : LiveOutput(run: $0.run, bytes: Array($0.bytes.dropFirst(offset)))
            }
        }
    }

    public func appendAudit(_ id: String, step: String) throws { try write { $0.audits[id]?.steps.append(step) } }

    /// An audit whose apply says which process it is counts as live (fakes kill no process), unless
    /// that process is listed here as gone.
    public let goneProcesses = Mutex<Set<Int32>>([])

    public func pendingAudits() throws -> [PendingAudit] {
        let gone = goneProcesses.withLock { $0 }
        return contents.withLock {
            $0.audits.values.sorted { $0.startedAt < $1.startedAt }.map { audit in
                var audit = audit
                audit.live = audit.pid.map { !gone.contains($0) } ?? false
                return audit
            }
        }
    }

    public func finishAudit(_ id: String) throws { try write { $0.audits[id] = nil } }

    final class Lock: StateWriterLock {
        let state: InMemoryState
        let held = Mutex(true)
        let thread = UInt(pthread_self())

        init(_ state: InMemoryState) { self.state = state }

        func release() {
            guard
                held.withLock({ value in
                    defer { value = false }; return value
                })
            else { return }
            state.contents.withLock { contents in
                contents.holders[thread, default: 1] -= 1
                if contents.holders[thread] == 0 { contents.holders[thread] = nil }
            }
        }

        deinit { release() }
    }

    public func lockForWriting() throws -> any StateWriterLock {
        try contents.withLock { contents in
            // One holder at a time, as an flock on a file of its own gives each taker.
            guard !contents.lockedElsewhere, contents.holders.isEmpty else {
                throw FakeFailure(
                    .locked, "the state is locked by process 4242 (another agentry apply or reconcile is writing)")
            }
            contents.holders[UInt(pthread_self()), default: 0] += 1
        }
        return Lock(self)
    }

    public func withWriterLock<T>(waitingUpTo patience: Duration, _ body: () throws -> T) throws -> T {
        if isWriter { return try body() }
        let deadline = ContinuousClock.now + patience
        var lock: (any StateWriterLock)?
        while lock == nil {
            do {
                lock = try lockForWriting()
            } catch {
                guard ContinuousClock.now < deadline else { throw error }
                usleep(1000)
            }
        }
        defer { lock?.release() }
        return try body()
    }

    public func withWriterLockIfFree(_ body: () throws -> Void) throws -> Bool {
        if isWriter {
            try body()
            return true
        }
        guard let lock = try? lockForWriting() else { return false }
        defer { lock.release() }
        try body()
        return true
    }

    // MARK: - Parse cache

    public func snapshot(key: String) throws -> (source: String, data: Data)? {
        contents.withLock { $0.snapshots[key].map { (source: $0.0, data: $0.1) } }
    }

    public func cachedFiles(key: String, paths: [String]?) throws -> [CachedParse] {
        contents.withLock { contents in
            let rows = contents.parses[key] ?? [:]
            return paths.map { $0.compactMap { rows[$0] } } ?? Array(rows.values)
        }
    }

    public func saveSnapshot(
        key: String, source: String, data: Data, files: [CachedParse], removed: [String], replaceAll: Bool
    ) throws -> Bool {
        guard exists else { return false }
        return try withWriterLockIfFree {
            try write { contents in
                contents.snapshots[key] = (source, data)
                if replaceAll { contents.parses[key] = [:] }
                for path in removed { contents.parses[key]?[path] = nil }
                for file in files { contents.parses[key, default: [:]][file.path] = file }
            }
        }
    }
}

/// Secrets in memory.
public final class InMemorySecrets: SecretStore {
    private let values = Mutex([String: ([UInt8], Date, SecretScope?)]())

    public init(_ initial: [String: String] = [:]) {
        values.withLock { values in
            for (key, value) in initial { values[key] = (Array(value.utf8), Date(timeIntervalSince1970: 0), nil) }
        }
    }

    public func value(_ key: String) throws -> [UInt8]? { values.withLock { $0[key]?.0 } }

    public func scope(_ key: String) throws -> SecretScope? { values.withLock { $0[key]?.2 } }

    public func set(_ key: String, value: [UInt8], scope: SecretScope?) throws {
        values.withLock { $0[key] = (value, Date(), scope.flatMap { $0.isEmpty ? nil : $0 }) }
    }

    public func list() throws -> [SecretEntry] {
        values.withLock {
            $0.map { SecretEntry(key: $0.key, updatedAt: $0.value.1, scope: $0.value.2) }.sorted { $0.key < $1.key }
        }
    }

    public func remove(_ key: String) throws {
        try values.withLock { values in
            guard values.removeValue(forKey: key) != nil else {
                throw FakeFailure(.notFound, "no secret \(key) in the store")
            }
        }
    }
}

/// A clock that stands still until told, and moves on instead of sleeping.
public final class ManualClock: WallClock {
    private let time: Mutex<Date>

    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        time = Mutex(start)
    }

    public func now() -> Date { time.withLock { $0 } }

    public func advance(by seconds: Double) { time.withLock { $0 = $0.addingTimeInterval(seconds) } }

    public func sleep(for duration: Duration) async {
        advance(by: Double(duration.milliseconds) / 1000)
        await Task.yield()
    }

    public func pause(for duration: Duration) { advance(by: Double(duration.milliseconds) / 1000) }
}

/// History branches in memory: each record is a commit of files.
public final class InMemoryHistory: HistoryStore {
    public struct Commit: Sendable {
        public var location: HistoryLocation
        public var files: [HistoryFile]
        public var message: String
        public var actor: String
        public var id: String
    }

    private let commits = Mutex([Commit]())
    /// Set to make every record fail (a repository that cannot be written).
    public let failing = Mutex(false)
    /// Set to refuse commits of more files than this (artifacts that cannot be stored).
    public let fileLimit = Mutex<Int?>(nil)

    public init() {}

    public var all: [Commit] { commits.withLock { $0 } }

    public func compact(in location: HistoryLocation) throws -> Bool { false }

    public func record(
        _ files: [HistoryFile], message: String, actor: String, at date: Date, in location: HistoryLocation
    )
        throws -> HistoryCommit
    {
        if failing.withLock({ $0 }) { throw FakeFailure(.unavailable, "the history repository is read-only") }
        if let limit = fileLimit.withLock({ $0 }), files.count > limit {
            throw FakeFailure(.unavailable, "the history repository refused \(files.count) files (at most \(limit))")
        }
        return commits.withLock { commits in
            let id = Hex.string(Array(String(commits.count + 1).utf8)).padding(
                toLength: 40, withPad: "0", startingAt: 0)
            commits.append(Commit(location: location, files: files, message: message, actor: actor, id: id))
            return HistoryCommit(commit: id, pushWarning: nil)
        }
    }

    func tree(_ location: HistoryLocation) -> [String: [UInt8]] {
        commits.withLock { commits in
            var tree: [String: [UInt8]] = [:]
            for commit in commits where commit.location == location {
                for file in commit.files { tree[file.path] = file.bytes }
            }
            return tree
        }
    }

    public func files(under folder: String, in location: HistoryLocation) throws -> [HistoryFile]? {
        let tree = tree(location)
        guard !tree.isEmpty else { return nil }
        return tree.filter { $0.key.hasPrefix(folder + "/") }.map { HistoryFile(path: $0.key, bytes: $0.value) }.sorted
        { $0.path < $1.path }
    }

    public func paths(under folder: String, in location: HistoryLocation) throws -> [String]? {
        try files(under: folder, in: location)?.map(\.path)
    }

    public func read(_ path: String, in location: HistoryLocation) throws -> [UInt8]? { tree(location)[path] }
}
