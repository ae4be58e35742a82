import AgentryModel
import Foundation

/// The actual state: what was applied to each agent, its machine's last known state, the kill
/// switch and the event log. One writer at a time across processes (`lockForWriting`); readers are
/// never blocked. Implementations are safe to call from several threads at once.
public protocol StateStore: Sendable {
    /// Whether anything was ever recorded (there is no state before the first apply).
    var exists: Bool { get }
    /// Where it is, for messages (the state directory).
    var location: String { get }
    /// Fails, saying what is wrong, unless there is a state database to read: a state directory
    /// that is missing, is a file, or holds no database is not an empty state.
    func checkReadable() throws

    func agents() throws -> [AgentRecord]
    func agent(_ name: String) throws -> AgentRecord?
    /// What planning reads of every applied agent, without decoding whole records; without
    /// `fields`, each one's applied fields are left unread (`appliedFields(of:)` reads them).
    func appliedAgents(fields: Bool) throws -> [AppliedAgent]
    /// The applied fields (encoded) of the named agents that are in the state.
    func appliedFields(of names: Set<String>) throws -> [String: String]
    /// Needs the writer lock.
    func save(_ record: AgentRecord) throws
    /// Needs the writer lock.
    func removeAgent(_ name: String) throws

    func killSwitch(_ name: String) throws -> KillSwitch?
    func killedAgents() throws -> Set<String>
    /// Sets (with a reason) or lifts the kill switch, with an event saying who. Not behind the
    /// writer lock: an operator stops an agent at once, even while an apply runs.
    func setKillSwitch(_ name: String, reason: String?, actor: String, at time: Date) throws

    /// Needs the writer lock.
    func append(_ event: EventRecord) throws
    /// Newest first.
    func events(agent: String?, limit: Int) throws -> [EventRecord]

    /// The git repository the last apply read (its history branch records operator events).
    func rememberedRepository() -> String?
    func rememberRepository(_ absolutePath: String)

    /// A setting of this state (the repository it belongs to); nil when unset.
    func setting(_ key: String) throws -> String?
    /// Needs the writer lock. `nil` removes it.
    func setSetting(_ key: String, _ value: String?) throws

    /// The run journal: a run in progress, written as it starts and moves on, removed once its
    /// record is in history; one left behind is a run whose agentry stopped (the next run of the
    /// agent records it as interrupted). Kept apart from the database: no writer lock is needed.
    func saveRunJournal(_ journal: RunJournal) throws
    func runJournals() throws -> [RunJournal]
    func clearRunJournal(agent: String) throws
    /// The output of the agent's latest run as its terminal saw it (redacted), kept beside the
    /// state for `logs -f` and event streams (not in the database); `resetLiveLog` starts it afresh
    /// for a new run, named by the run's id.
    func appendLiveLog(agent: String, _ bytes: [UInt8]) throws
    func resetLiveLog(agent: String, run: String) throws
    /// Whose it is and what it holds from `offset` on; nil when there is none, or it is shorter than
    /// `offset`. With a `run`, that run's: the agent's latest, or the one before (the agent's next
    /// run may have started it afresh before a reader read the last lines); nil when neither is.
    func liveLog(agent: String, run: String?, from offset: Int) throws -> LiveOutput?

    /// The audit journal: an apply's record is kept here step by step as the steps are carried
    /// out, and committed to history at its end (or by the next apply, when it was killed).
    /// All need the writer lock.
    func beginAudit(_ audit: PendingAudit) throws
    func appendAudit(_ id: String, step: String) throws
    func pendingAudits() throws -> [PendingAudit]
    func finishAudit(_ id: String) throws

    /// Takes the writer lock until the returned lock is released; fails at once (a failure of
    /// category `locked`, naming the holder) when another process holds it.
    func lockForWriting() throws -> any StateWriterLock
    /// Runs `body` under the writer lock, taking it briefly if the calling thread does not hold it;
    /// false, without running `body`, when another holds it (for what may be skipped: a cache).
    @discardableResult
    func withWriterLockIfFree(_ body: () throws -> Void) throws -> Bool
    /// Runs `body` under the writer lock, taking it briefly if the calling thread does not hold it
    /// and waiting up to `patience` while another does (its hold is brief: nobody holds the lock
    /// while waiting on a machine); then fails as `lockForWriting` does.
    func withWriterLock<T>(waitingUpTo patience: Duration, _ body: () throws -> T) throws -> T
}

/// The writer lock, held until `release` (or until the process ends).
public protocol StateWriterLock: AnyObject, Sendable {
    func release()
}

/// One agent's row: what was applied, and its machine.
public struct AgentRecord: Sendable, Hashable, Codable {
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
    /// What `machineState` means: why it failed, what it was doing.
    public var machineDetail: String?
    /// The environment disk was made new and the memory snapshot is not yet restored onto it.
    public var restorePending: Bool
    /// The agent's owner when it was applied.
    public var owner: String?

    public init(
        name: String, appliedRevision: String, appliedFields: Fields, appliedCommit: String, lifecycle: String,
        deletionPolicy: String, machineID: String? = nil, machineState: String? = nil, accelerator: String? = nil,
        updatedAt: Date, lastRunAt: Date? = nil, machineDetail: String? = nil, restorePending: Bool = false,
        owner: String? = nil
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
        self.machineDetail = machineDetail
        self.restorePending = restorePending
        self.owner = owner
    }

    public enum CodingKeys: String, CodingKey {
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
        case machineDetail = "machine_detail"
        case restorePending = "restore_pending"
        case owner
    }

