import Logging

/// Everything the core reaches the world through, handed in by the composition (the real
/// adapters) or by a test (fakes). One value per process: `lanes` orders the operations on each
/// agent across every use case that runs in it.
public struct Ports: Sendable {
    public var source: any RepositorySource
    public var state: any StateStore
    /// Where the loader remembers what it parsed (the user's parse cache); nil: parse afresh.
    public var parseCache: (any ParseCache)?
    public var secrets: any SecretStore
    public var machines: any MachineBackend
    /// Where machines' model calls go: provider keys stay on the host.
    public var gateway: any ModelGateway
    public var history: any HistoryStore
    public var clock: any WallClock
    public var host: HostEnvironment
    public var lanes: AgentLanes
    public var logger: Logger

    public init(
        source: any RepositorySource, state: any StateStore, parseCache: (any ParseCache)?, secrets: any SecretStore,
        machines: any MachineBackend, gateway: any ModelGateway, history: any HistoryStore, clock: any WallClock,
        host: HostEnvironment,
        lanes: AgentLanes = AgentLanes(), logger: Logger
    ) {
        self.source = source
        self.state = state
        self.parseCache = parseCache
        self.secrets = secrets
        self.machines = machines
        self.gateway = gateway
        self.history = history
        self.clock = clock
        self.host = host
        self.lanes = lanes
        self.logger = logger
    }
}
