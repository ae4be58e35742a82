import AgentryBasics
import Synchronization

/// What the event streams follow, looked at together: each tick, one trip to a blocking-work
/// thread reads every followed run (and the live log of each one going on) for all the streams
/// waiting, rather than a trip or two per stream (a hundred streams made up to 800 trips a second,
/// beside the requests being answered).
public final class RunWatch: Sendable {
    /// A run as the look found it (nil: not found), and its live log from the offset asked for
    /// when it is going on (nil: it is not, or the agent's live log is not this run's).
    public struct Look: Sendable {
        public var run: ServiceRun?
        public var output: [UInt8]?
    }

    struct Waiting {
        var run: ServiceRun
        var offset: Int
        var since: ContinuousClock.Instant
        var continuation: CheckedContinuation<Look, Never>
    }

    struct Pending {
        var waiting: [Waiting] = []
        var ticking = false
    }

    let store: any ServiceStore
    let state: any StateStore
    let interval: Duration
    let patience: Duration
    let pending = Mutex(Pending())

    public init(
        store: any ServiceStore, state: any StateStore, interval: Duration = .milliseconds(250),
        patience: Duration = .seconds(1)
    ) {
        self.store = store
        self.state = state
        self.interval = interval
        self.patience = patience
    }

    /// `run` at the first look (one every `interval`) that finds it changed or with new output
    /// from `offset` (while it is going on), or after `patience` as it is then.
    public func next(_ run: ServiceRun, offset: Int) async -> Look {
        await withCheckedContinuation { continuation in
            let first = pending.withLock { pending in
                pending.waiting.append(
                    Waiting(run: run, offset: offset, since: .now, continuation: continuation))
                defer { pending.ticking = true }
                return !pending.ticking
            }
            if first { Task { await self.tick() } }
        }
    }

    /// Looks every `interval` for as long as anyone waits.
    func tick() async {
        while true {
            try? await Task.sleep(for: interval)
            let batch = pending.withLock { pending -> [Waiting] in
                defer { pending.waiting = [] }
                if pending.waiting.isEmpty { pending.ticking = false }
                return pending.waiting
            }
            if batch.isEmpty { return }
            let (store, state) = (self.store, self.state)
            let asked = batch.map { ($0.run, $0.offset) }
            let looks = await BlockingWork.run {
                asked.map { run, offset in
                    guard let now = (try? store.run(id: run.id)) ?? nil else { return Look(run: nil, output: nil) }
                    guard now.status == .running, let record = now.recordID,
                        let live = (try? state.liveLog(agent: run.agent, run: record, from: offset)) ?? nil
                    else { return Look(run: now, output: nil) }
                    return Look(run: now, output: live.bytes)
                }
            }
            // A stream with nothing new waits on (rather than a hundred woken together every tick
            // for nothing), but at most `patience`: it has keepalives to send and a stop to see.
            let now = ContinuousClock.now
            var still: [Waiting] = []
            for (waiting, look) in zip(batch, looks) {
                let news = look.run?.status != waiting.run.status || look.output?.isEmpty == false
                if news || now - waiting.since >= patience {
                    waiting.continuation.resume(returning: look)
                } else {
                    still.append(waiting)
                }
            }
            if !still.isEmpty { pending.withLock { $0.waiting += still } }
        }
    }
}