    /// Decodes applied fields as `AgentRecord` stores them.
    public static func decodeFields(_ json: String) -> Fields {
        guard let pairs = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String]] else { return [] }
        return pairs.compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
    }

    static func encode(_ fields: Fields) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: fields.map { [$0.0, $0.1] })) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The applied fields, decoded.
    public var fields: Fields { Self.decodeFields(appliedFields) }
}

/// What planning needs of an applied agent; its fields stay encoded until asked for (nil: not read).
public struct AppliedAgent: Sendable {
    public var name: String
    public var revision: String
    public var lifecycle: String
    public var deletionPolicy: String
    public var machineState: String?
    public var machineDetail: String?
    public var fieldsJSON: String?

    public init(
        name: String, revision: String, lifecycle: String, deletionPolicy: String, machineState: String?,
        machineDetail: String? = nil, fieldsJSON: String?
    ) {
        self.name = name
        self.revision = revision
        self.lifecycle = lifecycle
        self.deletionPolicy = deletionPolicy
        self.machineState = machineState
        self.machineDetail = machineDetail
        self.fieldsJSON = fieldsJSON
    }
}

/// An operator's kill switch on an agent.
public struct KillSwitch: Sendable, Equatable {
    public var reason: String
    public var actor: String
    public var time: Date

    public init(reason: String, actor: String, time: Date) {
        self.reason = reason
        self.actor = actor
        self.time = time
    }
}

/// An entry of the event log: who did what to which agent, and why.
public struct EventRecord: Sendable, Hashable, Codable {
    public var id: Int64?
    public var time: Date
    public var agent: String?
    public var kind: String
    public var actor: String
    public var message: String

    public init(time: Date, agent: String?, kind: String, actor: String, message: String) {
        self.time = time
        self.agent = agent
        self.kind = kind
        self.actor = actor
        self.message = message
    }
}

/// The loader's memory of what it parsed, by git blob id, kept in the user's parse cache
/// (`SQLiteParseCache`).
public protocol ParseCache: Sendable {
    /// The derived snapshot for an agent repository (`key` names it), with the commit it is of.
    func snapshot(key: String) throws -> (source: String, data: Data)?
    /// Per-file parse results of a repository: all of them, or those of `paths`.
    func cachedFiles(key: String, paths: [String]?) throws -> [CachedParse]
    /// Stores a snapshot with the per-file results that changed (`removed` paths dropped;
    /// `replaceAll` first clears the repository's rows), in one transaction. False, storing
    /// nothing, when another process holds the writer lock.
    func saveSnapshot(
        key: String, source: String, data: Data, files: [CachedParse], removed: [String], replaceAll: Bool
    ) throws -> Bool
}

public struct CachedParse: Sendable {
    public var path: String
    public var blobID: String
    public var result: Data

    public init(path: String, blobID: String, result: Data) {
        self.path = path
        self.blobID = blobID
        self.result = result
    }
}

/// An apply's audit record, as journalled before it reaches history.
public struct PendingAudit: Sendable, Equatable {
    public var id: String
    public var desiredCommit: String
    public var ref: String
    public var summary: String
    public var actor: String
    public var repository: String
    public var branch: String
    public var startedAt: Date
    /// `create greeter: done`, one per step carried out, in order.
    public var steps: [String]
    /// The process of the apply that writes it, and its host.
    public var pid: Int32?
    public var host: String?
    /// Its apply is still going (its process lives, on this host): not an interrupted apply's.
    /// Set by the store as it reads.
    public var live = false

    public init(
        id: String, desiredCommit: String, ref: String, summary: String, actor: String, repository: String,
        branch: String, startedAt: Date, steps: [String] = [], pid: Int32? = nil, host: String? = nil
    ) {
        self.pid = pid
        self.host = host
        self.id = id
        self.desiredCommit = desiredCommit
        self.ref = ref
        self.summary = summary
        self.actor = actor
        self.repository = repository
        self.branch = branch
        self.startedAt = startedAt
        self.steps = steps
    }
}

/// What is known of a run in progress, for the record of one that never finished.
public struct RunJournal: Sendable, Equatable, Codable {
    public var agent: String
    public var runID: String
    public var pid: Int32
    public var startedAt: Date
    /// `RunRecord.Phase`.
    public var phase: String
    public var owner: String
    public var commit: String
    public var revision: String
    public var actor: String
    public var trigger: String
    public var host: String
    public var promptSHA256: String?
    public var promptBytes: Int?
    public var promptIsDefault: Bool?
    public var historyRepository: String
    public var historyBranch: String

    public init(
        agent: String, runID: String, pid: Int32, startedAt: Date, phase: String, owner: String, commit: String,
        revision: String, actor: String, trigger: String, host: String, historyRepository: String, historyBranch: String
    ) {
        self.agent = agent
        self.runID = runID
        self.pid = pid
        self.startedAt = startedAt
        self.phase = phase
        self.owner = owner
        self.commit = commit
        self.revision = revision
        self.actor = actor
        self.trigger = trigger
        self.host = host
        self.historyRepository = historyRepository
        self.historyBranch = historyBranch
    }
}

/// A live log as read: the run it is of (its record's id) and its output from the offset asked for.
public struct LiveOutput: Sendable, Equatable {
    public var run: String
    public var bytes: [UInt8]

    public init(run: String, bytes: [UInt8]) {
        self.run = run
        self.bytes = bytes
    }
}
