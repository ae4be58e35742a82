import Foundation
import TestSupport
import Testing

extension ApplyCommandTests {
    /// A shell harness in a real microVM calls its model through `{{model.baseUrl}}` with
    /// `{{model.apiKey}}`: the stub model server sees the provider's key, added on the host, while
    /// the machine only ever held the run's token; a primary model on a closed port gives way to
    /// its fallback; the usage lands in the record; a spent budget stops the calls and says so.
    @Test func aRunReachesItsModelOnlyThroughTheGateway() throws {
        defer { stopMachines() }
        let log = state.path + "/../stub-\(UUID().uuidString).jsonl"
        let stub = try BackgroundProcess(
            "python3", [Agentry.packageRoot.appendingPathComponent("Tests/Fixtures/model_stub.py").path, log])
        let port = stub.firstLine()
        let key = "sk-provider-key-\(UUID().uuidString.prefix(12))"
        #expect(
            try Shell.run(
                Agentry.binary.path, ["secret", "set", "stub/key", "--state-dir", state.path], input: key + "\n"
            ).status == 0)
        let call = """
            for i in 1 2; do wget -q -O - --header "x-api-key: $KEY" --header 'content-type: application/json' \
            --post-data "{\\"model\\": \\"$MODEL\\", \\"max_tokens\\": 5}" "$BASE/messages" || echo "call $i failed"; echo; done; \
            env | grep -v '^PROVIDER_KEY_PREFIX=' | grep -c "$PROVIDER_KEY_PREFIX" || true
            """
        let repo = try runRepository(agent: "caller", script: call)
        try repo.write(
            "harnesses/shell.yaml",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata: {name: shell}
            spec:
              type: shell
              command: ["/bin/sh", "-c", \(try String(data: JSONSerialization.data(withJSONObject: [call], options: .fragmentsAllowed), encoding: .utf8)!.dropFirst().dropLast())]
              env: {MODEL: "{{model.name}}", BASE: "{{model.baseUrl}}", KEY: "{{model.apiKey}}", PROVIDER_KEY_PREFIX: "sk-provider-key"}
              supports: {apis: [messages]}

            """)
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
