import CGuestSupport
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Runs blocking work (libgit2, QEMU and its tools, the guest's control channel, disk formatting)
/// on threads of its own, never on Swift concurrency's cooperative pool, whose few threads must
/// stay free for the tasks that wait: one slow guest must not stall every other agent's work.
///
/// Not on a Dispatch queue either: on Linux, libdispatch lets only about ten blocked items of a
/// queue run at once and adds threads slowly, so ten guests that do not answer would stall every
/// other agent. Each piece of work gets a thread of its own at once (an idle one when there is one,
/// a new one otherwise); callers bound how much they start (`--parallelism`, one run per agent).
public enum BlockingWork {
    static let foreground = WorkerThreads(name: "blocking-work", lowered: 0)
    static let background = WorkerThreads(name: "background-work", lowered: 5)
    static var threads: WorkerThreads { inBackground ? background : foreground }

    /// True in a task whose blocking work gives way to others' (a service's runs, beside the
    /// requests it answers): it runs on threads whose nice is 5 more than the process's, which get
    /// a third of the CPU time of its other threads when both want it.
    @TaskLocal public static var inBackground = false

    /// Runs `body` on a blocking-work thread and resumes the caller with its result.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            threads.submit { continuation.resume(with: Result { try body() }) }
        }
    }

    /// The same for work that cannot fail.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            threads.submit { continuation.resume(returning: body()) }
        }
    }

    /// The same, waiting at most `patience` (or until the task is cancelled): nil when `body` has
    /// not ended by then. It goes on, on its thread, and its result is dropped: for work that
    /// cannot be stopped from outside.
    public static func run<T: Sendable>(waitingAtMost patience: Duration, _ body: @escaping @Sendable () -> T) async
        -> T?
    {
        let waiting = Mutex<CheckedContinuation<T?, Never>?>(nil)
        let resume: @Sendable (T?) -> Void = { value in
            waiting.withLock { continuation in
                defer { continuation = nil }
                return continuation
            }?.resume(returning: value)
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
                waiting.withLock { $0 = continuation }
                let ended = DispatchSemaphore(value: 0)
                threads.submit {
                    resume(body())
                    ended.signal()
                }
                // The deadline is kept by a thread of its own, not a Dispatch timer: Dispatch's
                // global threads may all be busy (blocked) when it is due.
                let (seconds, attoseconds) = patience.components
                let nanoseconds = max(0, seconds) * 1_000_000_000 + attoseconds / 1_000_000_000
                threads.submit {
                    if ended.wait(timeout: .now() + .nanoseconds(Int(nanoseconds))) == .timedOut { resume(nil) }
                }
                if Task.isCancelled { resume(nil) }
            }
        } onCancel: {
            resume(nil)
        }
    }

    /// Starts `body` on a blocking-work thread; the caller (itself blocking work) takes its result
    /// later with `Pending.wait()`, doing something else meanwhile.
    public static func start<T: Sendable>(_ body: @escaping @Sendable () -> T) -> Pending<T> {
        let pending = Pending<T>()
        threads.submit { pending.finish(body()) }
        return pending
    }

    /// Starts `body` on a blocking-work thread, and returns: for work that reports by itself.
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        threads.submit(body)
    }

    /// Drops `value` on a blocking-work thread: freeing a large structure (a plan of 10,000 agents)
    /// takes time the caller need not wait for.
    public static func discard<T>(_ value: sending T) {
        let held = Discarded(value)
        threads.submit { held.drop() }
    }

    /// How many threads do blocking work now, busy or idle (idle ones end after a while).
    public static var threadCount: Int { foreground.count + background.count }
}

/// The result of work started with `BlockingWork.start`.
public final class Pending<T: Sendable>: Sendable {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<T?>(nil)

    func finish(_ value: T) {
        result.withLock { $0 = value }
        done.signal()
    }

    /// Blocks until the work is done; its result.
    public func wait() -> T {
        done.wait()
        done.signal()  // a second wait returns at once
        return result.withLock { $0! }
    }
}

