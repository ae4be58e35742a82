import AgentryBasics
import AgentryRender
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The egress proxy of one machine whose egress is an allowlist, served by its supervisor on a unix
/// socket (`egress.sock`). QEMU's user network runs with `restrict=on` (nothing the guest sends
/// leaves the host) and hands each TCP connection to 10.0.2.100:3128 to a `socat` that connects
/// here. The guest finds it through `HTTPS_PROXY`/`HTTP_PROXY`, which runs set.
///
/// What a guest sends is parsed by NIO's HTTP/1 parser (llhttp) and checked strictly: `CONNECT
/// host:port` (HTTPS) or one absolute-form `http://` request per connection, to a plain host name
/// or address on the allowlist (read for each request: an installation widens it for a while);
/// anything else is answered 400 or 403 and the connection closed. A request's own `Host` header
/// never decides where it goes; two `Host` headers are refused.
///
/// The host's cost is bounded per machine: one event-loop thread, at most `connectionLimit`
/// connections at once (more are answered 503), a deadline on the request head and on idle
/// relays, and reading paused while the other side is not writable.
public final class EgressService: Sendable {
    public struct Limits: Sendable {
        public var connections = 64
        public var requestHead: TimeAmount = .seconds(10)
        public var idle: TimeAmount = .minutes(5)
        public var connect: TimeAmount = .seconds(20)

        public init() {}
    }

    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    let open: NIOLockedValueBox<Int>

    /// Listens on `socket`; `allowlist` is asked for each request.
    public init(socket path: String, limits: Limits = Limits(), allowlist: @escaping @Sendable () -> EgressAllowlist)
        throws
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let open = NIOLockedValueBox(0)
        unlink(path)
        do {
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { child in
                    let admitted = open.withLockedValue { count -> Bool in
                        guard count < limits.connections else { return false }
                        count += 1
                        return true
                    }
                    child.closeFuture.whenComplete { _ in
                        if admitted { open.withLockedValue { $0 -= 1 } }
                    }
                    guard admitted else {
                        return child.eventLoop.makeCompletedFuture {
                            try child.pipeline.syncOperations.addHandler(
                                Refusal(
                                    status: .serviceUnavailable,
                                    message:
                                        "agentry: this machine has \(limits.connections) connections through its egress proxy already"
                                ))
                        }
                    }
                    return child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
                            name: "decoder")
                        try child.pipeline.syncOperations.addHandler(
                            ProxyHandler(limits: limits, allowlist: allowlist), name: "proxy")
                    }
                }
                .bind(unixDomainSocketPath: path).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw MachineError(.hostCommandFailed, "cannot serve the egress proxy on \(path): \(error)")
        }
        self.group = group
        self.open = open
    }

    /// Connections open now.
    public var connections: Int { open.withLockedValue { $0 } }

    public func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// Letters, digits, dots and hyphens (a name or an IPv4 address), or an IPv6 address.
    static func isPlainHost(_ host: String) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        if host.contains(":") {
            return host.unicodeScalars.allSatisfy {
                ("0"..."9").contains($0) || ("a"..."f").contains($0) || ("A"..."F").contains($0) || $0 == ":"
                    || $0 == "."
            }
        }
        return host.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "-"
        }
    }

    static func response(_ status: HTTPResponseStatus, _ message: String) -> String {
        let body = message + "\n"
        return
            "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    }
}

/// Answers a connection over the limit and closes it.
final class Refusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let status: HTTPResponseStatus
    let message: String

    init(status: HTTPResponseStatus, message: String) {
        self.status = status
        self.message = message
    }

    func channelActive(context: ChannelHandlerContext) {
        let text = EgressService.response(status, message)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text)))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// One guest connection: its request head (within a deadline), checked, then relayed.
