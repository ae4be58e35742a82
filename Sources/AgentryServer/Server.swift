import AgentryBasics
import AgentryCore
import AgentryModel
import AgentryRender
import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization

/// `agentry serve`: the /v1 HTTP API on Hummingbird, the run queue behind it, and a clean stop on
/// SIGTERM or SIGINT (stop accepting, let runs finish for `grace`, interrupt the rest).
public struct APIServer: Sendable {
    public struct Settings: Sendable {
        public var host: String
        public var port: Int
        public var grace: Duration
        /// Told the address once the server listens (`--listen 127.0.0.1:0` picks a port).
        public var onListening: @Sendable (String) -> Void

        public init(host: String, port: Int, grace: Duration, onListening: @escaping @Sendable (String) -> Void) {
            self.host = host
            self.port = port
            self.grace = grace
            self.onListening = onListening
        }
    }

    let ports: Ports
    let runs: RunService
    let tokens: Tokens
    let store: any ServiceStore
    let runSettings: RunService.Settings
    let reconciler: Reconciler
    let scheduler: Scheduler
    /// What `/metrics` shows (nil: no metrics, 404).
    let metrics: PrometheusCollectorRegistry?
    /// Webhooks out, and the HTTP client that sends them (nil: none configured).
    let deliveries: WebhookDeliveries?
    let deliveryClient: HTTPClient?

    /// Webhooks out: where to, and the secret-store key of the signing secret.
    public struct Notify: Sendable {
        public var urls: [String]
        public var secretKey: String?

        public init(urls: [String], secretKey: String?) {
            self.urls = urls
            self.secretKey = secretKey
        }
    }
    let hooks: Hooks
    /// Open event streams, bounded, and what they follow.
    let streams = StreamCount(limit: 256)
    let watch: RunWatch
    /// Passes every interval (the first at start); nil: only when asked (`POST /v1/reconcile`).
    let interval: Duration?

    /// Webhooks in: the store's secret that signs them, and the branch whose pushes count.
    public struct Hooks: Sendable {
        public var secretKey: String?
        public var branch: String

        public init(secretKey: String?, branch: String) {
            self.secretKey = secretKey
            self.branch = branch
        }
    }

    public init(
        ports: Ports, store: any ServiceStore, runs: RunService.Settings, reconcileEvery interval: Duration?,
        hooks: Hooks = Hooks(secretKey: nil, branch: "main"), notify: Notify = Notify(urls: [], secretKey: nil),
        metrics: PrometheusCollectorRegistry? = nil, upstream: Upstream? = nil
    ) throws {
        self.metrics = metrics
        var made: (WebhookDeliveries, HTTPClient)?
        if !notify.urls.isEmpty, let key = notify.secretKey {
            guard let secret = try ports.secrets.value(key), !secret.isEmpty else {
                throw CoreError(
                    .notFound, "the notify secret \(key) is not in the secret store; agentry secret set \(key)")
            }
            let client = Self.deliveryClient()
            made = (
                WebhookDeliveries(
                    store: store, urls: notify.urls, secret: String(decoding: secret, as: UTF8.self),
                    clock: ports.clock, logger: ports.logger, send: Self.sender(client)),
                client
            )
        }
        let deliveries = made?.0
        WebhookDeliveries.failUnlisted(in: store, keeping: deliveries == nil ? [] : notify.urls, logger: ports.logger)
        self.deliveries = deliveries
        self.deliveryClient = made?.1
        self.hooks = hooks
        self.ports = ports
        self.store = store
        self.watch = RunWatch(store: store, state: ports.state)
        self.runSettings = runs
        self.runs = RunService(
            ports: ports, store: store, settings: runs,
            announcer: deliveries.map { deliveries in
                RunAnnouncer(
                    deliveries: { deliveries.deliveries(type: "run.completed", data: API.run($0)) },
                    stored: { await deliveries.wakeUp() })
            })
        self.tokens = Tokens(store: store, clock: ports.clock)
        self.interval = interval
        self.scheduler = Scheduler(runs: self.runs, clock: ports.clock, logger: ports.logger)
        self.reconciler = Reconciler(
            ports: ports,
            settings: .init(
                target: .init(repository: runs.repository, ref: "HEAD", path: runs.path),
                // Without a loop, the unit of backoff after failures.
                interval: interval ?? .seconds(60), historyBranch: runs.historyBranch,
                parallelism: runs.maxConcurrent, upstream: upstream),
            scheduler: scheduler, store: store,
            onStalled: { agent, condition in
                await deliveries?.publish(
                    type: "agent.stalled",
                    data: .object([
                        ("agent", .string(agent)), ("reason", .string(condition.reason)),
                        ("message", .string(condition.message)),
                        ("observedCommit", condition.observedCommit.map(JSON.string) ?? .null),
                        ("since", .string(API.time(condition.since))),
                    ]))
            })
    }

