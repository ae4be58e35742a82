import AgentryCore
import AgentryRender
import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The model gateway, served for each run on a unix socket of the agent's machine folder, which
/// QEMU's user network reaches from the guest at `GatewayAddress` (a `guestfwd`). Only the run's
/// own machine reaches its socket, and only the run's token opens it: one agent's token never works
/// for another's.
///
/// A request is read whole (at most `Limits.requestBody`), its token checked, then sent to the
/// first model that answers: the provider's key goes in the header its API wants, and when a model
/// fails before its answer began (refused, reset, no answer head within `firstByte`, 429, 5xx) the
/// same request goes to the next, its `model` field rewritten. The answer streams back unbuffered
/// while its usage is read off it. Bodies are never logged.
public final class GatewayServer: ModelGateway {
    public struct Limits: Sendable {
        public var requestBody = 32 << 20
        public var connections = 64
        public var firstByte: TimeAmount = .seconds(120)
        public var idleRead: TimeAmount = .minutes(5)
        /// How long a connection may take to send a whole request, from its opening or its last
        /// answer; past it the connection is closed (kept-alive connections left idle too).
        public var requestWait: TimeAmount = .seconds(60)

        public init() {}
    }

    let socket: @Sendable (String) -> String
    let limits: Limits

    /// `socket` names the unix socket of an agent's gateway.
    public init(socket: @escaping @Sendable (String) -> String, limits: Limits = Limits()) {
        self.socket = socket
        self.limits = limits
    }

    /// Each run has a client (a connection pool) of its own, as many connections wide as the run
    /// may open: one agent's long answers never hold up another's calls to the same provider.
    func makeClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        // No read timeout here: AsyncHTTPClient would re-arm a timer for every chunk of a
        // stream. The relay watches for a stalled answer itself (`Listener.relay`).
        configuration.timeout = .init(connect: .seconds(4))
        // A model that refuses the connection gives way to the next at once, not after
        // AsyncHTTPClient's retries have spent the connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.decompression = .disabled
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = limits.connections
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func open(_ run: GatewayRun) throws -> any GatewaySession {
        guard let primary = run.routes.first else {
            throw CoreError(.invalidRepository, "the run of \(run.agent) has no model for the gateway")
        }
        let session = Session(run: run, primaryPath: GatewayAddress.path(of: primary.baseURL))
        let client = makeClient()
        let listener = Listener(path: socket(run.agent), session: session, limits: limits, client: client)
        do {
            try listener.start()
        } catch {
            client.shutdown { _ in }
            throw error
        }
        session.listener = listener
        return session
    }

    /// One run's token, models and usage.
    final class Session: GatewaySession, @unchecked Sendable {
        let run: GatewayRun
        let token: String
        let guestBaseURL: String
        let primaryPath: String
        private let state = NIOLockedValueBox(State())
        var listener: Listener?

        struct State {
            var usage = ModelUsage()
            var open = true
        }

        init(run: GatewayRun, primaryPath: String) {
            self.run = run
            self.primaryPath = primaryPath
            token = "agr_" + Hex.random(bytes: 32)
            guestBaseURL = GatewayAddress.url + primaryPath
        }

        /// Whether `presented` is this open session's token (compared in constant time).
        func admits(_ presented: String?) -> Bool {
            guard let presented, state.withLockedValue({ $0.open }) else { return false }
            let given = Array(presented.utf8)
            let expected = Array(token.utf8)
            guard given.count == expected.count else { return false }
            var difference: UInt8 = 0
            for (a, b) in zip(given, expected) { difference |= a ^ b }
            return difference == 0
        }

        var tokensUsed: Int { state.withLockedValue { $0.usage.inputTokens + $0.usage.outputTokens } }

        func record(_ call: ModelCall) {
            state.withLockedValue { $0.usage.add(call) }
        }

        func budgetSpent() {
            state.withLockedValue { $0.usage.budgetExceeded = true }
        }

        func usage() -> ModelUsage { state.withLockedValue { $0.usage } }

        func close() -> ModelUsage {
            state.withLockedValue { $0.open = false }
            listener?.stop()
            // Requests still in flight are cut; the pool closes its connections in the background.
            listener?.client.shutdown { _ in }
            return usage()
        }
    }
}