final class ProxyHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    enum State {
        /// Waiting for the request head.
        case head
        /// Connecting upstream; body parts wait (reading is paused).
        case connecting([HTTPServerRequestPart])
        /// A plain HTTP request going on to `upstream`.
        case forwarding(any Channel)
        /// The request was sent; anything more the guest sends is not relayed (one per connection).
        case done
        case closed
    }

    let limits: EgressService.Limits
    let allowlist: @Sendable () -> EgressAllowlist
    var state = State.head
    var headDeadline: Scheduled<Void>?

    init(limits: EgressService.Limits, allowlist: @escaping @Sendable () -> EgressAllowlist) {
        self.limits = limits
        self.allowlist = allowlist
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        headDeadline = context.eventLoop.scheduleTask(in: limits.requestHead) {
            let (handler, context) = loopBound.value
            guard case .head = handler.state else { return }
            handler.refuse(
                context, .requestTimeout,
                "agentry: no complete request within \(Duration.nanoseconds(handler.limits.requestHead.nanoseconds).goStyle)"
            )
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The parser refused what the guest sent (bare LF, a space before a colon, a bad token...).
        if case .head = state, error is HTTPParserError {
            refuse(context, .badRequest, "agentry: not a well-formed HTTP/1.1 request (\(error))")
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        headDeadline?.cancel()
        if case .forwarding(let upstream) = state { upstream.close(promise: nil) }
        state = .closed
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch state {
        case .head:
            guard case .head(let head) = part else { return }
            headDeadline?.cancel()
            begin(context, head)
        case .connecting(var parts):
            parts.append(part)
            state = .connecting(parts)
        case .forwarding(let upstream):
            forward(part, to: upstream)
        case .done, .closed:
            // A second request on the connection is never relayed.
            break
        }
    }

    func begin(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        guard head.headers[canonicalForm: "host"].count <= 1 else {
            return refuse(context, .badRequest, "agentry: a request with two Host headers is refused")
        }
        var host: String
        var port: Int
        var target = ""
        if head.method == .CONNECT {
            guard let colon = head.uri.lastIndex(of: ":"), let number = Int(head.uri[head.uri.index(after: colon)...])
            else { return refuse(context, .badRequest, "agentry: CONNECT needs host:port") }
            host = String(head.uri[..<colon])
            port = number
        } else {
            guard let url = URL(string: head.uri), url.scheme == "http", let name = url.host else {
                return refuse(context, .badRequest, "agentry: expected CONNECT or an absolute http:// URL")
            }
            host = name
            port = url.port ?? 80
            let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
            target = components?.percentEncodedPath ?? "/"
            if target.isEmpty { target = "/" }
            if let query = components?.percentEncodedQuery { target += "?" + query }
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        // Only plain host names and addresses go further: a NUL, a space or any other byte in a
        // name would be cut or read differently by the resolver than by the allowlist check.
        guard EgressService.isPlainHost(host), (1...65535).contains(port) else {
            return refuse(context, .badRequest, "agentry: \"\(host)\" is not a host name or address")
        }
        let allowed = allowlist()
        guard allowed.allows(host: host, port: port) else {
            return refuse(
                context, .forbidden,
                "agentry: egress to \(host):\(port) is not allowed; this machine may reach \(allowed.entries.joined(separator: ", ")) (the Environment's network.egress)"
            )
        }
        state = .connecting([])
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        // 10.0.2.2 is the host as QEMU's user network shows it to the guest (where a local model
        // server, `baseUrl: http://10.0.2.2:8080/v1`, listens on the host's loopback).
        let destination = host == "10.0.2.2" ? "127.0.0.1" : host
        let client = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let tunnel = head.method == .CONNECT
        let limits = limits
        let (name, number, path) = (host, port, target)
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(limits.connect)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { upstream in
                upstream.eventLoop.makeCompletedFuture {
                    if !tunnel { try upstream.pipeline.syncOperations.addHandler(HTTPRequestEncoder()) }
                    try upstream.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: limits.idle))
                    try upstream.pipeline.syncOperations.addHandler(Relay(peer: client, endsPeer: true))
                }
            }
            .connect(host: destination, port: port)
            .hop(to: context.eventLoop)
            .whenComplete { result in
                let (handler, context) = loopBound.value
                switch result {
                case .failure(let error):
                    handler.refuse(context, .badGateway, "agentry: cannot connect to \(name):\(number): \(error)")
                case .success(let upstream):
                    if tunnel {
                        handler.tunnel(context, upstream)
                    } else {
                        handler.request(context, upstream, head: head, host: name, port: number, target: path)
                    }
                }
            }
    }

    /// CONNECT: 200, then bytes both ways (the parser steps aside; what it read ahead goes on).
    func tunnel(_ context: ChannelHandlerContext, _ upstream: any Channel) {
        guard case .connecting = state else { return upstream.close(promise: nil) }
        state = .done
        context.writeAndFlush(
            wrapOutboundOut(context.channel.allocator.buffer(string: "HTTP/1.1 200 Connection established\r\n\r\n")),
            promise: nil)
        let pipeline = context.pipeline
        do {
            try pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: limits.idle), position: .first)
            try pipeline.syncOperations.addHandler(Relay(peer: upstream, endsPeer: true))
        } catch {
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        pipeline.syncOperations.removeHandler(self, promise: nil)
        _ = pipeline.removeHandler(name: "decoder")
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
    }

    /// Plain HTTP: the request goes on in origin form, with the Host the allowlist checked and
    /// `Connection: close`; the response comes back as it is, and the connection ends with it.
    func request(
        _ context: ChannelHandlerContext, _ upstream: any Channel, head: HTTPRequestHead, host: String, port: Int,
        target: String
    ) {
        guard case .connecting(let parts) = state else { return upstream.close(promise: nil) }
        var forwarded = HTTPRequestHead(version: .http1_1, method: head.method, uri: target)
        for (name, value) in head.headers {
            let lowered = name.lowercased()
            if lowered == "host" || lowered.hasPrefix("proxy-") || lowered == "connection" || lowered == "keep-alive" {
                continue
            }
            forwarded.headers.add(name: name, value: value)
        }
        let hostHeader = (host.contains(":") ? "[\(host)]" : host) + (port == 80 ? "" : ":\(port)")
        forwarded.headers.replaceOrAdd(name: "Host", value: hostHeader)
        forwarded.headers.replaceOrAdd(name: "Connection", value: "close")
        state = .forwarding(upstream)
        upstream.write(HTTPClientRequestPart.head(forwarded), promise: nil)
        for part in parts { forward(part, to: upstream) }
        upstream.flush()
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
    }

    func forward(_ part: HTTPServerRequestPart, to upstream: any Channel) {
        switch part {
        case .head:
            break
        case .body(let buffer):
            upstream.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
        case .end(let trailers):
            upstream.writeAndFlush(HTTPClientRequestPart.end(trailers), promise: nil)
            state = .done
        }
    }

    func refuse(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        headDeadline?.cancel()
        state = .closed
        let channel = context.channel
        context.writeAndFlush(
            wrapOutboundOut(channel.allocator.buffer(string: EgressService.response(status, message)))
        )
        .whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Bytes from one channel to its peer, reading only while the peer is writable; when one side
/// ends, the other's writing half is closed (and it is closed whole once both are done).
final class Relay: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    let peer: any Channel
    let endsPeer: Bool

    init(peer: any Channel, endsPeer: Bool) {
        self.peer = peer
        self.endsPeer = endsPeer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer.writeAndFlush(unwrapInboundIn(data), promise: nil)
        // Backpressure: while the peer cannot take more, this side stops reading (the peer's relay
        // starts it again once it drained).
        if !peer.isWritable { context.channel.setOption(.autoRead, value: false).whenComplete { _ in } }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { peer.setOption(.autoRead, value: true).whenComplete { _ in } }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            peer.close(promise: nil)
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            peer.close(mode: .output, promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if endsPeer { peer.close(promise: nil) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