    /// Makes swift-metrics report into a Prometheus registry, for `/metrics`: once per process (the
    /// metrics system takes one backend).
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            ServiceMetrics.runDuration: ServiceMetrics.runBuckets,
            ServiceMetrics.reconcileDuration: ServiceMetrics.reconcileBuckets,
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// Runs until SIGTERM or SIGINT.
    public func run(_ settings: Settings) async throws {
        do {
            try await serve(settings)
        } catch {
            // The delivery loop closes the client when it ran; when the service never started, here.
            try? await deliveryClient?.shutdown()
            throw error
        }
    }

    func serve(_ settings: Settings) async throws {
        let interrupted = try await runs.recover()
        if interrupted > 0 {
            ports.logger.warning(
                "runs the last service left going were marked interrupted", metadata: ["runs": "\(interrupted)"])
        }
        let router = Router(context: BasicRequestContext.self)
        if metrics != nil { router.middlewares.add(MetricsMiddleware()) }
        routes(router)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "agentry"),
            // Stopped in reverse order: the HTTP server first, webhooks out last (after the runs
            // drained, so their ends are sent).
            services: [
                DeliveryLoop(deliveries: deliveries, client: deliveryClient),
                RunDrain(runs: runs, grace: settings.grace),
                ReconcileLoop(reconciler: reconciler, enabled: interval != nil),
                ScheduleLoop(scheduler: scheduler),
            ],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? settings.port
                settings.onListening("\(settings.host):\(port)")
            },
            logger: ports.logger)
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }

    // MARK: Routes

    func routes(_ router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in API.json(.object([("status", .string("ok"))])) }
        router.get("/readyz") { _, _ in await self.ready() }
        router.get("/metrics") { request, _ in
            // Repository-wide: the labels name every agent.
            await self.handle(
                request, scope: .read, agent: nil, wholeService: "metrics take a token for every agent"
            ) { _ in
                guard let registry = self.metrics else {
                    return API.error(.notFound, "notFound", "this service keeps no metrics")
                }
                ServiceMetrics.machines(try self.ports.state.agents().map(\.machineState))
                ServiceMetrics.queue(
                    waiting: try self.store.queuedCount(agent: nil), active: await self.runs.activeCount)
                var text: [UInt8] = []
                registry.emit(into: &text)
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: text)))
            }
        }
        router.get("/v1/deliveries") { request, _ in
            await self.handle(
                request, scope: .admin, agent: nil, wholeService: "deliveries take a token for every agent"
            ) { _ in
                let query = request.uri.queryParameters
                let limit = try API.pageLimit(query["limit"])
                let cursor = query["cursor"].map(String.init)
                if let cursor, !cursor.hasPrefix("msg_") || cursor.utf8.count > 64 {
                    throw API.BadRequest(message: "cursor \(cursor) is not a delivery id (a nextCursor)")
                }
                let page = try self.store.deliveries(limit: limit + 1, before: cursor)
                return API.json(API.page("deliveries", page, limit: limit, id: \.id, API.delivery))
            }
        }
        router.get("/v1/openapi.yaml") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/yaml"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: OpenAPIDocument.yaml)))
        }
        router.get("/v1/agents") { request, _ in
            await self.handle(request, scope: .read, agent: nil) { token in try await self.agents(token: token) }
        }
        router.get("/v1/agents/:name") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await self.handle(request, scope: .read, agent: name) { _ in try await self.agent(name) }
        }
        router.post("/v1/agents/:name/runs") { request, context in
            let name = context.parameters.get("name") ?? ""
            var request = request
            let body = await API.body(&request)
            return await self.handle(request, scope: .run, agent: name) { token in
                try await self.submit(name, body: try body.get(), request: request, token: token)
            }
        }
        router.get("/v1/agents/:name/runs") { request, context in
            let name = context.parameters.get("name") ?? ""
            return await self.handle(request, scope: .read, agent: name) { _ in try self.list(name, request: request) }
        }
        router.get("/v1/runs/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await self.handleRun(request, id: id, scope: .read) { run in API.json(API.run(run), status: .ok) }
        }
        router.post("/v1/reconcile") { request, _ in
            await self.handle(
                request, scope: .admin, agent: nil, wholeService: "reconciling takes a token for every agent"
            ) { _ in
                await self.reconciler.trigger()
                return API.json(.object([("status", .string("triggered"))]), status: .accepted)
            }
        }
        for provider in ["github", "gitlab"] {
            router.post("/v1/hooks/\(provider)") { request, _ in
                var request = request
                let body = await API.body(&request)
                let response = await self.hook(provider, request, body: body)
                ServiceMetrics.webhookReceived(provider: provider, status: Int(response.status.code))
                return response
            }
        }
        router.get("/v1/reconcile") { request, _ in
            await self.handle(
                request, scope: .read, agent: nil, wholeService: "the reconcile status takes a token for every agent"
            ) { _ in
                // Repository-wide: what it says may be about any agent.
                let suspension = try self.store.suspensions().first { $0.agent == nil }.map(API.suspension) ?? .null
                let source = await self.reconciler.source.map(API.source) ?? .null
                guard let pass = await self.reconciler.lastPass else {
                    return API.json(
                        .object([
                            ("passes", .int(0)), ("suspension", suspension), ("source", source), ("lastPass", .null),
                        ]))
                }
                return API.json(
                    .object([
                        ("passes", .int(await self.reconciler.passes)),
                        ("suspension", suspension), ("source", source),
                        (
                            "lastPass",
                            .object([
                                ("startedAt", .string(API.time(pass.startedAt))),
                                ("durationMs", .int(Int(pass.duration / .milliseconds(1)))),
                                ("commit", pass.commit.map(JSON.string) ?? .null),
                                ("result", .string(pass.result)), ("message", .string(pass.message)),
                            ])
                        ),
                    ]))
            }
        }
        for (verb, killing) in [("kill", true), ("unkill", false)] {
            router.post("/v1/agents/:name/\(verb)") { request, context in
                let name = context.parameters.get("name") ?? ""
                var request = request
                let body = await API.body(&request)
                return await self.handle(request, scope: .admin, agent: name) { token in
                    try await self.killSwitch(name, killing: killing, body: try body.get(), token: token)
                }
            }
        }
        for (verb, suspending) in [("suspend", true), ("resume", false)] {
            router.post("/v1/agents/:name/\(verb)") { request, context in
                let name = context.parameters.get("name") ?? ""
                var request = request
                let body = await API.body(&request)
                return await self.handle(request, scope: .admin, agent: name) { token in
                    try await self.suspension(of: name, suspending: suspending, body: try body.get(), token: token)
                }
            }
            router.post("/v1/\(verb)") { request, _ in
                var request = request
                let body = await API.body(&request)
                return await self.handle(
                    request, scope: .admin, agent: nil,
                    wholeService: "suspending the service takes a token for every agent"
                ) { token in
                    try await self.suspension(of: nil, suspending: suspending, body: try body.get(), token: token)
                }
            }
        }
        router.get("/v1/runs/:id/events") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await self.handleRun(request, id: id, scope: .read) { run in self.events(run, request: request) }
        }
        router.get("/v1/runs/:id/artifacts") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await self.handleRun(request, id: id, scope: .read) { run in
                let (record, _) = try await self.record(of: run)
                return API.json(
                    .object([
                        (
                            "artifacts",
                            .array(
                                record.artifacts.map { artifact in
                                    .object([
                                        ("path", .string(artifact.path)), ("size", .int(artifact.size)),
                                        ("sha256", .string(artifact.sha256)), ("stored", .bool(artifact.stored)),
                                        (
                                            "link",
                                            artifact.stored
                                                ? .string("/v1/runs/\(run.id)/artifacts/\(artifact.path)") : .null
                                        ),
                                    ])
                                })
                        ),
                        ("omitted", .int(record.artifactsOmitted)),
                    ]))
            }
        }
        router.get("/v1/runs/:id/artifacts/**") { request, context in
            let id = context.parameters.get("id") ?? ""
            let path = context.parameters.getCatchAll().joined(separator: "/")
            return await self.handleRun(request, id: id, scope: .read) { run in
                try await self.artifact(of: run, path: path, request: request)
            }
        }
        router.post("/v1/runs/:id/cancel") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await self.handleRun(request, id: id, scope: .run) { run in
                let cancelled = try await self.runs.cancel(run.id)
                return API.json(API.run(try self.store.run(id: cancelled.id) ?? cancelled), status: .accepted)
            }
        }
    }

    /// Checks the token for `scope` on `agent`, then answers with `body`; every failure becomes the
    /// JSON error with its status (here, once).
    /// `wholeService`: the refusal for a token limited to some agents, when what is asked is about
    /// the whole service (its labels or messages may name any agent).
    func handle(
        _ request: Request, scope: TokenScope, agent: String?, wholeService: String? = nil,
        _ body: (APIToken) async throws -> Response
    ) async -> Response {
        do {
            // Authenticated before anything else is said about the request. (A token not known good
            // already is read on a thread of its own, as every database read here: a cooperative
            // thread that waits on SQLite holds up every other request.)
            let tokens = self.tokens
            let header = request.headers[.authorization]
            var verdict: Result<APIToken, Tokens.Refusal>
            if let known = tokens.authorizeKnown(header, scope: scope, agent: nil) {
                verdict = known
            } else {
                verdict = try await BlockingWork.run { try tokens.authorize(header, scope: scope, agent: nil) }
            }
            if case .success(let token) = verdict, let agent {
                guard ResourceName.isValid(agent) else {
                    return API.error(.badRequest, "invalidRequest", "\(agent) is not an agent name")
                }
                if let refusal = Tokens.refusal(token, for: agent) { verdict = .failure(refusal) }
            }
            switch verdict {
            case .failure(.unauthenticated(let message)):
                ports.logger.notice(
                    "refused a request", metadata: ["path": "\(request.uri.path)", "why": "\(message)"])
                var response = API.error(.unauthorized, "unauthenticated", message)
                response.headers[.wwwAuthenticate] = "Bearer"
                return response
            case .failure(.forbidden(let message)):
                return API.error(.forbidden, "forbidden", message)
            case .success(let token):
                if let wholeService, !token.agents.isEmpty { return API.error(.forbidden, "forbidden", wholeService) }
                return try await body(token)
            }
        } catch let error as any AgentryFailure {
            return API.error(error)
        } catch let error as API.BadRequest {
            return API.error(.badRequest, "invalidRequest", error.message)
        } catch {
            ports.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return API.error(.internalServerError, "internal", "agentry could not answer; its log says why")
        }
    }

    /// A request about one run: the token must cover the run's agent.
    func handleRun(
        _ request: Request, id: String, scope: TokenScope, _ body: @escaping (ServiceRun) async throws -> Response
    ) async -> Response {
        // Authenticated before anything about the run is told.
        await handle(request, scope: scope, agent: nil) { token in
            let store = self.store
            guard id.hasPrefix("run_"), id.utf8.count < 64,
                let run = try await BlockingWork.run({ try store.run(id: id) }), token.covers(run.agent)
            else {
                return API.error(.notFound, "notFound", "there is no run \(id)")
            }
            return try await body(run)
        }
    }

    // MARK: Handlers

    func ready() async -> Response {
        do {
            // Nothing applied yet is ready too: runs are refused per agent until applied. A remote
            // never fetched is not: there is no agent to say anything about.
            if let why = await reconciler.notReady {
                return API.error(.serviceUnavailable, "unavailable", "not ready: \(why)")
            }
            if ports.state.exists { try ports.state.checkReadable() }
            _ = try store.queuedCount(agent: nil)
            return API.json(.object([("status", .string("ready"))]))
        } catch {
            ports.logger.error("not ready", metadata: ["error": "\(error)"])
            return API.error(.serviceUnavailable, "unavailable", "not ready; the service's log says why")
        }
    }

    /// Refuses (503, with Retry-After) what needs the agent repository while the service has none
    /// to read: a remote not fetched yet.
    func requireRepository() async throws {
        if let why = await reconciler.notReady {
            throw CoreError(.repositoryUnavailable, "the service is not ready: \(why)")
        }
    }

    func agents(token: APIToken) async throws -> Response {
        try await requireRepository()
        let report = try await StatusReport.collect(
            repository: runSettings.repository, ref: "HEAD", path: runSettings.path, agent: nil, ports: ports)
        let rows = report.rows.filter { token.covers($0.name) }
        return API.json(
            .object([
                ("commit", report.commit.map(JSON.string) ?? .null),
                ("agents", .array(try await rows.asyncMap { try await agentJSON($0, report: report) })),
            ]))
    }

    func agent(_ name: String) async throws -> Response {
        try await requireRepository()
        let report = try await StatusReport.collect(
            repository: runSettings.repository, ref: "HEAD", path: runSettings.path, agent: name, ports: ports)
        guard let row = report.rows.first(where: { $0.name == name }) else {
            return API.error(.notFound, "notFound", "there is no agent \(name) in the repository or the state")
        }
        return API.json(try await agentJSON(row, report: report))
    }

    func agentJSON(_ row: StatusReport.Row, report: StatusReport) async throws -> JSON {
        let kill = try ports.state.killSwitch(row.name)
        let last = try store.runs(agent: row.name, statuses: nil, limit: 1, before: nil).first
        var killSwitch = JSON.null
        if let kill {
            killSwitch = .object([
                ("reason", .string(kill.reason)), ("actor", .string(kill.actor)),
                ("since", .string(API.time(kill.time))),
            ])
        }
        let held = try store.suspensions().first { $0.agent == row.name || $0.agent == nil }
        let suspension: JSON = held.map(API.suspension) ?? .null
        let health: JSON = row.health.map { .string($0.state.rawValue) } ?? .null
        let detail: JSON = row.health?.detail.map { .string($0) } ?? .null
        let conditions = await reconciler.conditions(of: row.name).map { condition -> JSON in
            .object([
                ("type", .string(condition.kind.rawValue)), ("status", .string(condition.status ? "True" : "False")),
                ("reason", .string(condition.reason)), ("message", .string(condition.message)),
                ("observedCommit", condition.observedCommit.map(JSON.string) ?? .null),
                ("lastTransitionTime", .string(API.time(condition.since))),
            ])
        }
        return .object([
            ("name", .string(row.name)),
            ("desiredRevision", row.desiredRevision.map(JSON.string) ?? .null),
            ("appliedRevision", row.appliedRevision.map(JSON.string) ?? .null),
            ("commit", report.commit.map(JSON.string) ?? .null),
            ("sync", .string(row.sync.rawValue)),
            ("lifecycle", .string(row.lifecycle)),
            ("health", health),
            ("healthDetail", detail),
            ("machineState", row.machineState.map(JSON.string) ?? .null),
            ("killSwitch", killSwitch),
            ("suspension", suspension),
            ("conditions", .array(conditions)),
            ("schedule", try await scheduleJSON(row.name)),
            ("lastRun", last.map(API.run) ?? .null),
            ("links", .object([("runs", .string("/v1/agents/\(row.name)/runs"))])),
        ])
    }

    /// The agent's schedule, when it has one: when it next fires, what it did last, how often it
    /// was skipped.
    func scheduleJSON(_ agent: String) async throws -> JSON {
        guard let entry = await scheduler.entry(of: agent) else { return .null }
        let last = try store.scheduleEvents(agent: agent, limit: 1).first.map { event -> JSON in
            .object([
                ("dueAt", .string(API.time(event.dueAt))), ("outcome", .string(event.outcome.rawValue)),
                ("runId", event.runID.map(JSON.string) ?? .null), ("message", .string(event.message)),
            ])
        }
        return .object([
            ("expression", .string(entry.schedule.expression)), ("timeZone", .string(entry.schedule.timeZone)),
            ("nextAt", entry.next.map { .string(API.time($0)) } ?? .null), ("last", last ?? .null),
            ("skipped", .int(try store.skippedCount(agent: agent))),
        ])
    }

    func submit(_ agent: String, body: [UInt8], request: Request, token: APIToken) async throws -> Response {
        let input = try API.RunInput.parse(body)
        try await requireRepository()
        let key = request.headers[API.idempotencyKey]
        if let key, key.isEmpty || key.utf8.count > 255 {
            throw API.BadRequest(message: "Idempotency-Key must be 1 to 255 bytes")
        }
        let (run, created) = try await runs.submit(
            agent: agent, prompt: input.prompt, timeout: input.timeout, continueSession: input.continueSession,
            idempotencyKey: key, token: token, actor: "token \(token.id)")
        if !created && run.agent != agent {
            throw API.BadRequest(message: "this Idempotency-Key was used for a run of \(run.agent)")
        }
        var response = API.json(API.run(run), status: created ? .created : .ok)
        response.headers[.location] = "/v1/runs/\(run.id)"
        return response
    }

    func list(_ agent: String, request: Request) throws -> Response {
        let query = request.uri.queryParameters
        var statuses: Set<ServiceRunStatus>?
        if let text = query["status"] {
            var chosen = Set<ServiceRunStatus>()
            for name in text.split(separator: ",") {
                guard let status = ServiceRunStatus(rawValue: String(name)) else {
                    throw API.BadRequest(
                        message:
                            "status \(name) is not one of \(ServiceRunStatus.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                chosen.insert(status)
            }
            statuses = chosen
        }
        let limit = try API.pageLimit(query["limit"])
        let cursor = query["cursor"].map(String.init)
        if let cursor, try store.run(id: cursor)?.agent != agent {
            throw API.BadRequest(message: "cursor \(cursor) is not a run of \(agent)")
        }
        // One more than asked: whether there is a next page.
        let page = try store.runs(agent: agent, statuses: statuses, limit: limit + 1, before: cursor)
        return API.json(API.page("runs", page, limit: limit, id: \.id, API.run))
    }
}

extension APIServer {
    /// `POST /v1/agents/{name}/kill` `{"reason"}` and `/unkill`: the kill switch, recorded as the
    /// CLI records it (event log and history), with the token as who.
    func killSwitch(_ agent: String, killing: Bool, body: [UInt8], token: APIToken) async throws -> Response {
        let operations = Operations(ports)
        let actor = "token \(token.id)"
        let warn: @Sendable (String) -> Void = { [logger = ports.logger] in logger.warning("\($0)") }
        if killing {
            let object = body.isEmpty ? [:] : ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any])
            guard let reason = object?["reason"] as? String, !reason.isEmpty, object?.count == 1 else {
                throw API.BadRequest(message: "the body must be {\"reason\": \"why\"}")
            }
            let earlier = try await operations.kill(
                agent: agent, reason: reason, actor: actor, repository: runSettings.repository, warn: warn)
            return API.json(
                .object([("agent", .string(agent)), ("killed", .bool(true)), ("changed", .bool(earlier == nil))]))
        }
        let lifted = try await operations.unkill(
            agent: agent, actor: actor, repository: runSettings.repository, warn: warn)
        return API.json(.object([("agent", .string(agent)), ("killed", .bool(false)), ("changed", .bool(lifted))]))
    }
}

