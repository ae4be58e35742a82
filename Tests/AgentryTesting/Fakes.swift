import AgentryCore
import Foundation
import Logging

/// A set of fakes and the ports they make, for one test.
public struct Fakes: Sendable {
    public let state = InMemoryState()
    public let secrets: InMemorySecrets
    public let machines = FakeMachines()
    public let gateway = FakeGateway()
    public let history = InMemoryHistory()
    public let clock = ManualClock()
    public let host: HostEnvironment

    public init(secrets: [String: String] = [:], variables: [String: String] = [:]) {
        self.secrets = InMemorySecrets(secrets)
        host = HostEnvironment(
            variables: variables, hostName: "test-host", currentDirectory: "/work", userName: "tester")
    }

    /// The ports, with `source` for the agent repositories (a real one, over temporary git repositories).
    public func ports(source: any RepositorySource, logger: Logger = Logger(label: "test")) -> Ports {
        Ports(
            source: source, state: state, parseCache: state, secrets: secrets, machines: machines, gateway: gateway,
            history: history,
            clock: clock, host: host, logger: logger)
    }
}
