import AgentryRender

/// The host-side model gateway: a harness in a machine reaches its models only through it, with a
/// token valid for one run of one agent; the provider's key is added on the host and never enters
/// the machine. It falls back to the next model when the primary fails before answering, and
/// counts what each call used.
public protocol ModelGateway: Sendable {
    /// Starts serving one run: until the session is closed, requests bearing its token go to its
    /// models.
    func open(_ run: GatewayRun) throws -> any GatewaySession
}

/// One model the gateway may send a run's requests to.
public struct GatewayRoute: Sendable, Equatable {
    /// The Model resource's name (`sonnet`).
    public var resource: String
    /// The provider's model name, written into the request's `model` field on a fallback.
    public var model: String
    /// `messages`, `chat-completions` or `responses`: which credentials header the provider wants.
    public var api: String
    /// The upstream as the host reaches it (`http://127.0.0.1:8080/v1`, `https://api.anthropic.com`).
    public var baseURL: String
    /// The provider's key; nil for a model that needs none (a local server).
    public var credential: [UInt8]?

    public init(resource: String, model: String, api: String, baseURL: String, credential: [UInt8]?) {
        self.resource = resource
        self.model = model
        self.api = api
        self.baseURL = baseURL
        self.credential = credential
    }
}

/// What a run needs of the gateway.
public struct GatewayRun: Sendable {
    public var agent: String
    public var runID: String
    /// The primary model first, then the fallbacks that speak its API, in order.
    public var routes: [GatewayRoute]
    /// The run stops being served past this many tokens (input and output).
    public var budgetTokens: Int?

    public init(agent: String, runID: String, routes: [GatewayRoute], budgetTokens: Int? = nil) {
        self.agent = agent
        self.runID = runID
        self.routes = routes
        self.budgetTokens = budgetTokens
    }
}

/// A run's use of the gateway; closing it voids its token.
public protocol GatewaySession: AnyObject, Sendable {
    /// What the harness sends as its API key: random, valid for this run of this agent only.
    var token: String { get }
    /// The primary model's base URL as the machine reaches the gateway.
    var guestBaseURL: String { get }
    /// What the run used so far.
    func usage() -> ModelUsage
    /// Stops serving the run's token (requests in flight are cut) and returns what it used.
    func close() -> ModelUsage
}
