import AgentryCore
import AgentryModel
import AgentryTesting
import Foundation
import Synchronization
import Testing

/// Webhooks out, against a fake receiver and a clock that stands still: the Standard Webhooks
/// signature, one delivery per URL, retries with backoff until a 2xx, 410 and exhaustion stop.
@Suite struct WebhookDeliveriesTests {
    /// The example of the Standard Webhooks specification's reference libraries.
    @Test func theSignatureIsStandardWebhooks() {
        let signature = WebhookDeliveries.signature(
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    final class Receiver: Sendable {
        struct Seen: Sendable {
            var url: String
            var headers: [String: String]
            var body: String
        }
        let seen = Mutex<[Seen]>([])
        /// Answers in order; the last one repeats.
        let answers: Mutex<[WebhookDeliveries.Answer]>

        init(_ answers: [WebhookDeliveries.Answer]) { self.answers = Mutex(answers) }

        var send: WebhookDeliveries.Sender {
            { url, headers, body in
                self.seen.withLock {
                    $0.append(
                        Seen(
                            url: url, headers: Dictionary(headers, uniquingKeysWith: { $1 }),
                            body: String(decoding: body, as: UTF8.self)))
                }
                return self.answers.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] }
            }
        }
    }

    @Test func aFailedDeliveryIsRetriedWithBackoffUntilItIsAnswered() async throws {
        let store = InMemoryServiceStore()
        let clock = ManualClock()
        let receiver = Receiver([.failure("connection refused"), .status(503), .status(204)])
        let deliveries = WebhookDeliveries(
            store: store, urls: ["http://a.example/hook"], secret: "s3cret", clock: clock,
            logger: .init(label: "test"), send: receiver.send)
        await deliveries.publish(type: "run.completed", data: .object([("id", .string("run_1"))]))
        let first = await deliveries.deliverDue(now: clock.now())
        #expect(first.first?.status == .pending && first.first?.lastError == "connection refused")
        #expect(first.first?.nextAttemptAt == clock.now().addingTimeInterval(5))
        // Not due yet: nothing is sent.
        #expect(await deliveries.deliverDue(now: clock.now().addingTimeInterval(4)).isEmpty)
        clock.advance(by: 5)
        let second = await deliveries.deliverDue(now: clock.now())
        #expect(second.first?.lastStatus == 503 && second.first?.nextAttemptAt == clock.now().addingTimeInterval(30))
        clock.advance(by: 30)
        let third = await deliveries.deliverDue(now: clock.now())
        #expect(third.first?.status == .delivered && third.first?.attempts == 3)
        #expect(try store.nextDeliveryTime() == nil)

        // Every attempt carried the same id, its own timestamp, and a signature a receiver can check.
        let seen = receiver.seen.withLock { $0 }
        #expect(seen.count == 3 && Set(seen.compactMap { $0.headers["webhook-id"] }).count == 1)
        for attempt in seen {
            let id = try #require(attempt.headers["webhook-id"])
            let timestamp = try #require(attempt.headers["webhook-timestamp"].flatMap { Int($0) })
            #expect(
                attempt.headers["webhook-signature"]
                    == WebhookDeliveries.signature(
                        secret: "s3cret", id: id, timestamp: timestamp, body: Array(attempt.body.utf8)))
        }
        let body = try #require(
            try JSONSerialization.jsonObject(with: Data(seen[0].body.utf8)) as? [String: Any])
        #expect(body["type"] as? String == "run.completed")
        #expect((body["data"] as? [String: Any])?["id"] as? String == "run_1")
    }

    /// A service started again with other URLs never POSTs to one taken off its list: what was
    /// pending for it fails, saying why; what was pending for a URL still listed is sent.
    @Test func aURLTakenOffTheListIsNeverPostedToAgain() async throws {
        let store = InMemoryServiceStore()
        let clock = ManualClock()
        let down = Receiver([.status(503)])
        let before = WebhookDeliveries(
            store: store, urls: ["http://kept.example/", "http://removed.example/"], secret: "k", clock: clock,
            logger: .init(label: "test"), send: down.send)
        await before.publish(type: "run.completed", data: .object([]))
        #expect(await before.deliverDue(now: clock.now()).allSatisfy { $0.status == .pending })

        let up = Receiver([.status(204)])
        // Started again, as the service starts: with one URL fewer.
        WebhookDeliveries.failUnlisted(in: store, keeping: ["http://kept.example/"], logger: .init(label: "test"))
        let after = WebhookDeliveries(
            store: store, urls: ["http://kept.example/"], secret: "k", clock: clock, logger: .init(label: "test"),
            send: up.send)
        clock.advance(by: 5)
        await after.deliverDue(now: clock.now())
        #expect(up.seen.withLock { $0.map(\.url) } == ["http://kept.example/"])
        let outcomes = Dictionary(
            try store.deliveries(limit: 10, before: nil).map { ($0.url, $0) }, uniquingKeysWith: { $1 })
        #expect(outcomes["http://kept.example/"]?.status == .delivered)
        let dropped = outcomes["http://removed.example/"]
        #expect(dropped?.status == .failed && dropped?.nextAttemptAt == nil)
        #expect(dropped?.lastError?.contains("no longer") == true, "\(String(describing: dropped))")
        #expect(try store.nextDeliveryTime() == nil, "nothing left pending")

        // A service started with no URL at all: what is pending fails at its start.
        let again = InMemoryServiceStore()
        let earlier = WebhookDeliveries(
            store: again, urls: ["http://kept.example/"], secret: "k", clock: clock, logger: .init(label: "test"),
            send: down.send)
        await earlier.publish(type: "run.completed", data: .object([]))
        WebhookDeliveries.failUnlisted(in: again, keeping: [], logger: .init(label: "test"))
        #expect(try again.deliveries(limit: 10, before: nil).map(\.status) == [.failed])
        #expect(try again.nextDeliveryTime() == nil)
    }

    @Test func goneStopsAtOnceAndAttemptsRunOut() async throws {
        let store = InMemoryServiceStore()
        let clock = ManualClock()
        let gone = Receiver([.status(410)])
        let stopping = WebhookDeliveries(
            store: store, urls: ["http://gone.example/"], secret: "k", clock: clock, logger: .init(label: "test"),
            send: gone.send)
        await stopping.publish(type: "agent.stalled", data: .object([]))
        #expect(await stopping.deliverDue(now: clock.now()).first?.status == .failed)

        let failing = Receiver([.status(500)])
        let other = InMemoryServiceStore()
        let retrying = WebhookDeliveries(
            store: other, urls: ["http://one.example/", "http://two.example/"], secret: "k", clock: clock,
            logger: .init(label: "test"), send: failing.send)
        await retrying.publish(type: "run.completed", data: .object([]))
        var attempts = 0
        while let next = try other.nextDeliveryTime() {
            clock.advance(by: max(0, next.timeIntervalSince(clock.now())))
            await retrying.deliverDue(now: clock.now())
            attempts += 1
            #expect(attempts < 20, "attempts run out")
            if attempts >= 20 { break }
        }
        let ended = try other.deliveries(limit: 10, before: nil)
        #expect(ended.count == 2, "one delivery per URL")
        #expect(ended.allSatisfy { $0.status == .failed && $0.attempts == WebhookDeliveries.retryDelays.count + 1 })
        #expect(failing.seen.withLock { $0.count } == 2 * (WebhookDeliveries.retryDelays.count + 1))
    }
}