/// A value on its way to be freed on another thread.
final class Discarded<T>: @unchecked Sendable {
    // Set once here, dropped once there: the submission orders the two. (Sent, not shared: the
    // caller gave it up.)
    private var value: T?

    init(_ value: sending T) { self.value = value }

    func drop() { value = nil }
}

/// Threads that each take one job at a time; one is started whenever none is idle, and an idle one
/// ends after `idleLimit`.
final class WorkerThreads: Sendable {
    typealias Job = @Sendable () -> Void

    final class Worker: Sendable {
        let wake = DispatchSemaphore(value: 0)
        let job: Mutex<Job?>

        init(_ job: @escaping Job) { self.job = Mutex(job) }
    }

    struct Pool {
        var idle: [Worker] = []
        var count = 0
    }

    let pool = Mutex(Pool())
    let idleLimit: DispatchTimeInterval
    /// Each thread's name (for `top -H` and perf: a new thread otherwise takes its creator's), and
    /// how much higher its nice is than its creator's.
    let name: String
    let lowered: Int32

    init(name: String, lowered: Int32, idleLimit: DispatchTimeInterval = .seconds(30)) {
        self.name = name
        self.lowered = lowered
        self.idleLimit = idleLimit
    }

    var count: Int { pool.withLock { $0.count } }

    func submit(_ job: @escaping Job) {
        if let worker = pool.withLock({ $0.idle.popLast() }) {
            worker.job.withLock { $0 = job }
            worker.wake.signal()
            return
        }
        let worker = Worker(job)
        pool.withLock { $0.count += 1 }
        start(worker)
    }

    func start(_ worker: Worker) {
        let context = Unmanaged.passRetained(Started(threads: self, worker: worker)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let started = pthread_create(
            &thread, &attributes,
            { context in
                let started = Unmanaged<Started>.fromOpaque(context!).takeRetainedValue()
                _ = agentry_name_thread(started.threads.name)
                started.threads.serve(started.worker, kept: started.threads.takeNice())
                return nil
            }, context)
        if started != 0 {
            // No thread to be had (the process's limit): the job runs here rather than never.
            Unmanaged<Started>.fromOpaque(context).release()
            pool.withLock { $0.count -= 1 }
            worker.job.withLock { job in
                defer { job = nil }; return job
            }?()
        }
    }

    final class Started {
        let threads: WorkerThreads
        let worker: Worker

        init(threads: WorkerThreads, worker: Worker) {
            self.threads = threads
            self.worker = worker
        }
    }

    /// Gives the calling (new) thread the pool's nice: the process's, plus `lowered`. False when it
    /// cannot: a thread started by one with a higher nice (background work starting other work)
    /// may not lower its own without privileges.
    func takeNice() -> Bool {
        let wanted = min(19, agentry_process_nice() + lowered)
        if agentry_thread_nice() != wanted { _ = agentry_set_thread_nice(wanted) }
        return agentry_thread_nice() == wanted
    }

    /// A worker's life: its job, then idle until handed another or until `idleLimit` passes. A
    /// worker not `kept` (its nice is not the pool's) ends after its one job.
    func serve(_ worker: Worker, kept: Bool = true) {
        while true {
            if let job = worker.job.withLock({ job in
                defer { job = nil }; return job
            }) {
                job()
            }
            if !kept {
                pool.withLock { $0.count -= 1 }
                return
            }
            pool.withLock { $0.idle.append(worker) }
            guard worker.wake.wait(timeout: .now() + idleLimit) == .timedOut else { continue }
            let retired = pool.withLock { pool in
                guard let index = pool.idle.firstIndex(where: { $0 === worker }) else { return false }
                pool.idle.remove(at: index)
                pool.count -= 1
                return true
            }
            if retired { return }
            // Handed a job just as it timed out: the hand-over's signal follows.
            worker.wake.wait()
        }
    }
}
