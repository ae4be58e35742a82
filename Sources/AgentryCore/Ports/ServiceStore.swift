import Foundation

/// What a bearer token may do. Each scope includes the ones before it: `run` can read, `admin` can
/// run (and kill, unkill, reconcile).
public enum TokenScope: String, Sendable, CaseIterable, Comparable {
    case read, run, admin

    public static func < (lhs: TokenScope, rhs: TokenScope) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// A token of the service's API, as stored: never the token itself, only its SHA-256.
public struct APIToken: Sendable, Equatable {
    /// Public, for listing and revoking (`tok_…`).
    public var id: String
    public var scope: TokenScope
    /// The agents it is limited to; empty: every agent.
    public var agents: [String]
    public var createdAt: Date
    public var createdBy: String
    public var expiresAt: Date?
    public var revokedAt: Date?

    public init(
        id: String, scope: TokenScope, agents: [String], createdAt: Date, createdBy: String, expiresAt: Date?,
        revokedAt: Date? = nil
    ) {
        self.id = id
        self.scope = scope
        self.agents = agents
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }

    /// Whether it may act on `agent` (nil: a request about no agent in particular, such as a
    /// listing, which then shows only the agents it covers).
    public func covers(_ agent: String?) -> Bool {
        guard let agent else { return true }
        return agents.isEmpty || agents.contains(agent)
    }
}

/// Where a run accepted by the service is in its life. The first three are live; the rest final.
public enum ServiceRunStatus: String, Sendable, CaseIterable {
    case queued, starting, running, succeeded, failed, timedOut, cancelled, interrupted

    public var isFinal: Bool { ![.queued, .starting, .running].contains(self) }
}

/// A run the service accepted: stored before the request is answered, so it is never lost.
public struct ServiceRun: Sendable, Equatable {
    public var id: String
    public var agent: String
    public var status: ServiceRunStatus
    public var prompt: String?
    public var timeoutSeconds: Int?
    public var continueSession: Bool
    /// The client's `Idempotency-Key`, with the token that sent it (one client's key is not another's).
    public var idempotencyKey: String?
    public var tokenID: String?
    public var requestedBy: String
    /// What started it: `api`, or `schedule` (the agent's `run.schedule`).
    public var trigger: String = "api"
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// The run's record in history, once it has one.
    public var recordID: String?
    public var historyCommit: String?
    public var exitStatus: Int?
    /// Why it ended as it did (a failure's message, what interrupted it).
    public var message: String?

    public init(
        id: String, agent: String, status: ServiceRunStatus = .queued, prompt: String?, timeoutSeconds: Int?,
        continueSession: Bool, idempotencyKey: String?, tokenID: String?, requestedBy: String, createdAt: Date
    ) {
        self.id = id
        self.agent = agent
        self.status = status
        self.prompt = prompt
        self.timeoutSeconds = timeoutSeconds
        self.continueSession = continueSession
        self.idempotencyKey = idempotencyKey
        self.tokenID = tokenID
        self.requestedBy = requestedBy
        self.createdAt = createdAt
    }
}

/// What a schedule did when it came due: started a run, skipped (the agent's last run was still
/// going or waiting), or was refused (a killed or paused agent, a full queue).
public struct ScheduleEvent: Sendable, Equatable {
    public enum Outcome: String, Sendable {
        case started, skipped, refused
    }

    public var agent: String
    public var dueAt: Date
    public var outcome: Outcome
    /// The run it started, or the one it was skipped for.
    public var runID: String?
    public var message: String

    public init(agent: String, dueAt: Date, outcome: Outcome, runID: String?, message: String) {
        self.agent = agent
        self.dueAt = dueAt
        self.outcome = outcome
        self.runID = runID
        self.message = message
    }
}

/// A suspension of the reconcile loop, for one agent or the whole service: while it holds, the loop
/// leaves the agent (or every agent) as it is and its schedules do not fire. Runs asked for over the
/// API still run.
public struct Suspension: Sendable, Equatable {
    /// Nil: the whole service.
    public var agent: String?
    public var actor: String
    public var reason: String
    public var since: Date

    public init(agent: String?, actor: String, reason: String, since: Date) {
        self.agent = agent
        self.actor = actor
        self.reason = reason
        self.since = since
    }
}

/// A webhook out: one event for one URL, signed as Standard Webhooks say, retried with backoff
/// until it is answered 2xx or its attempts run out.
public struct Delivery: Sendable, Equatable {
    public enum Status: String, Sendable {
        case pending, delivered, failed
    }

