import AgentryCore
import AgentryRender
import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// One run's gateway socket: accepts connections (at most `Limits.connections` at once) and serves
/// each request on it until the session closes.
final class Listener: @unchecked Sendable {
    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    let path: String
    let session: GatewayServer.Session
    let limits: GatewayServer.Limits
    let client: HTTPClient
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let open = NIOLockedValueBox(0)

    init(path: String, session: GatewayServer.Session, limits: GatewayServer.Limits, client: HTTPClient) {
        self.path = path
        self.session = session
        self.limits = limits
        self.client = client
    }

    /// Binds the socket (waiting until it is bound, on this thread only) and serves in the
    /// background: each connection is served by a task of its own.
    func start() throws {
        do {
            let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 64)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        // Half-closure: a last answer is flushed before the connection closes (see `serve`).
                        let connection = try Connection(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                        Task(executorPreference: EventLoopExecutor(channel.eventLoop)) { await self.serve(connection) }
                    }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).wait()
            chmod(path, 0o600)
            channel.withLockedValue { $0 = server }
        } catch {
            throw CoreError(.machineFailed, "cannot serve the model gateway on \(path): \(error)")
        }
    }

    func stop() {
        // Closed before the path goes: the next run of the agent binds a fresh socket there.
        if let server = channel.withLockedValue({ $0 }) { try? server.close().wait() }
        unlink(path)
    }

    // MARK: - One connection

    func serve(_ connection: Connection) async {
        let admitted = open.withLockedValue { count -> Bool in
            guard count < limits.connections else { return false }
            count += 1
            return true
        }
        defer { if admitted { open.withLockedValue { $0 -= 1 } } }
        let channel = connection.channel
        try? await Self.$connection.withValue(channel) { try await serveRequests(connection, admitted: admitted) }
    }

    /// The connection a task serves (its relay's watchdog closes it on a harness that stopped reading).
    @TaskLocal static var connection: (any Channel)?

    func serveRequests(_ connection: Connection, admitted: Bool) async throws {
        let channel = connection.channel
        try await connection.executeThenClose { inbound, outbound in
            var parts = inbound.makeAsyncIterator()
            // Closing at once would drop what the socket has not taken yet (the end of a long answer
            // to a slow reader): the output is shut once written, then the harness closes its side,
            // or is cut off after `closingGrace`.
            func closeAfterFlushing() async throws {
                outbound.finish()
                let cutOff = channel.eventLoop.scheduleTask(in: Self.closingGrace) { channel.close(promise: nil) }
                defer { cutOff.cancel() }
                while try await parts.next() != nil {}
            }
            // The body of the request whose head was read (past the limit dropped and said so); nil
            // when the connection ends first.
            func readBody() async throws -> (body: ByteBuffer, tooLarge: Bool)? {
                var body = ByteBuffer()
                var tooLarge = false
                while let part = try await parts.next() {
                    switch part {
                    case .body(var chunk):
                        if tooLarge || body.readableBytes + chunk.readableBytes > limits.requestBody {
                            tooLarge = true
                            body.clear()
                        } else {
                            body.writeBuffer(&chunk)
                        }
                    case .end: return (body, tooLarge)
                    case .head: return nil
                    }
                }
                return nil
            }
            while true {
                // A request must arrive whole within `requestWait` of the connection opening or of
                // its last answer: an idle or trickling connection does not keep its place.
                let wait = channel.eventLoop.scheduleTask(in: limits.requestWait) { channel.close(promise: nil) }
                defer { wait.cancel() }
                guard case .head(let head)? = try await parts.next() else { return }
                // Screened at its head, before any of its body is read: a connection past the limit,
                // a request without the run's token, or one the gateway does not send on is answered
                // and closed (the rest of it read and dropped), never buffered.
                if let (status, type, message) = screen(head, admitted: admitted) {
                    wait.cancel()
                    try await Self.refuse(outbound, status, type, message, close: true)
                    return try await closeAfterFlushing()
                }
                guard let (body, tooLarge) = try await readBody() else { return }
                wait.cancel()
                let keepAlive = head.isKeepAlive && !tooLarge
                let finished = try await handle(
                    head, body: tooLarge ? nil : body, outbound: outbound, keepAlive: keepAlive)
                if !finished || !keepAlive { return try await closeAfterFlushing() }
            }
        }
    }

    /// Why a request is refused at its head, if it is: the connection is over the limit, the token
    /// is not the run's, or the method or path is not one a model API takes.
    func screen(_ head: HTTPRequestHead, admitted: Bool) -> (HTTPResponseStatus, String, String)? {
        guard admitted else {
            return (
                .serviceUnavailable, "overloaded",
                "more than \(limits.connections) connections to the model gateway at once"
            )
        }
        let presented =
            head.headers.first(name: "x-api-key")
            ?? head.headers.first(name: "authorization").flatMap { value -> String? in
                let parts = value.split(separator: " ", maxSplits: 1)
                return parts.count == 2 && parts[0].lowercased() == "bearer" ? String(parts[1]) : nil
            }
        guard session.admits(presented) else {
            return (
                .unauthorized, "authentication_error",
                "the model gateway takes only the token of a run in progress (this one ended, or belongs to another agent)"
            )
        }
        guard head.method == .POST || head.method == .GET else {
            return (.methodNotAllowed, "method_not_allowed", "the model gateway takes POST and GET only")
        }
        guard Self.isModelPath(head.uri, under: session.primaryPath) else {
            return (
                .notFound, "not_found",
                "the model gateway serves plain paths under \(session.primaryPath.isEmpty ? "/" : session.primaryPath + "/")"
            )
        }
        return nil
    }

    /// Whether `target` is a plain path below `prefix` (the model's base path): it starts with `/`
    /// (never a host), continues `prefix` at a segment boundary, and has no dot segment, no
    /// backslash, no encoded `.`, `/` or `\\` and no control character, so no upstream can be
    /// led outside the base by normalising it.
    static func isModelPath(_ target: String, under prefix: String) -> Bool {
        guard target.hasPrefix("/"), target.hasPrefix(prefix) else { return false }
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        let rest = path.dropFirst(prefix.count)
        guard rest.isEmpty || rest.hasPrefix("/") else { return false }
        guard !target.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0 == "\\" }) else {
            return false
        }
        let lowered = path.lowercased()
        if lowered.contains("%2e") || lowered.contains("%2f") || lowered.contains("%5c") { return false }
        return !path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().contains {
            $0 == "." || $0 == ".."
        }
    }

    /// How long a closing connection waits for the harness to read the end of its last answer.
    static let closingGrace: TimeAmount = .seconds(30)

    /// Answers one request; false when the connection must close (an answer cut short).
    func handle(
        _ head: HTTPRequestHead, body: ByteBuffer?, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        keepAlive: Bool
    ) async throws -> Bool {
        guard let body else {
            try await Self.refuse(
                outbound, .payloadTooLarge, "request_too_large",
                "the request body is over the gateway's limit of \(limits.requestBody >> 20) MiB", close: true)
            return false
        }
        if let budget = session.run.budgetTokens, session.tokensUsed >= budget {
            session.budgetSpent()
            try await Self.refuse(
                outbound, .tooManyRequests, "budget_exceeded",
                "the run's token budget (\(budget) tokens, spec.run.budget) is spent", close: !keepAlive)
            return true
        }
        return try await forward(head, body: body, outbound: outbound, keepAlive: keepAlive)
    }

    /// Sends the request to the first model that answers, and its answer back.
    func forward(
        _ head: HTTPRequestHead, body: ByteBuffer, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        keepAlive: Bool
    ) async throws -> Bool {
        let started = NIODeadline.now()
        let original = Array(body.readableBytesView)
        let fields = await Self.offLoop(original.count) { ModelField.find(in: original).map(\.value) }
        // As a provider's parser reads it: the last of repeated members.
        let requested = fields.last ?? ""
        var passedOver: [String] = []
        var lastReason = ""
        var timedOut = false
        let routes = session.run.routes
        let suffix = String(head.uri.dropFirst(session.primaryPath.count))
        for (index, route) in routes.enumerated() {
            let last = index == routes.count - 1
            // The run's models are the host's choice: a request naming another (a costlier one, or
            // the primary's on a fallback) goes out naming this one.
            var payload = original
            if fields.contains(where: { $0 != route.model }),
                let pinned = await Self.offLoop(original.count, { ModelField.replacing(original, with: route.model) })
            {
                payload = pinned
            }
            let answer: (head: HTTPResponseHead, upstream: Upstream)
            do {
                let request = try HTTPClient.Request(
                    url: Self.trimmed(route.baseURL) + suffix, method: head.method,
                    headers: Self.upstreamHeaders(head.headers, route: route), body: .bytes(payload))
                answer = try await Upstream.start(request, client: client, firstByte: limits.firstByte)
            } catch {
                let reason = Self.describe(error)
                timedOut = reason.contains("no answer")
                lastReason = "\(route.resource): \(reason)"
                passedOver.append(lastReason)
                continue
            }
            let status = Int(answer.head.status.code)
            if !last && (status == 429 || status >= 500) {
                // Nothing of this answer has gone to the harness yet: the next model may answer.
                answer.upstream.cancel()
                lastReason = "\(route.resource): HTTP \(status)"
                passedOver.append(lastReason)
                continue
            }
            return try await relay(
                answer.head, from: answer.upstream, route: route, requested: requested, passedOver: passedOver,
                started: started,
                outbound: outbound)
        }
        let names = routes.map(\.resource).joined(separator: ", then ")
        session.record(
            ModelCall(
                requested: requested, served: nil, status: timedOut ? 504 : 502,
                durationMilliseconds: Self.milliseconds(since: started), fallbacks: passedOver, error: lastReason))
        try await Self.refuse(
            outbound, timedOut ? .gatewayTimeout : .badGateway, "upstream_unavailable",
            "no model answered (tried \(names)): \(passedOver.joined(separator: "; "))", close: !keepAlive)
        return true
    }

    /// Streams an upstream answer to the harness as it comes, reading its usage on the way.
    func relay(
        _ response: HTTPResponseHead, from upstream: Upstream, route: GatewayRoute, requested: String,
        passedOver: [String],
        started: NIODeadline, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws -> Bool {
        var headers = HTTPHeaders()
        for (name, value) in response.headers where !Self.hopByHop.contains(name.lowercased()) {
            headers.add(name: name, value: value)
        }
        let firstByte = Self.milliseconds(since: started)
        var meter = UsageMeter(contentType: response.headers.first(name: "content-type"))
        var call = ModelCall(
            requested: requested, served: route.resource, status: Int(response.status.code),
            firstByteMilliseconds: firstByte, fallbacks: passedOver)
        var recorded = false
        // Recorded before the answer's end goes out, so a harness that has its answer can count on
        // the usage (and the budget) having it too; on a cut answer, when the relay stops.
        func record() {
            guard !recorded else { return }
            recorded = true
            meter.finish()
            call.inputTokens = meter.inputTokens
            call.outputTokens = meter.outputTokens
            call.durationMilliseconds = Self.milliseconds(since: started)
            session.record(call)
        }
        defer { record() }
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)))
        // Whatever of the answer gathered in the pipe while the last write went out is written as
        // one: a stream of small events costs one write per event only while the harness keeps up.
        let pipe = upstream.pipe
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // An answer that stops coming for `idleRead`, or that the harness stops reading
                // for as long, is cut.
                let idle = self.limits.idleRead
                let interval = TimeAmount.nanoseconds(max(idle.nanoseconds / 5, 1_000_000))
                while true {
                    try await Task.sleep(nanoseconds: UInt64(interval.nanoseconds))
                    if let stuck = pipe.stalled(for: idle) {
                        pipe.finish(stuck)
                        // A harness that stopped reading holds the write: its connection goes.
                        if stuck is UnreadAnswer { Self.connection?.close(promise: nil) }
                        return
                    }
                }
            }
            defer {
                pipe.abandon()
                upstream.cancel()
                group.cancelAll()
            }
            while true {
                let batch: ByteBuffer?
                do {
                    batch = try await pipe.take()
                } catch {
                    // After the first byte a failure is the harness's to see: the answer is cut, and said so.
                    call.incomplete = true
                    call.error = Self.describe(error)
                    return false
                }
                guard let batch else { break }
                meter.feed(batch.readableBytesView)
                do {
                    try await outbound.write(.body(.byteBuffer(batch)))
                } catch {
                    call.incomplete = true
                    call.error = Self.describe(pipe.failure ?? error)
                    throw error
                }
            }
            record()
            try await outbound.write(.end(nil))
            return true
        }
    }

    // MARK: - Pieces

    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "content-length",
    ]

    /// The harness's headers minus its token and the hop-by-hop ones, plus the provider's key in the
    /// header its API takes.
    static func upstreamHeaders(_ incoming: HTTPHeaders, route: GatewayRoute) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for (name, value) in incoming {
            let lower = name.lowercased()
            if hopByHop.contains(lower) || ["host", "authorization", "x-api-key", "accept-encoding"].contains(lower) {
                continue
            }
            headers.add(name: name, value: value)
        }
        // Answers are read for their usage: uncompressed.
        headers.add(name: "accept-encoding", value: "identity")
        guard let credential = route.credential else { return headers }
        let key = String(decoding: credential, as: UTF8.self)
        if route.api == "messages" {
            headers.add(name: "x-api-key", value: key)
            if !headers.contains(name: "anthropic-version") {
                headers.add(name: "anthropic-version", value: "2023-06-01")
            }
        } else {
            headers.add(name: "authorization", value: "Bearer " + key)
        }
        return headers
    }

    static func trimmed(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    /// Runs `work` on NIO's thread pool when its input is large (a guest may send 32 MiB of JSON),
    /// so that one connection's parsing does not hold up the others on its event loop.
    static func offLoop<T: Sendable>(_ bytes: Int, _ work: @escaping @Sendable () -> T) async -> T {
        guard bytes > 256 << 10, let result = try? await NIOThreadPool.singleton.runIfActive(work) else {
            return work()
        }
        return result
    }

    static func describe(_ error: any Error) -> String {
        if error is FirstByteTimeout { return "no answer in time" }
        if error is StalledAnswer { return "the answer stalled" }
        if error is UnreadAnswer { return "the harness stopped reading the answer" }
        if let client = error as? HTTPClientError {
            if client == .deadlineExceeded { return "no answer in time" }
            if client == .readTimeout { return "the answer stalled" }
            if client == .remoteConnectionClosed { return "the connection was closed" }
        }
        if let io = error as? IOError { return "cannot connect (\(io.description))" }
        if let channel = error as? ChannelError, case .connectTimeout = channel { return "cannot connect (timed out)" }
        return "\(error)"
    }

    static func milliseconds(since start: NIODeadline) -> Int {
        Int((NIODeadline.now() - start).nanoseconds / 1_000_000)
    }

    /// An error the harness can read, in the shape both API families use.
    static func refuse(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, _ status: HTTPResponseStatus,
        _ type: String, _ message: String, close: Bool
    ) async throws {
        let object: [String: Any] = ["type": "error", "error": ["type": type, "message": message]]
        let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: "\(body.count)")
        if close { headers.add(name: "connection", value: "close") }
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
        try await outbound.write(.end(nil))
    }
}

/// Where a connection's task runs: on the event loop of its own channel, so that reading the
/// harness's request, sending it on and writing the answer back stay on one thread, and never on
/// Swift's cooperative pool, which blocking work elsewhere in the process (a test's subprocess, a
/// command waiting on a guest) may hold. Work that could keep the loop busy (a large request
/// body's JSON) goes to `Listener.offLoop`.
final class EventLoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }
}
