import Foundation
import TestSupport
import Testing

/// `agentry serve` as a user meets it: the real binary on loopback, a real repository, a real
/// microVM, tokens from `agentry token`. (Part of the apply suite: it shares its images.)
extension ApplyCommandTests {
    /// A receiver of webhooks on a free loopback port: each request a JSON line (headers, body) in
    /// `file`; the first is answered 500 (to be retried), the rest 204.
    static let receiver = """
        import http.server, json, sys
        class Hook(http.server.BaseHTTPRequestHandler):
            count = 0
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with open(sys.argv[1], "a") as out:
                    out.write(json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body.decode()}) + "\\n")
                Hook.count += 1
                self.send_response(500 if Hook.count == 1 else 204)
                self.end_headers()
            def log_message(self, *args): pass
        server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
        print("port", server.server_address[1], file=sys.stderr, flush=True)
        server.serve_forever()
        """

    /// Starts `agentry serve` on a free port, following the repository at `url` with the git
    /// token `gitToken`; its base URL.
    func serve(_ url: String, gitToken: String, notify: String? = nil) throws -> (RunningCommand, String) {
        let server = try RunningCommand(
            Agentry.binary.path,
            [
                "serve", "--state-dir", state.path, "--repo", url, "--listen", "127.0.0.1:0", "--grace", "5s",
                "--webhook-secret", "github/webhook",
            ] + (notify.map { ["--notify-url", $0, "--notify-secret", "notify/secret"] } ?? []),
            environment: ["AGENTRY_ACCELERATOR": "tcg", "AGENTRY_GIT_TOKEN": gitToken])
        try server.waitForError("listening on http://", seconds: 60)
        let line = server.stderr.split(separator: "\n").first { $0.contains("listening on http://") } ?? ""
        guard let start = line.range(of: "http://") else { throw Shell.Failure(description: "no address: \(line)") }
        return (server, String(line[start.lowerBound...]).trimmingCharacters(in: .whitespaces))
    }

    /// `agentry token SUBCOMMAND ...` on the suite's state directory.
    func tokens(_ arguments: [String]) throws -> Agentry.Result {
        try Shell.run(Agentry.binary.path, ["token"] + arguments + ["--state-dir", state.path])
    }

    func token(_ arguments: [String], in repo: TemporaryDirectory) throws -> String {
        let made = try tokens(["create"] + arguments)
        #expect(made.status == 0, "\(made.stderr)")
        return made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls a run until it is final; the last answer.
    func finished(_ base: String, _ id: String, token: String, seconds: Double = 240) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        try await TestSupport.waitUntil("run \(id) to end", seconds: seconds) {
            last = try HTTP.request("GET", base + "/v1/runs/\(id)", token: token).json
            return !["queued", "starting", "running"].contains(last["status"] as? String ?? "")
        }
        return last
    }

