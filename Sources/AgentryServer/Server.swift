import AgentryBasics
import AgentryCore
import AgentryModel
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle

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
    /// Passes every interval (the first at start); nil: only when asked (`POST /v1/reconcile`).
    let interval: Duration?

    public init(ports: Ports, store: any ServiceStore, runs: RunService.Settings, reconcileEvery interval: Duration?) {
        self.ports = ports
        self.store = store
        self.runSettings = runs
        self.runs = RunService(ports: ports, store: store, settings: runs)
        self.tokens = Tokens(store: store, clock: ports.clock)
        self.interval = interval
        self.reconciler = Reconciler(
            ports: ports,
            settings: .init(
                target: .init(repository: runs.repository, ref: "HEAD", path: runs.path),
                interval: interval ?? .seconds(24 * 3600), historyBranch: runs.historyBranch,
                parallelism: runs.maxConcurrent))
    }

    /// Runs until SIGTERM or SIGINT.
    public func run(_ settings: Settings) async throws {
        let interrupted = try await runs.recover()
        if interrupted > 0 {
            ports.logger.warning(
                "runs the last service left going were marked interrupted", metadata: ["runs": "\(interrupted)"])
        }
        let router = Router(context: BasicRequestContext.self)
        routes(router)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "agentry"),
            services: [
                RunDrain(runs: runs, grace: settings.grace),
                ReconcileLoop(reconciler: reconciler, enabled: interval != nil),
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
            await self.handle(request, scope: .admin, agent: nil) { token in
                guard token.agents.isEmpty else {
                    return API.error(.forbidden, "forbidden", "reconciling takes a token for every agent")
                }
                await self.reconciler.trigger()
                return API.json(.object([("status", .string("triggered"))]), status: .accepted)
            }
        }
        router.get("/v1/reconcile") { request, _ in
            await self.handle(request, scope: .read, agent: nil) { _ in
                guard let pass = await self.reconciler.lastPass else {
                    return API.json(.object([("lastPass", .null), ("passes", .int(0))]))
                }
                return API.json(
                    .object([
                        ("passes", .int(await self.reconciler.passes)),
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
    func handle(
        _ request: Request, scope: TokenScope, agent: String?, _ body: (APIToken) async throws -> Response
    ) async -> Response {
        do {
            if let agent, !ResourceName.isValid(agent) {
                return API.error(.badRequest, "invalidRequest", "\(agent) is not an agent name")
            }
            switch try tokens.authorize(request.headers[.authorization], scope: scope, agent: agent) {
            case .failure(.unauthenticated(let message)):
                ports.logger.notice(
                    "refused a request", metadata: ["path": "\(request.uri.path)", "why": "\(message)"])
                var response = API.error(.unauthorized, "unauthenticated", message)
                response.headers[.wwwAuthenticate] = "Bearer"
                return response
            case .failure(.forbidden(let message)):
                return API.error(.forbidden, "forbidden", message)
            case .success(let token):
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
        guard id.hasPrefix("run_"), id.utf8.count < 64 else {
            return API.error(.notFound, "notFound", "there is no run \(id)")
        }
        // Authenticated before anything about the run is told.
        return await handle(request, scope: scope, agent: nil) { token in
            guard let run = try self.store.run(id: id), token.covers(run.agent) else {
                return API.error(.notFound, "notFound", "there is no run \(id)")
            }
            return try await body(run)
        }
    }

    // MARK: Handlers

    func ready() async -> Response {
        do {
            // Nothing applied yet is ready too: runs are refused per agent until applied.
            if ports.state.exists { try ports.state.checkReadable() }
            _ = try store.runs(agent: nil, statuses: [.queued], limit: 1, before: nil)
            return API.json(.object([("status", .string("ready"))]))
        } catch {
            return API.error(.serviceUnavailable, "unavailable", "\(error)")
        }
    }

    func agents(token: APIToken) async throws -> Response {
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
            ("conditions", .array(conditions)),
            ("lastRun", last.map(API.run) ?? .null),
            ("links", .object([("runs", .string("/v1/agents/\(row.name)/runs"))])),
        ])
    }

    func submit(_ agent: String, body: [UInt8], request: Request, token: APIToken) async throws -> Response {
        let input = try API.RunInput.parse(body)
        let key = request.headers[API.idempotencyKey]
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
        var limit = 20
        if let text = query["limit"] {
            guard let value = Int(text), (1...100).contains(value) else {
                throw API.BadRequest(message: "limit must be a number from 1 to 100")
            }
            limit = value
        }
        let cursor = query["cursor"].map(String.init)
        if let cursor, try store.run(id: cursor)?.agent != agent {
            throw API.BadRequest(message: "cursor \(cursor) is not a run of \(agent)")
        }
        // One more than asked: whether there is a next page.
        let page = try store.runs(agent: agent, statuses: statuses, limit: limit + 1, before: cursor)
        let shown = Array(page.prefix(limit))
        return API.json(
            .object([
                ("runs", .array(shown.map(API.run))),
                ("nextCursor", page.count > limit ? shown.last.map { JSON.string($0.id) } ?? .null : .null),
            ]))
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

extension Array where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// The reconcile loop, stopped when the service stops.
struct ReconcileLoop: Service {
    let reconciler: Reconciler
    let enabled: Bool

    func run() async throws {
        try await cancelWhenGracefulShutdown { await reconciler.run(passingFirst: enabled) }
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
