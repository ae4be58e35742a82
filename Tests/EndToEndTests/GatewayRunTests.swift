import Foundation
import TestSupport
import Testing

extension ApplyCommandTests {
    /// The test model stub on loopback, logging what it received to a file, and the provider's key
    /// it is to receive stored in the state's secret store as `stub/key`.
    func modelStub() throws -> (process: BackgroundProcess, log: String, port: String, key: String) {
        let log = state.path + "/../stub-\(UUID().uuidString).jsonl"
        let stub = try BackgroundProcess(
            "python3", [Agentry.packageRoot.appendingPathComponent("Tests/Fixtures/model_stub.py").path, log])
        let port = stub.firstLine()
        let key = "sk-provider-key-\(UUID().uuidString.prefix(12))"
        let stored = try Shell.run(
            Agentry.binary.path, ["secret", "set", "stub/key", "--state-dir", state.path], input: key + "\n")
        #expect(stored.status == 0, "\(stored.stderr)")
        return (stub, log, port, key)
    }

    /// A Python package index on loopback serving `folder` (after writing the probe wheels named),
    /// and the environment that points pip at it alone.
    func packageIndex(_ folder: String, probes: [String] = []) throws -> (
        process: BackgroundProcess, pip: [String: String]
    ) {
        let index = try BackgroundProcess(
            "python3",
            [Agentry.packageRoot.appendingPathComponent("Tests/Fixtures/wheelhouse.py").path, folder]
                + probes.flatMap { ["--probe", $0] })
        return (index, ["PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "http://127.0.0.1:\(index.firstLine())/"])
    }

    /// A shell harness in a real microVM calls its model through `{{model.baseUrl}}` with
    /// `{{model.apiKey}}`: the stub model server sees the provider's key, added on the host, while
    /// the machine only ever held the run's token; a primary model on a closed port gives way to
    /// its fallback; the usage lands in the record; a spent budget stops the calls and says so.
    @Test func aRunReachesItsModelOnlyThroughTheGateway() throws {
        defer { stopMachines() }
        let (stub, log, port, key) = try modelStub()
        let call = """
            for i in 1 2; do wget -q -O - --header "x-api-key: $KEY" --header 'content-type: application/json' \
            --post-data "{\\"model\\": \\"$MODEL\\", \\"max_tokens\\": 5}" "$BASE/messages" || echo "call $i failed"; echo; done; \
            env | grep -v '^PROVIDER_KEY_PREFIX=' | grep -c "$PROVIDER_KEY_PREFIX" || true
            """
        let repo = try runRepository(
            agent: "caller", script: call,
            env: ["BASE": "{{model.baseUrl}}", "KEY": "{{model.apiKey}}", "PROVIDER_KEY_PREFIX": "sk-provider-key"],
            apis: ["messages"])
        try repo.write(
            "models/primary.yaml",
            "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: primary}\nspec: {provider: anthropic, name: claude-gone, api: messages, baseUrl: 'http://127.0.0.1:1/v1', credentials: {ref: stub/key}}\n"
        )
        try repo.write(
            "models/stub.yaml",
            "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: stub}\nspec: {provider: local, name: stub-model, api: messages, baseUrl: 'http://127.0.0.1:\(port)/v1', credentials: {ref: stub/key}}\n"
        )
        let agentFile = repo.url.appendingPathComponent("agents/caller.yaml")
        var agent = try String(contentsOf: agentFile, encoding: .utf8)
        agent = agent.replacingOccurrences(of: "  model: local", with: "  model: primary\n  fallbackModels: [stub]")
        try repo.write("agents/caller.yaml", agent)
        try repo.commitAll("a model behind the gateway")

        let run = try agentry(["run", "caller", "--apply"], in: repo)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.components(separatedBy: "answer from stub-model").count == 3, "\(run.stdout)")
        #expect(run.stdout.hasSuffix("0\n"), "no variable in the machine holds the provider's key: \(run.stdout)")
        let received = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(received.count == 2)
        for request in received {
            let headers = request["headers"] as? [String: String] ?? [:]
            #expect(headers["x-api-key"] == key, "the model got the provider's key from the host: \(headers)")
            #expect(request["model"] as? String == "stub-model", "the fallback got the request under its name")
        }
        // The key is nowhere in the machine: not in its files, its disk, its processes.
        let search = try agentry(
            [
                "exec", "caller", "--", "sh", "-c",
                "grep -rl \(key) /agent /run /tmp /etc /proc/[0-9]*/environ 2>/dev/null | head -3; echo searched",
            ],
            in: repo)
        #expect(search.stdout == "searched\n", "\(search.stdout)")

        let record = try latestRecord(repo)
        try expectValidRecord(record)
        #expect(record.contains("usage:\n  calls: 2\n  inputTokens: 22\n  outputTokens: 14"), "\(record)")
        #expect(record.contains("served: \"stub\"") && record.contains("primary: cannot connect"), "\(record)")
        #expect(!record.contains(key))

        // A budget of 10 tokens: the first call spends 18, the second is refused and the record says why.
        agent = agent.replacingOccurrences(of: "timeout: 2m}", with: "timeout: 2m, budget: {tokens: 10}}")
        try repo.write("agents/caller.yaml", agent)
        try repo.commitAll("a budget")
        let limited = try agentry(["run", "caller", "--apply"], in: repo)
        #expect(limited.stdout.contains("call 2 failed"), "\(limited.stdout)\(limited.stderr)")
        let stopped = try latestRecord(repo)
        #expect(stopped.contains("budgetExceeded: true") && stopped.contains("token budget (10 tokens)"), "\(stopped)")
        withExtendedLifetime(stub) {}
    }
}

extension ApplyCommandTests {
    /// A run's token opens the gateway for that run of that agent only: another agent's run
    /// presenting it is refused (401), and so is the same agent's next run once the first ended.
    /// While the token is live, the machine's whole memory holds it but never the provider's key.
    @Test func aRunTokenServesOnlyItsOwnRun() throws {
        defer { stopMachines() }
        let stub = try BackgroundProcess(
            "python3",
            [Agentry.packageRoot.appendingPathComponent("Tests/Fixtures/model_stub.py").path, "/dev/null"])
        let key = "sk-provider-key-\(UUID().uuidString.prefix(12))"
        // `hold` leaves the run's token in a file (the run's output redacts it) and waits; `use
        // TOKEN` calls the model with TOKEN.
        let script = """
            case "$PROMPT" in hold) echo "$KEY" > /agent/held-token; echo holding; sleep 600;; \
            use*) wget -O - --header "x-api-key: ${PROMPT#use }" --header 'content-type: application/json' \
            --post-data '{"model": "stub-model"}' "$BASE/messages" 2>&1; echo " status $?";; esac
            """
        let repo = try runRepository(
            agent: "holder", script: script, env: ["BASE": "{{model.baseUrl}}", "KEY": "{{model.apiKey}}"],
            apis: ["messages"])
        try repo.write(
            "models/stub.yaml",
            "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: stub}\nspec: {provider: local, name: stub-model, api: messages, baseUrl: 'http://127.0.0.1:\(stub.firstLine())/v1', credentials: {ref: stub/key}}\n"
        )
        let holder = try String(contentsOf: repo.url.appendingPathComponent("agents/holder.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "  model: local", with: "  model: stub")
        try repo.write("agents/holder.yaml", holder)
        try repo.write("agents/other.yaml", holder.replacingOccurrences(of: "name: holder", with: "name: other"))
        try repo.commitAll("two agents on one model")
        #expect(try agentry(["apply", "--auto-approve"], in: repo).status == 0)
        // Without the model's key in the store, a run does not start, and says which key.
        let keyless = try agentry(["run", "holder", "--prompt", "hold"], in: repo)
        #expect(keyless.status == 2 && keyless.stderr.contains("stub/key"), "\(keyless.stderr)")
        #expect(
            try Shell.run(
                Agentry.binary.path, ["secret", "set", "stub/key", "--state-dir", state.path], input: key + "\n"
            ).status == 0)

        let held = try startAgentry(["run", "holder", "--prompt", "hold"], in: repo)
        try waitUntil(seconds: 120) { held.stdout.contains("holding") }
        let token = try agentry(["exec", "holder", "--", "cat", "/agent/held-token"], in: repo).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.hasPrefix("agr_") && !held.stdout.contains(token), "the run's output redacts its token")

        // A made-up token is refused, and so is the holder's, presented by the other agent.
        let madeUp = try agentry(["run", "other", "--prompt", "use agr_made_up"], in: repo)
        #expect(madeUp.stdout.contains("401"), "\(madeUp.stdout)")
        let stolen = try agentry(["run", "other", "--prompt", "use \(token)"], in: repo)
        #expect(stolen.stdout.contains("401") && !stolen.stdout.contains("answer from"), "\(stolen.stdout)")

        // The holder's memory, dumped whole while its run is live: the token is there, the key is not.
        let dump = state.path + "/../memory-\(UUID().uuidString).dump"
        defer { try? FileManager.default.removeItem(atPath: dump) }
        let qmp = try Shell.run(
            "python3",
            [
                "-c",
                """
                import json, socket, sys
                s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
                f.readline()
                for command in [{"execute": "qmp_capabilities"},
                                {"execute": "dump-guest-memory", "arguments": {"paging": False, "protocol": "file:" + sys.argv[2]}}]:
                    f.write(json.dumps(command) + "\\n"); f.flush()
                    while True:
                        answer = json.loads(f.readline())
                        if "return" in answer or "error" in answer: break
                    if "error" in answer: sys.exit(json.dumps(answer))
                data = open(sys.argv[2], "rb").read()
                print(len(data) >> 20, data.count(sys.argv[3].encode()), data.count(sys.argv[4].encode()))
                """,
                state.path + "/agents/holder/qmp.sock", dump, token, key,
            ])
        let counts = qmp.stdout.split(separator: " ").compactMap {
            Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(counts.count == 3 && counts[0] >= 64 && counts[1] > 0, "\(qmp.stdout)\(qmp.stderr)")
        #expect(counts.count == 3 && counts[2] == 0, "the provider's key is nowhere in the machine's memory")

        held.signal(SIGINT)
        #expect(try held.wait() == 130)
        // The run ended: its token is void, for its own agent too.
        let replayed = try agentry(["run", "holder", "--prompt", "use \(token)"], in: repo)
        #expect(replayed.stdout.contains("401"), "\(replayed.stdout)")
        withExtendedLifetime(stub) {}
    }
}