    /// A service whose remote has not answered yet says so: it is not ready, and what needs the
    /// repository is answered 503 with Retry-After, never a run accepted only to fail.
    @Test func aServiceThatHasNotFetchedItsRepositorySaysSo() async throws {
        let silent = try BackgroundProcess.silentServer()
        let port = silent.firstLine()
        let state = try TemporaryDirectory("agentry-unfetched")
        let made = try Shell.run(
            Agentry.binary.path, ["token", "create", "--scope", "admin", "--state-dir", state.path])
        #expect(made.status == 0, "\(made.stderr)")
        let admin = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let server = try RunningCommand(
            Agentry.binary.path,
            [
                "serve", "--state-dir", state.path, "--repo", "http://127.0.0.1:\(port)/agents.git", "--listen",
                "127.0.0.1:0",
            ])
        defer {
            server.signal(SIGKILL)
            _ = try? server.wait(seconds: 30)
        }
        try server.waitForError("listening on http://", seconds: 60)
        let line = server.stderr.split(separator: "\n").first { $0.contains("listening on http://") } ?? ""
        let base = String(line[try #require(line.range(of: "http://")).lowerBound...])
        let ready = try HTTP.request("GET", base + "/readyz")
        #expect(ready.status == 503 && ready.body.contains("not ready"), "\(ready)")
        for (method, path) in [
            ("POST", "/v1/agents/greeter/runs"), ("GET", "/v1/agents"), ("GET", "/v1/agents/greeter"),
        ] {
            let answer = try HTTP.request(method, base + path, token: admin, body: method == "POST" ? "{}" : nil)
            #expect(answer.status == 503 && answer.headers["retry-after"] == "5", "\(method) \(path): \(answer)")
            #expect(answer.body.contains("the service is not ready"), "\(answer.body)")
        }
        withExtendedLifetime(silent) {}
    }

    @Test func serveAcceptsRunsOnceRefusesStrangersAndLosesNothingWhenKilled() async throws {
        defer { stopMachines() }
        let repo = try runRepository(
            script:
                "mkdir -p out; echo \"$PROMPT\" > out/answer.txt; case \"$PROMPT\" in slow*) sleep 60;; esac; echo \"did $PROMPT\""
        )
        // The repository lives on a git server that takes only a token, as GitHub does. The service
        // follows it by URL (a mirror in its state directory) and pushes its history back there; CI
        // applied it first from a clone of the same URL.
        let remotes = try TemporaryDirectory("agentry-serve-remote")
        let bare = remotes.path + "/agents.git"
        try Shell.git(["init", "-q", "--bare", bare], in: remotes.url)
        func publish() throws { try Shell.git(["push", "-q", bare, "HEAD:refs/heads/main"], in: repo.url) }
        try publish()
        let gitToken = "a-git-token-for-the-serve-test"
        let gitServer = try GitHTTPServer(root: remotes.path, token: gitToken)
        let url = gitServer.url("agents.git")
        try Shell.git(["remote", "add", "origin", url], in: repo.url)
        /// The history branch as the remote has it.
        func remoteHistory(_ arguments: [String]) throws -> String {
            try Shell.git(["--git-dir", bare] + arguments, in: remotes.url)
        }
        let applied = try agentry(["apply"], in: repo, environment: ["AGENTRY_GIT_TOKEN": gitToken])
        #expect(applied.status == 0, "\(applied.stderr)")
        let hookSecret = "a-webhook-secret-of-some-length"
        let stored = try Shell.run(
            Agentry.binary.path, ["secret", "set", "github/webhook", "--state-dir", state.path], input: hookSecret)
        #expect(stored.status == 0, "\(stored.stderr)")
        let runner = try token(["--scope", "run"], in: repo)
        let reader = try token(["--scope", "read"], in: repo)
        let elsewhere = try token(["--scope", "run", "--agent", "someone-else"], in: repo)
        let listed = try tokens(["list", "-o", "json"])
        #expect(listed.stdout.contains("\"scopes\"") && !listed.stdout.contains(runner), "token text is never listed")

        // Webhooks out go to a receiver on loopback, signed with a Standard Webhooks secret.
        let notifySecret = "whsec_" + Data("a signing key of 24 bytes".utf8).base64EncodedString()
        #expect(
            try Shell.run(
                Agentry.binary.path, ["secret", "set", "notify/secret", "--state-dir", state.path], input: notifySecret
            ).status == 0)
        let received = repo.url.appendingPathComponent("received.jsonl").path
        let hooks = try RunningCommand("python3", ["-c", Self.receiver, received])
        defer { hooks.signal(SIGKILL) }
        try hooks.waitForError("port ", seconds: 30)
        let hookPort = hooks.stderr.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let notify = "http://127.0.0.1:\(hookPort)/agentry"

        // The first service sends no webhooks (none configured); the one started after the kill does.
        var (server, base) = try serve(url, gitToken: gitToken)
        var bases = [base]
        // Ready once the first fetch of the remote worked (until then what needs the repository is
        // answered 503 with Retry-After).
        try await TestSupport.waitUntil("the service's first fetch", seconds: 120) {
            try HTTP.request("GET", base + "/readyz").status == 200
        }
        #expect(try HTTP.request("GET", base + "/healthz").status == 200)
        // The API's own OpenAPI document, as committed.
        let openapi = try HTTP.request("GET", base + "/v1/openapi.yaml")
        let committedOpenAPI = try String(
            contentsOf: Agentry.packageRoot.appendingPathComponent("schemas/openapi.yaml"), encoding: .utf8)
        #expect(openapi.status == 200 && openapi.body == committedOpenAPI)
        // One service per state directory.
        let second = try Shell.run(
            Agentry.binary.path,
            ["serve", "--state-dir", state.path, "--repo", repo.path, "--listen", "127.0.0.1:0"], timeout: 60)
        #expect(second.status != 0 && second.stderr.contains("another agentry serve"), "\(second.stderr)")

        // Strangers: no token, a made-up one, a revoked one, the wrong scope, the wrong agent.
        let anonymous = try HTTP.request("GET", base + "/v1/agents")
        #expect(anonymous.status == 401)
        #expect((anonymous.json["error"] as? [String: Any])?["code"] as? String == "unauthenticated")
        #expect(
            try HTTP.request("GET", base + "/v1/agents", token: "agt_" + String(repeating: "0", count: 64)).status
                == 401)
        let revoked = try token(["--scope", "admin"], in: repo)
        let revokedID = try #require(
            (decodeJSON(try tokens(["list", "-o", "json"]).stdout)["tokens"] as? [[String: Any]])?
                .last?["id"] as? String)
        #expect(try tokens(["revoke", revokedID]).status == 0)
        #expect(try HTTP.request("GET", base + "/v1/agents", token: revoked).status == 401)
        var runs = base + "/v1/agents/greeter/runs"
        #expect(try HTTP.request("POST", runs, token: reader, body: "{}").status == 403)
        #expect(try HTTP.request("POST", runs, token: elsewhere, body: "{}").status == 403)
        let malformed = try HTTP.request("POST", runs, token: runner, body: #"{"prompt": 5}"#)
        #expect(malformed.status == 400, "\(malformed.body)")
        #expect(try HTTP.request("POST", base + "/v1/agents/nobody/runs", token: runner, body: "{}").status == 404)

        // The agent as the state sees it.
        let agents = try HTTP.request("GET", base + "/v1/agents", token: reader)
        #expect(agents.status == 200)
        let greeter = (agents.json["agents"] as? [[String: Any]])?.first { $0["name"] as? String == "greeter" }
        #expect(greeter?["appliedRevision"] as? String != nil, "\(agents.body)")

        // A run, asked twice with one Idempotency-Key: one run, answered 201 then 200.
        let key = ["Idempotency-Key": "first-run"]
        let first = try HTTP.request("POST", runs, token: runner, headers: key, body: #"{"prompt": "hi"}"#)
        #expect(first.status == 201, "\(first.body)")
        let id = try #require(first.json["id"] as? String)
        #expect(first.headers["location"] == "/v1/runs/\(id)")
        let again = try HTTP.request("POST", runs, token: runner, headers: key, body: #"{"prompt": "hi"}"#)
        #expect(again.status == 200)
        #expect(again.json["id"] as? String == id)
        let done = try await finished(base, id, token: reader)
        #expect(done["status"] as? String == "succeeded", "\(done)")
        #expect(done["exitStatus"] as? Int == 0)
        let record = try #require(done["recordId"] as? String)
        // Recorded in history exactly once, with its artifact, pushed to the remote, readable with
        // plain git.
        let history = try remoteHistory(["ls-tree", "-r", "--name-only", "agentry/history", "runs/greeter"])
        #expect(history.split(separator: "\n").filter { $0.hasSuffix("/record.yaml") }.count == 1, "\(history)")
        #expect(history.contains("\(record)/artifacts/answer.txt"))
        // Its events, replayed from history, and resumed from an event id; its artifact, by ETag.
        let replay = try HTTP.request("GET", base + "/v1/runs/\(id)/events", token: reader)
        #expect(replay.headers["content-type"] == "text/event-stream", "\(replay.headers)")
        #expect(replay.body.hasPrefix("event: status\n") && replay.body.contains("did hi"), "\(replay.body)")
        #expect(replay.body.contains("event: end\n") && replay.body.contains("\"status\":\"succeeded\""))
        let lastOutput = try #require(
            replay.body.components(separatedBy: "\n\n").last { $0.hasPrefix("event: output") }?
                .split(separator: "\n").first { $0.hasPrefix("id: ") }?.dropFirst(4))
        let resumed = try HTTP.request(
            "GET", base + "/v1/runs/\(id)/events", token: reader, headers: ["Last-Event-ID": String(lastOutput)])
        #expect(!resumed.body.contains("event: output") && resumed.body.contains("event: end"), "\(resumed.body)")
        let artifacts = try HTTP.request("GET", base + "/v1/runs/\(id)/artifacts", token: reader)
        let answer = (artifacts.json["artifacts"] as? [[String: Any]])?.first {
            $0["path"] as? String == "out/answer.txt"
        }
        let sha = try #require(answer?["sha256"] as? String, "\(artifacts.body)")
        let fetched = try HTTP.request("GET", base + "/v1/runs/\(id)/artifacts/out/answer.txt", token: reader)
        #expect(
            fetched.status == 200 && fetched.body == "hi\n" && fetched.headers["etag"] == "\"\(sha)\"", "\(fetched)")
        let unchanged = try HTTP.request(
            "GET", base + "/v1/runs/\(id)/artifacts/out/answer.txt", token: reader,
            headers: ["If-None-Match": "\"\(sha)\""])
        #expect(unchanged.status == 304)
        #expect(try HTTP.request("GET", base + "/v1/runs/\(id)/artifacts/../x", token: reader).status == 404)
        // A token for other agents does not see the run at all.
        #expect(try HTTP.request("GET", base + "/v1/runs/\(id)", token: elsewhere).status == 404)
        let page = try HTTP.request("GET", runs + "?limit=1", token: reader)
        #expect((page.json["runs"] as? [[String: Any]])?.first?["id"] as? String == id)

        // A push: the loop applies it when asked (admin), and the agent's conditions say so.
        let admin = try token(["--scope", "admin"], in: repo)
        let before = try HTTP.request("GET", base + "/v1/agents/greeter", token: reader).json
        let file = repo.url.appendingPathComponent("agents/greeter.yaml")
        let text = try String(contentsOf: file, encoding: .utf8)
        try repo.write("agents/greeter.yaml", text.replacingOccurrences(of: "Greet people.", with: "Greet everyone."))
        let friendlier = try repo.commitAll("friendlier", initialize: false)
        try publish()
        #expect(try HTTP.request("POST", base + "/v1/reconcile", token: runner).status == 403)
        // GitHub says so (signed with the store's secret); a forged signature is refused.
        let push = #"{"ref": "refs/heads/main", "after": "0000"}"#
        let signature = try Shell.run(
            "python3",
            [
                "-c",
                "import hmac, hashlib, sys; print('sha256=' + hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())",
                hookSecret, push,
            ]
        ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let forged = try HTTP.request(
            "POST", base + "/v1/hooks/github",
            headers: ["X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + String(repeating: "0", count: 64)],
            body: push)
        #expect(forged.status == 401)
        let hooked = try HTTP.request(
            "POST", base + "/v1/hooks/github", headers: ["X-GitHub-Event": "push", "X-Hub-Signature-256": signature],
            body: push)
        #expect(hooked.status == 202 && hooked.body.contains("reconciling"), "\(hooked.body)")
        var now: [String: Any] = [:]
        try await TestSupport.waitUntil("the push to be applied", seconds: 180) {
            now = try HTTP.request("GET", base + "/v1/agents/greeter", token: reader).json
            let applied = now["appliedRevision"] as? String
            return applied != nil && applied == now["desiredRevision"] as? String
                && applied != before["appliedRevision"] as? String
        }
        let ready = (now["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Ready" }
        #expect(ready?["status"] as? String == "True", "\(now)")
        // The pass ends a moment after the agent's new revision is recorded.
        var pass: [String: Any]?
        try await TestSupport.waitUntil("the pass to end", seconds: 60) {
            pass = try HTTP.request("GET", base + "/v1/reconcile", token: admin).json["lastPass"] as? [String: Any]
            return pass?["result"] as? String == "applied"
        }
        // Fetched from the remote into the mirror, with the token.
        let source = try HTTP.request("GET", base + "/v1/reconcile", token: admin).json["source"] as? [String: Any]
        #expect(
            source?["url"] as? String == url && source?["commit"] as? String == friendlier,
            "\(String(describing: source))")
        #expect(source?["error"] is NSNull)
        #expect(try HTTP.request("GET", base + "/readyz").status == 200)
        #expect(try HTTP.request("GET", base + "/v1/reconcile", token: elsewhere).status == 403)
        #expect(try HTTP.request("POST", base + "/v1/reconcile", token: admin).status == 202)

        // The service dies mid-run (SIGKILL): started again, the run is interrupted, not lost, and
        // the next run goes through.
        let slow = try HTTP.request("POST", runs, token: runner, body: #"{"prompt": "slow one"}"#)
        #expect(slow.status == 201)
        let slowID = try #require(slow.json["id"] as? String)
        try await TestSupport.waitUntil("the slow run to start", seconds: 120) {
            try HTTP.request("GET", base + "/v1/runs/\(slowID)", token: reader).json["status"] as? String == "running"
        }
        server.signal(SIGKILL)
        _ = try server.wait(seconds: 30)
        (server, base) = try serve(url, gitToken: gitToken, notify: notify)
        bases.append(base)
        runs = base + "/v1/agents/greeter/runs"
        let lost = try HTTP.request("GET", base + "/v1/runs/\(slowID)", token: reader).json
        #expect(lost["status"] as? String == "interrupted", "\(lost)")
        let after = try HTTP.request("POST", runs, token: runner, body: #"{"prompt": "after"}"#)
        let afterID = try #require(after.json["id"] as? String)
        // Followed live: the stream ends when the run does.
        let live = try HTTP.request("GET", base + "/v1/runs/\(afterID)/events", token: reader)
        // (A status that lasts less than the stream's look, such as a short `running`, may not show.)
        #expect(live.body.contains("event: status") && live.body.contains("did after"), "\(live.body)")
        #expect(live.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }.last?.hasPrefix("event: end") == true)
        let afterDone = try await finished(base, afterID, token: reader)
        #expect(afterDone["status"] as? String == "succeeded", "\(afterDone)")
        // History holds all three, the killed service's run recorded as interrupted by the next.
        let records = try remoteHistory(["ls-tree", "-r", "--name-only", "agentry/history", "runs/greeter"])
            .split(separator: "\n").filter { $0.hasSuffix("/record.yaml") }
        #expect(records.count == 3, "\(records)")
        let outcomes = try records.map { try remoteHistory(["show", "agentry/history:\($0)"]) }
        #expect(outcomes.filter { $0.contains("outcome: \"interrupted\"") }.count == 1, "\(outcomes)")

        // The kill switch over HTTP (admin): runs are refused with 409 until it is lifted.
        let kill = try HTTP.request(
            "POST", base + "/v1/agents/greeter/kill", token: admin, body: #"{"reason": "testing the switch"}"#)
        #expect(kill.status == 200, "\(kill.body)")
        let refused = try HTTP.request("POST", runs, token: runner, body: "{}")
        #expect(refused.status == 409 && refused.body.contains("testing the switch"), "\(refused.body)")
        let killed = try HTTP.request("GET", base + "/v1/agents/greeter", token: reader).json
        #expect((killed["killSwitch"] as? [String: Any])?["reason"] as? String == "testing the switch")
        #expect(try HTTP.request("POST", base + "/v1/agents/greeter/unkill", token: admin).status == 200)

        // A schedule: every minute, applied by the loop, fires a run with trigger `schedule`.
        let current = try String(contentsOf: file, encoding: .utf8)
        try repo.write(
            "agents/greeter.yaml",
            current.replacingOccurrences(of: "run: {prompt:", with: "run: {schedule: \"* * * * *\", prompt:"))
        _ = try repo.commitAll("every minute", initialize: false)
        try publish()
        #expect(try HTTP.request("POST", base + "/v1/reconcile", token: admin).status == 202)
        var scheduled: [String: Any]?
        try await TestSupport.waitUntil("a scheduled run to end", seconds: 240) {
            let page = try HTTP.request("GET", runs, token: reader).json["runs"] as? [[String: Any]] ?? []
            scheduled = page.first { $0["trigger"] as? String == "schedule" }
            return (scheduled?["status"] as? String).map { !["queued", "starting", "running"].contains($0) } ?? false
        }
        #expect(scheduled?["status"] as? String == "succeeded" && scheduled?["requestedBy"] as? String == "schedule")
        let withSchedule = try HTTP.request("GET", base + "/v1/agents/greeter", token: reader).json
        let schedule = withSchedule["schedule"] as? [String: Any]
        #expect(schedule?["expression"] as? String == "* * * * *" && schedule?["timeZone"] as? String == "UTC")
        #expect(
            (schedule?["last"] as? [String: Any])?["runId"] as? String == scheduled?["id"] as? String, "\(withSchedule)"
        )
        #expect(schedule?["nextAt"] is String)
        let scheduledRecord = try remoteHistory([
            "show", "agentry/history:runs/greeter/\(scheduled?["recordId"] as? String ?? "?")/record.yaml",
        ])
        #expect(scheduledRecord.contains("kind: \"schedule\""), "\(scheduledRecord)")

        // Suspended (admin): the agent says by whom and why, the loop leaves it alone; resumed.
        #expect(try HTTP.request("POST", base + "/v1/agents/greeter/suspend", token: runner).status == 403)
        let suspended = try HTTP.request(
            "POST", base + "/v1/agents/greeter/suspend", token: admin, body: #"{"reason": "looking into it"}"#)
        #expect(suspended.status == 200 && suspended.json["changed"] as? Bool == true, "\(suspended.body)")
        let held = try HTTP.request("GET", base + "/v1/agents/greeter", token: reader).json["suspension"]
        #expect((held as? [String: Any])?["reason"] as? String == "looking into it", "\(String(describing: held))")
        #expect(try HTTP.request("POST", base + "/v1/suspend", token: admin, body: "{}").status == 200)
        let paused = try HTTP.request("GET", base + "/v1/reconcile", token: admin).json
        #expect((paused["suspension"] as? [String: Any])?["actor"] as? String != nil, "\(paused)")
        #expect(try HTTP.request("POST", base + "/v1/resume", token: admin).json["changed"] as? Bool == true)
        #expect(
            try HTTP.request("POST", base + "/v1/agents/greeter/resume", token: admin).json["changed"] as? Bool == true)
        #expect(try HTTP.request("GET", base + "/v1/agents/greeter", token: reader).json["suspension"] is NSNull)

        // Webhooks out: each run's end (and the interrupted run's, marked at start) was POSTed,
        // signed; the first answer (500) was retried with the same webhook-id, and the service
        // lists the deliveries, without the URL's path.
        var posted: [[String: Any]] = []
        try await TestSupport.waitUntil("the first delivery to be retried", seconds: 60) {
            posted = ((try? String(contentsOfFile: received, encoding: .utf8)) ?? "").split(separator: "\n")
                .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            let ids = posted.compactMap { ($0["headers"] as? [String: String])?["webhook-id"] }
            return Set(ids).count < ids.count
        }
        let bodies = posted.compactMap { $0["body"] as? String }
        #expect(bodies.contains { $0.contains(#""type":"run.completed""#) && $0.contains(afterID) }, "\(bodies)")
        #expect(!bodies.contains { $0.contains(id) }, "the first service had no webhooks: \(bodies)")
        for line in posted {
            let headers = line["headers"] as? [String: String] ?? [:]
            let verified = try Shell.run(
                "python3",
                [
                    "-c",
                    "import base64, hmac, hashlib, sys; key = base64.b64decode(sys.argv[1][6:]); signed = (sys.argv[2] + '.' + sys.argv[3] + '.' + sys.argv[4]).encode(); print('v1,' + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode())",
                    notifySecret, headers["webhook-id"] ?? "", headers["webhook-timestamp"] ?? "",
                    line["body"] as? String ?? "",
                ]
            ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(headers["webhook-signature"] == verified, "\(headers)")
        }
        let deliveries = try HTTP.request("GET", base + "/v1/deliveries", token: admin)
        let delivered = (deliveries.json["deliveries"] as? [[String: Any]] ?? []).filter {
            $0["status"] as? String == "delivered"
        }
        #expect(deliveries.status == 200 && !delivered.isEmpty, "\(deliveries.body)")
        #expect(delivered.allSatisfy { $0["url"] as? String == "http://127.0.0.1:\(hookPort)/…" }, "\(delivered)")
        #expect(try HTTP.request("GET", base + "/v1/deliveries", token: reader).status == 403)

        // Metrics in Prometheus's text format, for a token that sees every agent.
        #expect(try HTTP.request("GET", base + "/metrics").status == 401)
        #expect(try HTTP.request("GET", base + "/metrics", token: elsewhere).status == 403)
        let metrics = try HTTP.request("GET", base + "/metrics", token: reader)
        #expect(metrics.status == 200 && metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
        func sample(_ series: String) -> Double? {
            metrics.body.split(separator: "\n").first { $0.hasPrefix(series + " ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        // Since the restart: "after" and the scheduled run (or more of them) succeeded.
        #expect((sample(#"agentry_runs_total{agent="greeter",status="succeeded"}"#) ?? 0) >= 2, "\(metrics.body)")
        #expect((sample(#"agentry_run_duration_seconds_count{agent="greeter"}"#) ?? 0) >= 2)
        #expect(sample(#"agentry_machines{state="running"}"#) == 1)
        #expect((sample(#"agentry_reconcile_passes_total{result="applied"}"#) ?? 0) >= 1)
        #expect((sample(#"agentry_schedule_events_total{outcome="started"}"#) ?? 0) >= 1)
        #expect(sample("agentry_runs_queued") != nil && sample("agentry_runs_active") != nil)
        #expect(
            metrics.body.contains("hb_requests{http_route=\"/v1/agents/{name}/runs\""),
            "HTTP requests by route and status")

        // SIGTERM: a clean stop, exit 0.
        server.signal(SIGTERM)
        #expect(try server.wait(seconds: 60) == 0, "\(server.stderr.suffix(2000))")
        #expect(server.stderr.contains("agentry serve: stopped"))

        // Every answer above agrees with the OpenAPI document (Tests/openapi/check.py).
        let lines = HTTP.exchanges.withLock { $0 }.compactMap { exchange -> String? in
            guard let base = bases.first(where: { exchange.url.hasPrefix($0 + "/") }) else { return nil }
            return exchange.jsonLine(path: String(exchange.url.dropFirst(base.count)))
        }
        let recorded = repo.url.appendingPathComponent("exchanges.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: recorded, atomically: true, encoding: .utf8)
        let checked = try Shell.run(
            "python3", ["Tests/openapi/check.py", "schemas/openapi.yaml", recorded.path], in: Agentry.packageRoot)
        #expect(checked.status == 0, "\(checked.stdout)\(checked.stderr)")
        let pairs = checked.stdout.split(separator: "\n").filter { $0.hasPrefix("  ") }
        #expect(pairs.count >= 25, "the test covers most of the API: \(checked.stdout)")
        withExtendedLifetime(gitServer) {}
    }
}
