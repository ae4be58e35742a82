import AgentryBasics
import AgentryModel
import Foundation
import Logging

/// Webhooks out (`agentry serve --notify-url`): each event is stored, one delivery per URL, then
/// POSTed with the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) and retried with backoff
/// until a 2xx answer or the attempts run out (410 Gone stops at once). Deliveries survive a
/// restart: pending ones carry on when the service starts again, to the URLs it is still given
/// (one taken off the list is never POSTed to again: `failUnlisted`, at the start).
public actor WebhookDeliveries {
    /// What one attempt got: an HTTP status, or why there was none.
    public enum Answer: Sendable, Equatable {
        case status(Int)
        case failure(String)
    }

    /// Sends one POST (url, headers, body) and says what came back; bounded in time by the sender.
    public typealias Sender = @Sendable (String, [(String, String)], [UInt8]) async -> Answer

    /// The waits after each failed attempt: 7 attempts over about 2h45m.
    public static let retryDelays: [Double] = [5, 30, 120, 600, 1800, 7200]
    /// Attempts sent at once, at most.
    public static let parallel = 8

    let store: any ServiceStore
    let urls: [String]
    let key: [UInt8]
    let clock: any WallClock
    let logger: Logger
    let send: Sender
    var wake: AsyncStream<Void>.Continuation?
    /// A delivery's outcome could not be written: wait before trying again (not a hot loop).
    var writeFailed = false

    /// `secret`: the signing secret; `whsec_` followed by base64 (the Standard Webhooks form) is
    /// decoded, anything else is used as it is.
    public init(
        store: any ServiceStore, urls: [String], secret: String, clock: any WallClock, logger: Logger,
        send: @escaping Sender
    ) {
        self.store = store
        self.urls = urls
        self.key = Self.key(secret)
        self.clock = clock
        self.logger = logger
        self.send = send
    }

    static func key(_ secret: String) -> [UInt8] {
        if secret.hasPrefix("whsec_"), let decoded = Data(base64Encoded: String(secret.dropFirst(6))) {
            return Array(decoded)
        }
        return Array(secret.utf8)
    }

    /// `v1,<base64>`: the Standard Webhooks signature of `body` sent as `id` at `timestamp`.
    public static func signature(secret: String, id: String, timestamp: Int, body: [UInt8]) -> String {
        signature(key: key(secret), id: id, timestamp: timestamp, body: body)
    }

    /// `type` with `data`, one delivery for every URL, to be stored (`publish`, or with what they
    /// announce: see `RunAnnouncer`). The body is `{"type", "timestamp", "data"}`.
    public nonisolated func deliveries(type: String, data: JSON) -> [Delivery] {
        guard !urls.isEmpty else { return [] }
        let now = clock.now()
        let body = JSON.object([
            ("type", .string(type)), ("timestamp", .string(Timestamp.rfc3339(now.timeIntervalSince1970))),
            ("data", data),
        ]).rendered(pretty: false)
        return urls.map { url in
            Delivery(id: "msg_" + Hex.random(bytes: 12), url: url, type: type, payload: body, createdAt: now)
        }
    }

    /// Deliveries were stored: send what is due.
    public func wakeUp() { wake?.yield() }

    /// Stores `type` with `data` for every URL, and wakes the sender.
    public func publish(type: String, data: JSON) {
        let deliveries = deliveries(type: type, data: data)
        guard !deliveries.isEmpty else { return }
        do { try store.enqueue(deliveries) } catch {
            logger.error("cannot store a webhook", metadata: ["type": "\(type)", "error": "\(error)"])
            return
        }
        wake?.yield()
    }

    /// `https://host/…`: a URL as logs show it (a path may hold a credential, as Slack's do).
    public static func shown(_ url: String) -> String {
        guard let parts = URLComponents(string: url), let host = parts.host else { return "(a URL)" }
        let port = parts.port.map { ":\($0)" } ?? ""
        let path = parts.path.isEmpty || parts.path == "/" ? parts.path : "/…"
        return "\(parts.scheme ?? "http")://\(host)\(port)\(path)"
    }

    /// Sends what is due at `now` (nil: the clock's now), at most `parallel` at once; returns the
    /// deliveries as updated. An attempt cut short by cancellation (the service stopping) does not
    /// count.
    @discardableResult
    public func deliverDue(now given: Date?) async -> [Delivery] {
        let now = given ?? clock.now()
        guard let due = try? store.dueDeliveries(at: now, limit: Self.parallel), !due.isEmpty else { return [] }
        writeFailed = false
        var updated: [Delivery] = []
        let timestamp = Int(now.timeIntervalSince1970)
        let results = await withTaskGroup(of: (Delivery, Answer).self) { group in
            for delivery in due {
                let body = Array(delivery.payload.utf8)
                let headers = [
                    ("content-type", "application/json"), ("webhook-id", delivery.id),
                    ("webhook-timestamp", String(timestamp)),
                    ("webhook-signature", Self.signature(key: key, id: delivery.id, timestamp: timestamp, body: body)),
                    ("user-agent", "agentry"),
                ]
                let send = self.send
                group.addTask { (delivery, await send(delivery.url, headers, body)) }
            }
            var results: [(Delivery, Answer)] = []
            for await result in group { results.append(result) }
            return results
        }
        // Backoff counts from the end of the attempt, not its start.
        let ended = max(now, clock.now())
        for (sent, answer) in results {
            if Task.isCancelled, case .failure = answer { continue }
            var delivery = sent
            delivery.attempts += 1
            switch answer {
            case .status(let code):
                delivery.lastStatus = code
                delivery.lastError = nil
            case .failure(let why):
                delivery.lastStatus = nil
                delivery.lastError = why
            }
            let result: String
            if case .status(let code) = answer, (200..<300).contains(code) {
                delivery.status = .delivered
                delivery.deliveredAt = clock.now()
                delivery.nextAttemptAt = nil
                result = "delivered"
            } else if answer == .status(410) || delivery.attempts > Self.retryDelays.count {
                delivery.status = .failed
                delivery.nextAttemptAt = nil
                result = "failed"
                logger.warning(
                    "a webhook was not delivered",
                    metadata: [
                        "id": "\(delivery.id)", "url": "\(Self.shown(delivery.url))",
                        "attempts": "\(delivery.attempts)",
                        "last": "\(delivery.lastStatus.map(String.init) ?? "no answer")",
                    ])
            } else {
                delivery.nextAttemptAt = ended.addingTimeInterval(Self.retryDelays[delivery.attempts - 1])
                result = "retrying"
            }
            ServiceMetrics.delivery(result)
            do { try store.update(delivery) } catch {
                writeFailed = true
                logger.error(
                    "cannot record a webhook's delivery", metadata: ["id": "\(delivery.id)", "error": "\(error)"])
            }
            updated.append(delivery)
        }
        return updated
    }

    /// At a service's start: what is pending for URLs it is not given (taken off `--notify-url`,
    /// or none given at all) fails, saying so, rather than wait for a URL that may never be given
    /// again (the URLs do not change while it runs).
    public static func failUnlisted(in store: any ServiceStore, keeping urls: [String], logger: Logger) {
        guard let pending = try? store.dueDeliveries(at: .distantFuture, limit: 1_000_000) else { return }
        for var delivery in pending where !urls.contains(delivery.url) {
            delivery.status = .failed
            delivery.nextAttemptAt = nil
            delivery.lastError = "not sent: its URL is no longer one the service notifies (--notify-url)"
            logger.warning(
                "a webhook to a URL no longer configured is dropped",
                metadata: ["id": "\(delivery.id)", "url": "\(Self.shown(delivery.url))"])
            ServiceMetrics.delivery("failed")
            do { try store.update(delivery) } catch {
                logger.error(
                    "cannot record a webhook's delivery", metadata: ["id": "\(delivery.id)", "error": "\(error)"])
            }
        }
    }

    static func signature(key: [UInt8], id: String, timestamp: Int, body: [UInt8]) -> String {
        let signed = Array("\(id).\(timestamp).".utf8) + body
        return "v1," + Data(HMACSHA256.mac(key: key, message: signed)).base64EncodedString()
    }

    /// Delivers until cancelled: wakes when something is published, or when the next is due.
    public func run() async {
        var signal = WakeSignal()
        wake = signal.continuation
        while !Task.isCancelled {
            let sent = await deliverDue(now: nil)
            // A full batch: more may be due at once (unless the outcomes could not be written).
            if sent.count == Self.parallel && !writeFailed { continue }
            let next = (try? store.nextDeliveryTime()) ?? nil
            await signal.wait(until: next, now: clock.now(), atLeast: writeFailed ? 5 : 0.05)
        }
    }
}
