import AgentryCore
import AgentryGateway
import Foundation
import TestSupport
import Testing

/// The model gateway on the host, against the stub model server (real HTTP on loopback), spoken to
/// over its unix socket as a guest's harness would through QEMU.
@Suite struct GatewayTests {
    let folder: TemporaryDirectory
    let stub: BackgroundProcess
    let port: String
    let log: String

    init() throws {
        folder = try TemporaryDirectory("agentry-gateway")
        log = folder.path + "/stub.jsonl"
        stub = try BackgroundProcess(
            "python3", [Agentry.packageRoot.appendingPathComponent("Tests/Fixtures/model_stub.py").path, log])
        port = stub.firstLine()
    }

    var stubURL: String { "http://127.0.0.1:\(port)" }

    func gateway(_ limits: GatewayServer.Limits = GatewayServer.Limits()) -> GatewayServer {
        let folder = folder.path
        return GatewayServer(socket: { folder + "/\($0).sock" }, limits: limits)
    }

    func route(
        _ resource: String, model: String? = nil, api: String = "messages", baseURL: String? = nil,
        key: String = "sk-real-key-of-\(UUID().uuidString.prefix(8))"
    ) -> GatewayRoute {
        GatewayRoute(
            resource: resource, model: model ?? resource, api: api, baseURL: baseURL ?? stubURL + "/v1",
            credential: Array(key.utf8))
    }

    struct Answer {
        var status: Int
        var body: String
    }

