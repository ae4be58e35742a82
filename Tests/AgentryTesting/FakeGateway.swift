import AgentryCore
import AgentryRender
import Synchronization

/// A model gateway that serves nothing: it hands out a token per run, remembers the runs it was
/// opened for, and reports the usage a test sets.
public final class FakeGateway: ModelGateway {
    public let opened = Mutex<[GatewayRun]>([])
    public let usage = Mutex(ModelUsage())

    public init() {}

    public func open(_ run: GatewayRun) throws -> any GatewaySession {
        opened.withLock { $0.append(run) }
        return Session(
            token: "agr_test_" + run.runID,
            guestBaseURL: GatewayAddress.url + GatewayAddress.path(of: run.routes.first?.baseURL ?? ""),
            gateway: self)
    }

    final class Session: GatewaySession {
        let token: String
        let guestBaseURL: String
        let gateway: FakeGateway

        init(token: String, guestBaseURL: String, gateway: FakeGateway) {
            self.token = token
            self.guestBaseURL = guestBaseURL
            self.gateway = gateway
        }

        func usage() -> ModelUsage { gateway.usage.withLock { $0 } }
        func close() -> ModelUsage { usage() }
    }
}