extension APIServer {
    /// `POST /v1/[agents/{name}/]suspend` `{"reason"?}` and `/resume`: the loop leaves the agent (or
    /// every agent) alone and its schedules do not fire, until resumed; a resume reconciles at once.
    func suspension(of agent: String?, suspending: Bool, body: [UInt8], token: APIToken) async throws -> Response {
        let actor = "token \(token.id)"
        if let agent, try ports.state.agent(agent) == nil,
            try await StatusReport.collect(
                repository: runSettings.repository, ref: "HEAD", path: runSettings.path, agent: agent, ports: ports
            ).rows.first(where: { $0.name == agent }) == nil
        {
            throw CoreError(.notFound, "there is no agent \(agent) in the repository or the state")
        }
        var subject: [(String, JSON)] = agent.map { [("agent", .string($0))] } ?? []
        guard suspending else {
            let lifted = try store.resume(agent: agent)
            ports.logger.notice(
                "resumed", metadata: ["agent": "\(agent ?? "every agent")", "by": "\(actor)", "changed": "\(lifted)"])
            if lifted { await reconciler.trigger(agent: agent) }
            subject += [("suspended", .bool(false)), ("changed", .bool(lifted))]
            return API.json(.object(subject))
        }
        var reason = "suspended over the API"
        if !body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
            guard let object, object.keys.allSatisfy({ $0 == "reason" }),
                object["reason"] == nil
                    || (object["reason"] as? String).map({ !$0.isEmpty && $0.utf8.count <= 1024 })
                        == true
            else {
                throw API.BadRequest(message: "the body must be empty or {\"reason\": \"why\"} (at most 1024 bytes)")
            }
            reason = object["reason"] as? String ?? reason
        }
        let (held, created) = try store.suspend(
            Suspension(agent: agent, actor: actor, reason: reason, since: ports.clock.now()))
        ports.logger.notice(
            "suspended", metadata: ["agent": "\(agent ?? "every agent")", "by": "\(actor)", "reason": "\(reason)"])
        subject += [("suspended", .bool(true)), ("changed", .bool(created)), ("suspension", API.suspension(held))]
        return API.json(.object(subject))
    }
}

