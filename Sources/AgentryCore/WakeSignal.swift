import Foundation

/// How the service's loops (reconcile, schedules, webhooks out) sleep: until their next time, or
/// until someone wakes them, whichever comes first. Wakes while the loop works coalesce into one.
struct WakeSignal {
    /// Yield to wake the loop, from anywhere.
    let continuation: AsyncStream<Void>.Continuation
    var wakes: AsyncStream<Void>.AsyncIterator

    init() {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.continuation = continuation
        wakes = stream.makeAsyncIterator()
    }

    /// Until woken, or `limit` passed (nil: only when woken).
    mutating func wait(for limit: Duration?) async {
        let continuation = self.continuation
        let timer = limit.map { limit in
            Task {
                // Cancelled (woken first): no second wake.
                guard (try? await Task.sleep(for: limit)) != nil else { return }
                continuation.yield()
            }
        }
        _ = await wakes.next()
        timer?.cancel()
    }

    /// Until woken, or `time` came: at least `atLeast` seconds and at most a minute from `now`
    /// (so that a clock that jumps is noticed).
    mutating func wait(until time: Date?, now: Date, atLeast: Double = 0.05) async {
        let seconds = min(60, max(atLeast, (time ?? now.addingTimeInterval(60)).timeIntervalSince(now)))
        await wait(for: .milliseconds(Int(seconds * 1000)))
    }
}
