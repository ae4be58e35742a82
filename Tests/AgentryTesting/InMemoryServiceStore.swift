import AgentryCore
import Foundation
import Synchronization

/// The service's store in memory: tokens and runs, with the database's idempotency and ordering.
public final class InMemoryServiceStore: ServiceStore {
    struct Contents {
        var tokens: [(token: APIToken, hash: String)] = []
        var runs: [ServiceRun] = []
        var scheduleEvents: [ScheduleEvent] = []
        var suspensions: [Suspension] = []
        var conditions: [String: [AgentCondition]] = [:]
        var deliveries: [Delivery] = []
        var revocations = 0
    }

    let contents = Mutex(Contents())

    public init() {}

    public func saveToken(_ token: APIToken, hash: String) throws {
        contents.withLock { $0.tokens.append((token, hash)) }
    }

    public func token(hash: String) throws -> APIToken? {
        contents.withLock { $0.tokens.first { $0.hash == hash }?.token }
    }

    public func tokens() throws -> [APIToken] { contents.withLock { $0.tokens.map(\.token) } }

    public func revokeToken(id: String, at time: Date) throws -> Bool {
        contents.withLock { contents in
            guard let index = contents.tokens.firstIndex(where: { $0.token.id == id }) else { return false }
            if contents.tokens[index].token.revokedAt == nil { contents.tokens[index].token.revokedAt = time }
            contents.revocations += 1
            return true
        }
    }

    public func revocations() -> String? { contents.withLock { "\($0.revocations)" } }

    public func submit(_ runs: [ServiceRun], queueLimit: Int) throws -> [(run: ServiceRun, created: Bool)?] {
        runs.map { submit($0, queueLimit: queueLimit) }
    }

    func submit(_ run: ServiceRun, queueLimit: Int) -> (run: ServiceRun, created: Bool)? {
        contents.withLock { contents in
            if let key = run.idempotencyKey,
                let existing = contents.runs.first(where: { $0.idempotencyKey == key && $0.tokenID == run.tokenID })
            {
                return (existing, false)
            }
            if contents.runs.count(where: { $0.agent == run.agent && $0.status == .queued }) >= queueLimit {
                return nil
            }
            contents.runs.append(run)
            return (run, true)
        }
    }

    public func run(id: String) throws -> ServiceRun? { contents.withLock { $0.runs.first { $0.id == id } } }

    public func run(idempotencyKey key: String, tokenID: String?) throws -> ServiceRun? {
        contents.withLock { $0.runs.first { $0.idempotencyKey == key && $0.tokenID == tokenID } }
    }

    public func queuedHeads() throws -> [(id: String, agent: String)] {
        contents.withLock { contents in
            var seen = Set<String>()
            return contents.runs.filter { $0.status == .queued && seen.insert($0.agent).inserted }.map {
                (id: $0.id, agent: $0.agent)
            }
        }
    }

    public func queuedCount(agent: String?) throws -> Int {
        contents.withLock { $0.runs.filter { $0.status == .queued && (agent == nil || $0.agent == agent) }.count }
    }

    public func runs(agent: String?, statuses: Set<ServiceRunStatus>?, limit: Int, before: String?) throws
        -> [ServiceRun]
    {
        contents.withLock { contents in
            var newestFirst = Array(contents.runs.reversed())
            if let before, let index = newestFirst.firstIndex(where: { $0.id == before }) {
                newestFirst = Array(newestFirst[(index + 1)...])
            }
            return Array(
                newestFirst.filter { run in
                    (agent == nil || run.agent == agent) && (statuses?.contains(run.status) ?? true)
                }.prefix(limit))
        }
    }

    public func update(_ run: ServiceRun) throws {
        contents.withLock { contents in
            if let index = contents.runs.firstIndex(where: { $0.id == run.id }) { contents.runs[index] = run }
        }
    }

    public func update(_ run: ServiceRun, ifStatus status: ServiceRunStatus) throws -> Bool {
        contents.withLock { contents in
            guard let index = contents.runs.firstIndex(where: { $0.id == run.id }),
                contents.runs[index].status == status
            else { return false }
            contents.runs[index] = run
            return true
        }
    }

    public func end(_ run: ServiceRun, ifStatus status: ServiceRunStatus?, announcing deliveries: [Delivery]) throws
        -> Bool
    {
        contents.withLock { contents in
            guard let index = contents.runs.firstIndex(where: { $0.id == run.id }),
                status == nil || contents.runs[index].status == status
            else { return false }
            contents.runs[index] = run
            contents.deliveries += deliveries
            return true
        }
    }

    public func recordScheduleEvent(_ event: ScheduleEvent) throws {
        contents.withLock { $0.scheduleEvents.append(event) }
    }

    public func scheduleEvents(agent: String, limit: Int) throws -> [ScheduleEvent] {
        contents.withLock { Array($0.scheduleEvents.filter { $0.agent == agent }.reversed().prefix(limit)) }
    }

    public func skippedCount(agent: String) throws -> Int {
        contents.withLock { $0.scheduleEvents.filter { $0.agent == agent && $0.outcome == .skipped }.count }
    }

    public func suspend(_ suspension: Suspension) throws -> (suspension: Suspension, created: Bool) {
        contents.withLock { contents in
            if let existing = contents.suspensions.first(where: { $0.agent == suspension.agent }) {
                return (existing, false)
            }
            contents.suspensions.append(suspension)
            return (suspension, true)
        }
    }

    public func resume(agent: String?) throws -> Bool {
        contents.withLock { contents in
            let before = contents.suspensions.count
            contents.suspensions.removeAll { $0.agent == agent }
            return contents.suspensions.count < before
        }
    }

    public func suspensions() throws -> [Suspension] { contents.withLock { $0.suspensions } }

    public func conditions() throws -> [String: [AgentCondition]] { contents.withLock { $0.conditions } }

    public func saveConditions(_ changed: [String: [AgentCondition]]) throws {
        contents.withLock { contents in
            for (agent, list) in changed { contents.conditions[agent] = list.isEmpty ? nil : list }
        }
    }

    public func enqueue(_ deliveries: [Delivery]) throws { contents.withLock { $0.deliveries += deliveries } }

    public func dueDeliveries(at time: Date, limit: Int) throws -> [Delivery] {
        contents.withLock { contents in
            Array(
                contents.deliveries.filter { $0.status == .pending && ($0.nextAttemptAt ?? .distantFuture) <= time }
                    .prefix(limit))
        }
    }

    public func nextDeliveryTime() throws -> Date? {
        contents.withLock { $0.deliveries.filter { $0.status == .pending }.compactMap(\.nextAttemptAt).min() }
    }

    public func update(_ delivery: Delivery) throws {
        contents.withLock { contents in
            if let index = contents.deliveries.firstIndex(where: { $0.id == delivery.id }) {
                contents.deliveries[index] = delivery
            }
        }
    }

    public func deliveries(limit: Int, before: String?) throws -> [Delivery] {
        contents.withLock { contents in
            var newestFirst = Array(contents.deliveries.reversed())
            if let before, let index = newestFirst.firstIndex(where: { $0.id == before }) {
                newestFirst = Array(newestFirst[(index + 1)...])
            }
            return Array(newestFirst.prefix(limit))
        }
    }
}