    /// `msg_…`: the `webhook-id`, the same on every attempt (receivers deduplicate on it).
    public var id: String
    public var url: String
    /// `run.completed` or `agent.stalled`.
    public var type: String
    /// The JSON body sent.
    public var payload: String
    public var status: Status = .pending
    public var attempts = 0
    /// The last attempt's HTTP status, or why it got none.
    public var lastStatus: Int?
    public var lastError: String?
    public var createdAt: Date
    public var nextAttemptAt: Date?
    public var deliveredAt: Date?

    public init(id: String, url: String, type: String, payload: String, createdAt: Date) {
        self.id = id
        self.url = url
        self.type = type
        self.payload = payload
        self.createdAt = createdAt
        self.nextAttemptAt = createdAt
    }
}

/// The service's own database (`service.sqlite` beside the state): tokens and accepted runs.
/// Separate from the state database so that accepting runs never waits on an apply's writer lock.
public protocol ServiceStore: Sendable {
    func saveToken(_ token: APIToken, hash: String) throws
    /// The token whose SHA-256 is `hash`, revoked or not.
    func token(hash: String) throws -> APIToken?
    func tokens() throws -> [APIToken]
    /// False when there is no such token.
    func revokeToken(id: String, at time: Date) throws -> Bool
    /// Changes whenever a token is revoked, by this process or another; cheap enough to ask on
    /// every request without touching the database (nil: none was ever revoked).
    func revocations() -> String?

    /// Stores `runs` in one transaction (one commit to disk for all: the service gathers the
    /// requests that arrive while the last commit is under way), each in turn: unless a run with
    /// the same token and idempotency key exists (an earlier one of `runs` included), then that
    /// one and `created` false; nil, storing nothing, when its agent has `queueLimit` runs queued.
    func submit(_ runs: [ServiceRun], queueLimit: Int) throws -> [(run: ServiceRun, created: Bool)?]
    func run(id: String) throws -> ServiceRun?
    /// The run `token` sent with `key`, if any.
    func run(idempotencyKey key: String, tokenID: String?) throws -> ServiceRun?
    /// The oldest queued run of each agent, oldest first (ids and agents only: prompts stay put).
    func queuedHeads() throws -> [(id: String, agent: String)]
    /// How many runs are queued, for `agent` or in all.
    func queuedCount(agent: String?) throws -> Int
    /// Newest first; `before`: a run id to continue after (a page's cursor).
    func runs(agent: String?, statuses: Set<ServiceRunStatus>?, limit: Int, before: String?) throws -> [ServiceRun]
    func update(_ run: ServiceRun) throws
    /// Writes `run` only while its stored status is still `status` (compare and set: the service's
    /// writers need not wait on each other); whether it did.
    func update(_ run: ServiceRun, ifStatus status: ServiceRunStatus) throws -> Bool
    /// Writes a run's end (only while its stored status is `status`, when one is given) and stores
    /// `deliveries`, what announces it, in the same transaction: both or neither, whatever stops
    /// the service. Whether it was written.
    func end(_ run: ServiceRun, ifStatus status: ServiceRunStatus?, announcing deliveries: [Delivery]) throws -> Bool

    func recordScheduleEvent(_ event: ScheduleEvent) throws
    /// Newest first.
    func scheduleEvents(agent: String, limit: Int) throws -> [ScheduleEvent]
    /// How many times `agent`'s schedule was skipped, in all.
    func skippedCount(agent: String) throws -> Int

    /// Records `suspension` unless its agent (or the service) is suspended already: then that one,
    /// and `created` false.
    func suspend(_ suspension: Suspension) throws -> (suspension: Suspension, created: Bool)
    /// False when there was nothing to lift.
    func resume(agent: String?) throws -> Bool
    func suspensions() throws -> [Suspension]

    /// The agents' conditions as the reconcile loop last left them: they outlive a restart, so that
    /// an agent still Stalled is not announced again and each condition keeps its transition's time.
    func conditions() throws -> [String: [AgentCondition]]
    /// Replaces the conditions of each agent named, in one transaction (an empty list: it has none).
    func saveConditions(_ changed: [String: [AgentCondition]]) throws

    func enqueue(_ deliveries: [Delivery]) throws
    /// Pending deliveries due at `time`, the oldest first.
    func dueDeliveries(at time: Date, limit: Int) throws -> [Delivery]
    /// When the next pending delivery is due, if any is pending.
    func nextDeliveryTime() throws -> Date?
    func update(_ delivery: Delivery) throws
    /// Newest first; `before`: a delivery id to continue after.
    func deliveries(limit: Int, before: String?) throws -> [Delivery]
}