extension Array where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

extension APIServer {
    var history: HistoryLocation {
        HistoryLocation(repository: runSettings.repository, branch: runSettings.historyBranch)
    }

    /// A finished run's record in history, with its folder there.
    func record(of run: ServiceRun) async throws -> (RunRecord, String) {
        guard let recordID = run.recordID, run.status.isFinal else {
            throw CoreError(.agentBlocked, "the run \(run.id) is \(run.status.rawValue); its record comes when it ends")
        }
        let queries = HistoryQueries(ports)
        let location = history
        let shown = try await BlockingWork.run { try queries.run(recordID, in: location) }
        guard let record = shown.record else {
            throw CoreError(.notFound, "the record of \(run.id) cannot be read: \(shown.problem ?? "unknown")")
        }
        return (record, record.folder)
    }

    /// An artifact's bytes, from history, with its SHA-256 as the ETag.
    func artifact(of run: ServiceRun, path: String, request: Request) async throws -> Response {
        let (record, folder) = try await record(of: run)
        guard let artifact = record.artifacts.first(where: { $0.path == path }) else {
            return API.error(.notFound, "notFound", "the run \(run.id) has no artifact \(path)")
        }
        guard artifact.stored else {
            return API.error(
                .notFound, "notFound",
                "the artifact \(path) was too large to keep in history; only its SHA-256 (\(artifact.sha256)) is recorded"
            )
        }
        let etag = "\"\(artifact.sha256)\""
        if request.headers[.ifNoneMatch] == etag { return Response(status: .notModified, headers: [.eTag: etag]) }
        let history = ports.history
        let location = self.history
        let bytes = try await BlockingWork.run { () -> [UInt8]? in
            // Stored under its name inside the run's output folder (which the record does not
            // name): the longest stored name the artifact's path ends with; or under `storedAs`.
            let prefix = folder + "/artifacts/"
            let names = (try history.paths(under: folder + "/artifacts", in: location) ?? []).map {
                $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : $0
            }
            let stored =
                artifact.storedAs
                ?? names.filter { artifact.path == $0 || artifact.path.hasSuffix("/" + $0) }
                .max { $0.utf8.count < $1.utf8.count }
            guard let stored else { return nil }
            return try history.read(folder + "/artifacts/" + stored, in: location)
        }
        guard let bytes else {
            return API.error(.notFound, "notFound", "the artifact \(path) is missing from history")
        }
        guard SHA256.hex(bytes) == artifact.sha256 else {
            ports.logger.error(
                "an artifact in history does not match its record", metadata: ["run": "\(run.id)", "path": "\(path)"])
            return API.error(
                .internalServerError, "internal", "the artifact \(path) in history does not match its record")
        }
        return Response(
            status: .ok, headers: [.contentType: "application/octet-stream", .eTag: etag],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// `GET /v1/runs/{id}/events`: Server-Sent Events. `status` when the run's status changes,
    /// `output` with what the run printed (redacted, as its log), `end` last; each event's id is
    /// how many bytes of output came before it, so `Last-Event-ID` resumes where a client left.
    /// A live run is followed as it goes; a finished one is replayed from its log in history.
    func events(_ run: ServiceRun, request: Request) -> Response {
        guard streams.enter() else {
            var response = API.error(.tooManyRequests, "busy", "too many event streams are open; try again later")
            response.headers[.retryAfter] = "10"
            return response
        }
        let resume = request.headers[API.lastEventID].flatMap { Int($0) }.map { max(0, $0) } ?? 0
        let state = ports.state
        let server = self
        let (streams, watch) = (self.streams, self.watch)
        let body = ResponseBody { writer in
            defer { streams.leave() }
            var sent = resume
            func send(_ name: String, _ data: JSON) async throws {
                try await writer.write(
                    ByteBuffer(string: "event: \(name)\nid: \(sent)\ndata: \(data.rendered(pretty: false))\n\n"))
            }
            // In events of 16 KiB at most, each of whole characters: a character the run has not
            // finished printing waits for the next look (which reads from `sent`), unless `final`.
            func output(_ bytes: ArraySlice<UInt8>, final: Bool = false) async throws {
                var rest = bytes
                while !rest.isEmpty {
                    var chunk = rest.prefix(16 << 10)
                    let whole = UTF8Text.wholeCharacters(chunk)
                    if whole < chunk.count && !(final && chunk.count == rest.count) {
                        guard whole > 0 else { return }
                        chunk = chunk.prefix(whole)
                    }
                    rest = rest.dropFirst(chunk.count)
                    sent += chunk.count
                    try await send("output", .object([("text", .string(String(decoding: chunk, as: UTF8.self)))]))
                }
            }
            var current = run
            try await send("status", API.run(current))
            var beat = ContinuousClock.now
            while !current.status.isFinal {
                // A stopping service ends its streams (the client resumes with Last-Event-ID).
                if Task.isShuttingDownGracefully || Task.isCancelled {
                    try await send("shutdown", API.run(current))
                    try await writer.finish(nil)
                    return
                }
                // Looked at with every other stream's run, four times a second.
                let look = await watch.next(current, offset: sent)
                let previous = current.status
                current = look.run ?? current
                if current.status != previous && !current.status.isFinal { try await send("status", API.run(current)) }
                if let bytes = look.output { try await output(bytes[...]) }
                if ContinuousClock.now - beat > .seconds(15) {
                    try await writer.write(ByteBuffer(string: ": keepalive\n\n"))
                    beat = ContinuousClock.now
                }
            }
            // What the run printed after the last look (or all of it, for a run not followed): from
            // its live log (the agent's latest or the one before), else from its log in history
            // (the same bytes up to 1 MiB, past which history keeps its head and tail).
            let offset = sent
            let record = current.recordID
            let live = try? await BlockingWork.run {
                try record.flatMap { try state.liveLog(agent: run.agent, run: $0, from: offset) }
            }
            if let live = live ?? nil {
                try await output(live.bytes[...], final: true)
            } else if let (_, folder) = try? await server.record(of: current) {
                let history = server.ports.history
                let location = server.history
                let log = try? await BlockingWork.run { try history.read(folder + "/log.txt", in: location) }
                if let log = log ?? nil, log.count > sent { try await output(log[sent...], final: true) }
            }
            try await send("end", API.run(current))
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

extension APIServer {
    /// `POST /v1/hooks/github` (signed: `X-Hub-Signature-256`, HMAC-SHA256 of the body) and
    /// `/v1/hooks/gitlab` (`X-Gitlab-Token`): a push to the branch reconciles now. No bearer token:
    /// the signature is the credential; a bad one is 401 and logged.
    func hook(_ provider: String, _ request: Request, body: Result<[UInt8], API.BadRequest>) async -> Response {
        guard let key = hooks.secretKey else {
            return API.error(.notFound, "notFound", "webhooks are off: start serve with --webhook-secret KEY")
        }
        let secret: [UInt8]
        do {
            guard let value = try ports.secrets.value(key), !value.isEmpty else {
                return API.error(
                    .serviceUnavailable, "unavailable", "the webhook secret \(key) is not in the secret store")
            }
            secret = value
        } catch {
            return API.error(.serviceUnavailable, "unavailable", "the secret store cannot be read")
        }
        guard case .success(let bytes) = body else {
            return API.error(.contentTooLarge, "invalidRequest", "the body is too large")
        }
        let signed: Bool
        if provider == "github" {
            let header = request.headers[API.hubSignature] ?? ""
            let expected = Array(("sha256=" + Hex.string(HMACSHA256.mac(key: secret, message: bytes))).utf8)
            signed = HMACSHA256.equal(Array(header.utf8), expected)
        } else {
            signed = HMACSHA256.equal(Array((request.headers[API.gitlabToken] ?? "").utf8), secret)
        }
        guard signed else {
            ports.logger.warning(
                "refused a webhook: bad signature",
                metadata: ["provider": "\(provider)", "path": "\(request.uri.path)"])
            return API.error(.unauthorized, "unauthenticated", "the webhook's signature does not match the secret")
        }
        let event = request.headers[provider == "github" ? API.githubEvent : API.gitlabEvent] ?? ""
        if event == "ping" { return API.json(.object([("status", .string("pong"))])) }
        let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        let ref = object?["ref"] as? String
        guard event == "push" || event == "Push Hook", ref == "refs/heads/\(hooks.branch)" else {
            return API.json(
                .object([
                    ("status", .string("ignored")),
                    (
                        "reason",
                        .string(
                            "only pushes to \(hooks.branch) reconcile (got \(event.isEmpty ? "no event" : event) to \(ref ?? "no ref"))"
                        )
                    ),
                ]), status: .accepted)
        }
        ports.logger.info("a push reconciles now", metadata: ["provider": "\(provider)", "ref": "\(ref ?? "")"])
        await reconciler.trigger()
        return API.json(.object([("status", .string("reconciling"))]), status: .accepted)
    }
}

/// How many event streams are open; `enter` refuses past the limit.
final class StreamCount: Sendable {
    let count = Mutex(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func enter() -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { count.withLock { $0 -= 1 } }
}

/// The reconcile loop, stopped when the service stops.
struct ReconcileLoop: Service {
    let reconciler: Reconciler
    let enabled: Bool

    func run() async throws {
        await cancelWhenGracefulShutdown { await reconciler.run(passingFirst: enabled) }
    }
}

/// Fires the agents' schedules, stopped when the service stops.
struct ScheduleLoop: Service {
    let scheduler: Scheduler

    func run() async throws {
        await cancelWhenGracefulShutdown { await scheduler.run() }
    }
}

/// Sends webhooks out until the service stops, then closes their HTTP client.
struct DeliveryLoop: Service {
    let deliveries: WebhookDeliveries?
    let client: HTTPClient?

    func run() async throws {
        // A service that returns early stops the whole group: without webhooks, it waits.
        guard let deliveries else {
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown { await deliveries.run() }
        // What the drained runs left due gets one more try.
        await deliveries.deliverDue(now: nil)
        try? await client?.shutdown()
    }
}

extension APIServer {
    /// An HTTP client for webhooks out: bounded in time, no redirects followed.
    static func deliveryClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    static func failureKind(_ error: any Error) -> String {
        if error is CancellationError { return "cancelled" }
        if let client = error as? HTTPClientError {
            switch client {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return "timed out"
            case .remoteConnectionClosed: return "the connection was closed"
            default: return "the request failed"
            }
        }
        return "the connection failed"
    }

    /// One POST; the answer's status.
    static func sender(_ client: HTTPClient) -> WebhookDeliveries.Sender {
        { url, headers, body in
            do {
                var request = HTTPClientRequest(url: url)
                request.method = .POST
                for (name, value) in headers { request.headers.add(name: name, value: value) }
                request.body = .bytes(ByteBuffer(bytes: body))
                // The deadline covers the answer's head; its body is not read (a slow body would
                // hold the attempt beyond it).
                let response = try await client.execute(request, timeout: .seconds(15))
                return .status(Int(response.status.code))
            } catch {
                // Named by kind only: a client error's text may repeat the URL.
                return .failure(Self.failureKind(error))
            }
        }
    }
}

/// Drains the run queue when the service stops (after the HTTP server has stopped accepting).
struct RunDrain: Service {
    let runs: RunService
    let grace: Duration

    func run() async throws {
        try? await gracefulShutdown()
        await runs.shutdown(grace: grace)
    }
}