    /// A request to the agent's gateway socket, as the harness sends it.
    func call(
        _ agent: String, _ path: String, token: String?, body: String, header: String = "x-api-key",
        extra: [String] = []
    ) throws -> Answer {
        var arguments = [
            "-sS", "--unix-socket", folder.path + "/\(agent).sock", "-o", "-", "-w", "\n%{http_code}",
            "-H", "content-type: application/json", "--data-binary", body,
        ]
        if let token {
            arguments += ["-H", header == "bearer" ? "authorization: Bearer \(token)" : "x-api-key: \(token)"]
        }
        arguments += extra + ["http://gateway" + path]
        let result = try Shell.run("curl", arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return Answer(status: Int(lines.last ?? "") ?? 0, body: lines.dropLast().joined(separator: "\n"))
    }

    func received() throws -> [[String: Any]] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map {
            try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    @Test func theProviderKeyIsAddedOnTheHostAndTheTokenGoesNoFurther() throws {
        let server = gateway()
        let key = "sk-ant-the-real-provider-key"
        let session = try server.open(
            GatewayRun(agent: "scout", runID: "r1", routes: [route("sonnet", model: "claude-x", key: key)]))
        defer { _ = session.close() }
        #expect(session.guestBaseURL == "http://10.0.2.101/v1")
        #expect(session.token.hasPrefix("agr_") && session.token.count == 68 && !session.token.contains(key))

        let answer = try call(
            "scout", "/v1/messages", token: session.token, body: #"{"model": "claude-x", "max_tokens": 5}"#)
        #expect(answer.status == 200 && answer.body.contains("answer from claude-x"), "\(answer)")
        let seen = try #require(try received().last)
        let headers = try #require(seen["headers"] as? [String: String])
        #expect(headers["x-api-key"] == key, "the provider got its key")
        #expect(headers["anthropic-version"] == "2023-06-01")
        #expect(!headers.values.contains(session.token), "the run's token stays at the gateway: \(headers)")
        #expect(seen["path"] as? String == "/v1/messages")

        let usage = session.usage()
        #expect(usage.totalCalls == 1 && usage.inputTokens == 11 && usage.outputTokens == 7)
        #expect(usage.calls.first?.served == "sonnet" && usage.calls.first?.requested == "claude-x")
        #expect(usage.byModel["sonnet"]?.calls == 1)
    }

    /// All three APIs, streamed: the events reach the harness as the model sent them, and the usage
    /// is read from the events each API puts it in.
    @Test func streamsPassThroughAndTheirUsageIsCounted() throws {
        let server = gateway()
        for (api, path, auth, input, output) in [
            ("messages", "/v1/messages", "x-api-key", 11, 7),
            ("chat-completions", "/v1/chat/completions", "bearer", 13, 5),
            ("responses", "/v1/responses", "bearer", 17, 3),
        ] {
            let key = "sk-\(api)-key"
            let session = try server.open(
                GatewayRun(agent: "streamer", runID: api, routes: [route("m", model: "mx", api: api, key: key)]))
            let answer = try call(
                "streamer", path, token: session.token, body: #"{"model": "mx", "stream": true}"#, header: auth)
            #expect(answer.status == 200, "\(api): \(answer)")
            #expect(answer.body.contains("data: ") && answer.body.contains("answer from mx"), "\(api): \(answer.body)")
            let headers = try #require(try received().last?["headers"] as? [String: String])
            if api == "messages" {
                #expect(headers["x-api-key"] == key)
            } else {
                #expect(headers["authorization"] == "Bearer \(key)", "\(api): \(headers)")
            }
            let usage = session.close()
            #expect(usage.inputTokens == input && usage.outputTokens == output, "\(api): \(usage)")
        }
    }

    @Test func onlyTheTokenOfTheRunInProgressIsAccepted() throws {
        let server = gateway()
        let first = try server.open(GatewayRun(agent: "a", runID: "r1", routes: [route("m")]))
        let token = first.token
        #expect(try call("a", "/v1/messages", token: nil, body: "{}").status == 401)
        #expect(
            try call("a", "/v1/messages", token: "agr_" + String(repeating: "0", count: 64), body: "{}").status == 401)
        // Another agent's gateway does not know this token.
        let other = try server.open(GatewayRun(agent: "b", runID: "r9", routes: [route("m")]))
        defer { _ = other.close() }
        #expect(try call("b", "/v1/messages", token: token, body: #"{"model": "m"}"#).status == 401)
        _ = first.close()
        // The run ended; the next run of the same agent does not take the old token.
        let second = try server.open(GatewayRun(agent: "a", runID: "r2", routes: [route("m")]))
        defer { _ = second.close() }
        let replayed = try call("a", "/v1/messages", token: token, body: #"{"model": "m"}"#)
        #expect(replayed.status == 401 && replayed.body.contains("run in progress"), "\(replayed)")
        #expect(try call("a", "/v1/messages", token: second.token, body: #"{"model": "m"}"#).status == 200)
        #expect(try received().count == 1, "refused requests never reached the model")
    }

    /// A model that fails before answering (refused, 5xx, 429) gives way to the next, with the
    /// request's `model` rewritten; with none left, the harness reads why.
    @Test func failuresFallBackToTheNextModelAndAreRecorded() throws {
        let server = gateway()
        let closed = "http://127.0.0.1:1/v1"
        let session = try server.open(
            GatewayRun(
                agent: "f", runID: "r",
                routes: [
                    route("primary", model: "p", baseURL: closed), route("busy", model: "fail-503"),
                    route("local", model: "llama"),
                ]))
        let answer = try call("f", "/v1/messages", token: session.token, body: #"{"model": "p", "max_tokens": 1}"#)
        #expect(answer.status == 200 && answer.body.contains("answer from llama"), "\(answer)")
        let models = try received().map { $0["model"] as? String }
        #expect(models == ["fail-503", "llama"], "each fallback got the request under its own name")
        let call = try #require(session.close().calls.first)
        #expect(call.requested == "p" && call.served == "local")
        #expect(call.fallbacks.count == 2 && call.fallbacks[0].hasPrefix("primary: cannot connect"), "\(call)")
        #expect(call.fallbacks[1] == "busy: HTTP 503")

        let alone = try server.open(
            GatewayRun(agent: "g", runID: "r", routes: [route("only", model: "o", baseURL: closed)]))
        let down = try self.call("g", "/v1/messages", token: alone.token, body: #"{"model": "o"}"#)
        #expect(down.status == 502 && down.body.contains("only: cannot connect"), "\(down)")
        #expect(alone.close().calls.first?.error?.contains("only") == true)
    }

    @Test func aStalledModelTimesOutToTheNextOrTo504() throws {
        var limits = GatewayServer.Limits()
        limits.firstByte = .seconds(1)
        let server = gateway(limits)
        let session = try server.open(
            GatewayRun(agent: "s", runID: "r", routes: [route("slow", model: "slow-x"), route("quick", model: "q")]))
        let answer = try call("s", "/v1/messages", token: session.token, body: #"{"model": "slow-x"}"#)
        #expect(answer.status == 200 && answer.body.contains("answer from q"), "\(answer)")
        #expect(session.close().calls.first?.fallbacks.first == "slow: no answer in time")
        let alone = try server.open(GatewayRun(agent: "t", runID: "r", routes: [route("slow", model: "slow-y")]))
        defer { _ = alone.close() }
        #expect(try call("t", "/v1/messages", token: alone.token, body: #"{"model": "slow-y"}"#).status == 504)
    }

    @Test func anAnswerCutAfterItsFirstByteIsPassedOnAndMarkedIncomplete() throws {
        let server = gateway()
        let session = try server.open(
            GatewayRun(agent: "c", runID: "r", routes: [route("cutter", model: "cut-x"), route("spare", model: "s")]))
        let answer = try call("c", "/v1/messages", token: session.token, body: #"{"model": "cut-x", "stream": true}"#)
        #expect(answer.body.contains("message_start") && !answer.body.contains("message_stop"), "\(answer)")
        let call = try #require(session.close().calls.first)
        #expect(call.incomplete && call.served == "cutter", "no fallback once bytes went out: \(call)")
        #expect(try received().count == 1)
    }

    /// An answer that stops coming mid-stream is cut after `idleRead` and recorded so; a long
    /// answer to a harness that reads slowly and asked to close the connection after it arrives
    /// whole, the upstream held back meanwhile.
    @Test func stalledAnswersAreCutAndSlowReadersGetTheWholeAnswer() throws {
        var limits = GatewayServer.Limits()
        limits.idleRead = .seconds(1)
        let server = gateway(limits)
        let stalled = try server.open(GatewayRun(agent: "st", runID: "r", routes: [route("staller", model: "stall-x")]))
        let cut = try call("st", "/v1/messages", token: stalled.token, body: #"{"model": "stall-x", "stream": true}"#)
        #expect(cut.body.contains("message_start") && !cut.body.contains("message_stop"), "\(cut)")
        let record = try #require(stalled.close().calls.first)
        #expect(record.incomplete && record.error == "the answer stalled", "\(record)")

        // The slow reader is held to a limit it keeps with room to spare on a loaded machine (curl's
        // rate limit reads in bursts, and CI once left it unscheduled past 1 s): what is checked is
        // that reading slower than the upstream sends is not mistaken for a stall.
        limits.idleRead = .seconds(10)
        let patient = gateway(limits)
        let long = try patient.open(
            GatewayRun(agent: "lg", runID: "r", routes: [route("bulk", model: "bulk-20000", api: "chat-completions")]))
        defer { _ = long.close() }
        let answer = try call(
            "lg", "/v1/chat/completions", token: long.token, body: #"{"model": "bulk-20000", "stream": true}"#,
            header: "bearer", extra: ["-H", "connection: close", "--limit-rate", "1M"])
        let events = answer.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(answer.status == 200 && events.count == 20_002 && events.last == "data: [DONE]", "\(events.suffix(2))")
        #expect(long.usage().calls.first?.incomplete == false)
    }

    /// What a guest sends is screened at its head: only POST and GET, only plain paths under the
    /// model's base (never a host, a dot segment or an encoded one), and the run's own model, whatever
    /// the request names: nothing else reaches the provider with its key.
    @Test func onlyTheRunsModelAndPathsReachTheProvider() throws {
        let server = gateway()
        let session = try server.open(
            GatewayRun(agent: "p", runID: "r", routes: [route("sonnet", model: "claude-x")]))
        defer { _ = session.close() }
        for target in [
            "/v1/../admin", "/v1/%2e%2e/admin", "/v1%2F..%2Fadmin", "/v1admin", "/v1/a/./b", "http://evil/v1/messages",
            "/v1%5C..%5Cadmin",
        ] {
            let answer = try call(
                "p", "/v1/messages", token: session.token, body: #"{"model": "claude-x"}"#,
                extra: ["--path-as-is", "--request-target", target])
            #expect(answer.status == 404, "\(target): \(answer)")
        }
        let deleted = try call(
            "p", "/v1/files/f1", token: session.token, body: "", extra: ["-X", "DELETE"])
        #expect(deleted.status == 405, "\(deleted)")
        #expect(try received().isEmpty, "nothing of these reached the provider")

        // A costlier model, and a second spelling of the member: the provider is asked for the run's.
        let answer = try call(
            "p", "/v1/messages", token: session.token,
            body: #"{"model": "claude-opus", "mod\u0065l": "claude-opus", "max_tokens": 5}"#)
        #expect(answer.status == 200 && answer.body.contains("answer from claude-x"), "\(answer)")
        #expect(try received().last?["model"] as? String == "claude-x")
        #expect(session.usage().calls.last?.requested == "claude-opus")

        // A base URL without a path: a request target still cannot reach another host.
        let bare = try server.open(
            GatewayRun(agent: "q", runID: "r", routes: [route("bare", baseURL: stubURL)]))
        defer { _ = bare.close() }
        let elsewhere = try call(
            "q", "/v1/messages", token: bare.token, body: #"{"model": "m"}"#,
            extra: ["--request-target", "evil://attacker.example/v1/messages"])
        #expect(elsewhere.status == 404, "\(elsewhere)")
    }

    /// A run's long answers hold connections of its own pool only, and an answer the harness stops
    /// reading is cut after `idleRead` (its connection closed), recorded so.
    @Test func unreadAnswersAreCutAndHoldNoOneElsesConnections() throws {
        var limits = GatewayServer.Limits()
        limits.idleRead = .seconds(2)
        let server = gateway(limits)
        let greedy = try server.open(
            GatewayRun(agent: "g", runID: "r", routes: [route("bulk", model: "bulk-400000", api: "chat-completions")]))
        let other = try server.open(GatewayRun(agent: "o", runID: "r", routes: [route("m")]))
        defer { _ = other.close() }
        let request =
            "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\nauthorization: Bearer \(greedy.token)\r\ncontent-type: application/json\r\ncontent-length: 37\r\n\r\n{\"model\": \"bulk-400000\", \"stream\": 1}"
        // Ten long streams opened and never read.
        let readers = try BackgroundProcess(
            "python3",
            [
                "-c",
                "import socket,sys,time\nsocks=[]\nfor _ in range(10):\n s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()); socks.append(s)\nprint('sent', flush=True); time.sleep(60)",
                folder.path + "/g.sock", request,
            ])
        #expect(readers.firstLine() == "sent")
        let answer = try call("o", "/v1/messages", token: other.token, body: #"{"model": "m"}"#)
        #expect(answer.status == 200, "another run's calls go on: \(answer)")
        let deadline = Date().addingTimeInterval(30)
        var cut = greedy.usage().calls.filter { _ in false }
        while cut.count < 10 && Date() < deadline {
            cut = greedy.usage().calls.filter { $0.error == "the harness stopped reading the answer" }
            if cut.count < 10 { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(cut.count == 10 && cut.allSatisfy(\.incomplete), "\(greedy.usage().calls)")
        _ = greedy.close()
        withExtendedLifetime(readers) {}
    }

    @Test func budgetsBodiesAndConnectionsAreBounded() throws {
        var limits = GatewayServer.Limits()
        limits.requestBody = 1024
        limits.connections = 2
        // Long enough that the held connections are still open while the test (a process per
        // call, slow on a loaded machine) asks for the third; the freeing is waited on below.
        limits.requestWait = .seconds(8)
        let server = gateway(limits)
        let session = try server.open(
            GatewayRun(agent: "b", runID: "r", routes: [route("m")], budgetTokens: 10))
        defer { _ = session.close() }
        let large = #"{"model": "m", "padding": ""# + String(repeating: "x", count: 4096) + #""}"#
        #expect(try call("b", "/v1/messages", token: session.token, body: large).status == 413)
        #expect(try call("b", "/v1/messages", token: session.token, body: #"{"model": "m"}"#).status == 200)
        let spent = try call("b", "/v1/messages", token: session.token, body: #"{"model": "m"}"#)
        #expect(spent.status == 429 && spent.body.contains("budget"), "\(spent)")
        #expect(session.usage().budgetExceeded)

        // Two connections held open (a harness that opens many): the third is refused, not queued.
        let holders = try (0..<2).map { _ in
            try BackgroundProcess(
                "python3",
                [
                    "-c",
                    "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('held', flush=True); time.sleep(30)",
                    folder.path + "/b.sock",
                ])
        }
        for holder in holders { #expect(holder.firstLine() == "held") }
        // A client's connect returns once the socket's backlog has it, before the gateway accepts
        // it: under load the holders may not be counted yet, so ask until they are (a deadline).
        var refused = try call("b", "/v1/messages", token: session.token, body: #"{"model": "m"}"#)
        let counted = Date().addingTimeInterval(10)
        while refused.status != 503 && Date() < counted {
            Thread.sleep(forTimeInterval: 0.05)
            refused = try call("b", "/v1/messages", token: session.token, body: #"{"model": "m"}"#)
        }
        #expect(refused.status == 503 && refused.body.contains("connections"), "\(refused)")
        // Connections that send nothing are closed after `requestWait`, and their places are free.
        let deadline = Date().addingTimeInterval(30)
        var freed = false
        while !freed && Date() < deadline {
            freed = try call("b", "/v1/models", token: session.token, body: "").status != 503
            if !freed { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(freed, "idle connections keep their places past requestWait")
        withExtendedLifetime(holders) {}
    }
}
