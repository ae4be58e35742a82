import AsyncHTTPClient
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// One request to a model. Its answer's head is awaited (at most the gateway's `firstByte`), then
/// its body is carried into `pipe` on the event loop that reads it, with no task switch per chunk:
/// a stream of small events costs little more than the bytes.
final class Upstream: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = Void

    let pipe = RelayPipe()
    private let head: EventLoopPromise<HTTPResponseHead>
    /// Whether `head` is settled; and the request, to cancel.
    private let state = NIOLockedValueBox<(settled: Bool, task: HTTPClient.Task<Void>?)>((false, nil))

    private init(head: EventLoopPromise<HTTPResponseHead>) {
        self.head = head
    }

    /// Sends `request`; returns the answer's head, or throws why none came (`FirstByteTimeout`
    /// past `firstByte`, when the request is cancelled).
    static func start(
        _ request: HTTPClient.Request, client: HTTPClient, firstByte: TimeAmount
    ) async throws -> (HTTPResponseHead, Upstream) {
        let loop = client.eventLoopGroup.any()
        let upstream = Upstream(head: loop.makePromise())
        let task = client.execute(request: request, delegate: upstream, eventLoop: .indifferent)
        upstream.state.withLockedValue { $0.task = task }
        let timer = loop.scheduleTask(in: firstByte) {
            upstream.settle(.failure(FirstByteTimeout()))
            task.cancel()
        }
        defer { timer.cancel() }
        do {
            return (try await upstream.head.futureResult.get(), upstream)
        } catch {
            task.cancel()
            throw error
        }
    }

    /// Stops the request (its connection closes); the pipe ends with the cancellation.
    func cancel() {
        state.withLockedValue { $0.task }?.cancel()
    }

    private func settle(_ result: Result<HTTPResponseHead, any Error>) {
        let first = state.withLockedValue { state -> Bool in
            defer { state.settled = true }
            return !state.settled
        }
        if first { head.completeWith(result) }
    }

    func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        settle(.success(head))
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        pipe.offer(buffer, on: task.eventLoop)
    }

    func didReceiveError(task: HTTPClient.Task<Void>, _ error: any Error) {
        settle(.failure(error))
        pipe.finish(error)
    }

    func didFinishRequest(task: HTTPClient.Task<Void>) throws {
        pipe.finish(nil)
    }
}

struct FirstByteTimeout: Error {}
struct StalledAnswer: Error {}
struct UnreadAnswer: Error {}
struct RelayAbandoned: Error {}

/// Carries an answer from the event loop reading the upstream to the task writing to the harness:
/// `take` hands over everything offered since the last, so small events that arrive while a write
/// is under way go out together. Holds about `limit` bytes; past it the upstream is not read until
/// the writer takes them (backpressure).
final class RelayPipe: Sendable {
    static let limit = 1 << 20

    private struct State {
        var buffer = ByteBuffer()
        var ended = false
        var failure: (any Error)?
        var abandoned = false
        /// When the upstream last sent something, and the promise of room it waits on when full.
        var lastChunk = NIODeadline.now()
        var room: EventLoopPromise<Void>?
        /// Since when the upstream waits for the harness to read.
        var fullSince: NIODeadline?
        var writer: CheckedContinuation<Void, Never>?
    }

    private let state = NIOLockedValueBox(State())

    /// Adds a chunk; the future completes when the upstream may be read on (at once unless full),
    /// and fails once the writer has gone.
    func offer(_ chunk: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void> {
        var chunk = chunk
        let (future, wake) = state.withLockedValue {
            state -> (EventLoopFuture<Void>, CheckedContinuation<Void, Never>?) in
            if state.abandoned || state.ended { return (loop.makeFailedFuture(RelayAbandoned()), nil) }
            state.lastChunk = .now()
            state.buffer.writeBuffer(&chunk)
            defer { state.writer = nil }
            guard state.buffer.readableBytes >= Self.limit else {
                return (loop.makeSucceededVoidFuture(), state.writer)
            }
            let room = loop.makePromise(of: Void.self)
            state.room = room
            state.fullSince = .now()
            return (room.futureResult, state.writer)
        }
        wake?.resume()
        return future
    }

    /// Why the relay is stuck past `limit`, if it is: the upstream has sent nothing though there was
    /// room for it, or the harness has not read what there was.
    func stalled(for limit: TimeAmount) -> (any Error)? {
        state.withLockedValue { state in
            if let since = state.fullSince { return NIODeadline.now() - since > limit ? UnreadAnswer() : nil }
            return !state.ended && NIODeadline.now() - state.lastChunk > limit ? StalledAnswer() : nil
        }
    }

    /// Why the relay ended, when it broke off.
    var failure: (any Error)? { state.withLockedValue { $0.failure } }

    /// The upstream's answer ended, whole (nil) or broken off. The first end counts.
    func finish(_ failure: (any Error)?) {
        let wake = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard !state.ended else { return nil }
            state.ended = true
            state.failure = failure
            defer { state.writer = nil }
            return state.writer
        }
        wake?.resume()
    }

    /// Everything gathered so far, waiting for some; nil at the end of a whole answer, and the
    /// upstream's error at the end of a broken one.
    func take() async throws -> ByteBuffer? {
        while true {
            let (batch, room, end) = state.withLockedValue {
                state -> (ByteBuffer?, EventLoopPromise<Void>?, Result<Void, any Error>?) in
                if state.buffer.readableBytes > 0 {
                    let batch = state.buffer
                    state.buffer = ByteBuffer()
                    state.fullSince = nil
                    defer { state.room = nil }
                    return (batch, state.room, nil)
                }
                if state.ended { return (nil, nil, state.failure.map { .failure($0) } ?? .success(())) }
                return (nil, nil, nil)
            }
            if let batch {
                room?.succeed()
                return batch
            }
            if let end {
                try end.get()
                return nil
            }
            await withCheckedContinuation { (waiting: CheckedContinuation<Void, Never>) in
                let ready = state.withLockedValue { state -> Bool in
                    if state.buffer.readableBytes > 0 || state.ended { return true }
                    state.writer = waiting
                    return false
                }
                if ready { waiting.resume() }
            }
        }
    }

    /// The writer has gone (the answer was written, or the harness left): the upstream is read no
    /// further.
    func abandon() {
        let room = state.withLockedValue { state -> EventLoopPromise<Void>? in
            state.abandoned = true
            defer { state.room = nil }
            return state.room
        }
        room?.fail(RelayAbandoned())
    }
}
