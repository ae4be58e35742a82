import Foundation
import TestSupport
import Testing

extension ApplyCommandTests {
    /// Where `reconciler/install-deps.sh` put the bundled harnesses' wheels.
    static var wheelhouse: String {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["AGENTRY_WHEELHOUSE"], !explicit.isEmpty { return explicit }
        let cache = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory() + "/.cache"
        return cache + "/agentry/wheels"
    }

    /// The mission's headline on a real microVM: one agent runs on Claude Code, is switched by a
    /// commit to Codex, then to Hermes: the bundled Harness files, installed from PyPI's wheels into
    /// layers on the host, each harness's real binary answering from the stub model through the
    /// gateway (which adds the real key), the record keeping the usage, and what the first run left
    /// on the environment disk still there in the third.
    @Test func oneAgentRunsOnClaudeCodeThenCodexThenHermes() throws {
        defer { stopMachines() }
        let pins = Self.wheelhouse + "/.pins"
        #expect(
            FileManager.default.fileExists(atPath: pins),
            "the harnesses' wheels are missing from \(Self.wheelhouse): run reconciler/install-deps.sh")
        let (index, pip) = try packageIndex(Self.wheelhouse)
        let (stub, log, port, key) = try modelStub()

        let repo = try repository(agents: [])
        let examples = Agentry.packageRoot.appendingPathComponent("examples/quickstart/harnesses")
        for harness in ["claude-code", "codex", "hermes"] {
            try repo.write(
                "harnesses/\(harness).yaml",
                try String(contentsOf: examples.appendingPathComponent("\(harness).yaml"), encoding: .utf8))
        }
        try repo.write(
            "environments/tiny.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: tiny}\nspec: {base: debian-12, packages: {apt: [jq]}, resources: {cpus: 1, memory: 1Gi, disk: 3Gi}, network: {egress: model-only}}\n"
        )
        // One model per API, each under its own name: the answer says which one the harness asked for.
        for (name, api, path) in [
            ("claude-stub", "messages", ""), ("codex-stub", "responses", "/v1"),
            ("hermes-stub", "chat-completions", "/v1"),
        ] {
            try repo.write(
                "models/\(name).yaml",
                "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: \(name)}\nspec: {provider: local, name: \(name)-model, api: \(api), baseUrl: 'http://127.0.0.1:\(port)\(path)', credentials: {ref: stub/key}}\n"
            )
        }
        // One declaration of tools and an MCP server, rendered into each harness's own settings:
        // the server (a few lines of Python) writes down which client started it, and what digest
        // of its secret it was given, in the agent's memory.
        let probeToken = "probe-token-\(UUID().uuidString.prefix(12))"
        let stored = try Shell.run(
            Agentry.binary.path, ["secret", "set", "probe/token", "--state-dir", state.path], input: probeToken + "\n")
        #expect(stored.status == 0, "\(stored.stderr)")
        let server = """
            import hashlib, json, os, sys
            for line in sys.stdin:
                message = json.loads(line)
                if message.get("method") == "initialize":
                    client = message["params"].get("clientInfo", {}).get("name", "?")
                    token = hashlib.sha256(os.environ.get("PROBE_TOKEN", "").encode()).hexdigest()
                    with open(os.environ["PROBE_LOG"], "a") as log:
                        log.write(json.dumps({"client": client, "token": token}) + "\\n")
                    result = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "probe", "version": "1"}}
                elif message.get("method") == "tools/list":
                    result = {"tools": []}
                elif "id" in message:
                    result = {}
                else:
                    continue
                print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
            """
        let serverLines = server.split(separator: "\n").map { "              " + $0 }.joined(separator: "\n")
        func use(_ harness: String, _ model: String) throws {
            try repo.write(
                "agents/swapper.yaml",
                """
                apiVersion: agentry/v1
                kind: Agent
                metadata: {name: swapper, owner: test}
                spec:
                  instructions: "Answer in one line."
                  harness: \(harness)
                  model: \(model)
                  environment: tiny
                  run: {prompt: "say hello", timeout: 10m}
                  tools: {web: deny}
                  mcpServers:
                    - name: probe
                      command: python3
                      args:
                        - -c
                        - |
                \(serverLines)
                      env:
                        PROBE_LOG: /agent/memory/mcp.log
                        PROBE_TOKEN: {ref: probe/token}
                  deletionPolicy: delete

                """)
            try repo.commitAll("swapper on \(harness)")
        }
        // The run's transcript in history: events valid against the published schema, the same
        // kinds whatever the harness, and the final answer in result.md.
        func expectTranscript(answer: String, usage: (Int, Int)?) throws {
            let folder = try latestRunFolder(repo)
            let events = try git(["show", "agentry/history:\(folder)/events.jsonl"], in: repo)
            let check = try Shell.run(
                "python3",
                [
                    "-c",
                    "import sys, json, jsonschema; schema = json.load(open(sys.argv[1])); [jsonschema.validate(json.loads(l), schema) for l in sys.stdin]; print('valid')",
                    Agentry.packageRoot.appendingPathComponent("schemas/transcript-event.schema.json").path,
                ], input: events)
            #expect(check.stdout == "valid\n", "\(check.stderr)\n\(events)")
            #expect(events.contains(#""type":"message","harness":"#) && events.contains(answer), "\(events)")
            if let (input, output) = usage {
                #expect(events.contains(#""inputTokens":\#(input),"outputTokens":\#(output)"#), "\(events)")
            }
            let result = try git(["show", "agentry/history:\(folder)/result.md"], in: repo)
            #expect(result.contains(answer), "\(result)")
        }
        func requests() throws -> [[String: Any]] {
            try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map {
                try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
        }

        // `run --continue` resumes the harness's previous session: the model is sent the first
        // prompt again with the new one, and the record says the run continued.
        func expectContinued(_ harness: String, path: String) throws {
            let prompt = "and once more on \(harness)"
            let again = try agentry(
                ["run", "swapper", "--continue", "--prompt", prompt], in: repo, timeout: 900, environment: pip)
            #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
            let last = try requests().last { ($0["path"] as? String)?.hasPrefix(path) == true }
            let texts = last?["userTexts"] as? [String] ?? []
            #expect(texts.contains { $0.contains("say hello") } && texts.contains { $0.contains(prompt) }, "\(texts)")
            #expect(try latestRecord(repo).contains("continued: true"))
        }

        try use("claude-code", "claude-stub")
        let claude = try agentry(["run", "swapper", "--apply"], in: repo, timeout: 1500, environment: pip)
        #expect(claude.status == 0, "\(claude.stdout)\(claude.stderr)")
        #expect(claude.stdout.contains("answer from claude-stub-model"), "\(claude.stdout)")
        // Claude Code read its rendered settings (no web tools) and .mcp.json (the probe listed; it
        // may still be starting under TCG: the log below shows each harness connected).
        let initEvent = claude.stdout.split(separator: "\n").first { $0.contains(#""subtype":"init""#) } ?? ""
        #expect(initEvent.contains(#""mcp_servers":[{"name":"probe","status":"#), "\(initEvent)")
        #expect(initEvent.contains(#""Bash""#) && !initEvent.contains(#""WebFetch""#), "\(initEvent)")
        let asked = try requests().filter { ($0["path"] as? String)?.hasPrefix("/v1/messages") == true }
        #expect(!asked.isEmpty, "the stub saw no Messages call")
        for request in asked {
            let headers = request["headers"] as? [String: String] ?? [:]
            #expect(headers["x-api-key"] == key, "the stub got the provider's key from the gateway: \(headers)")
        }
        let first = try latestRecord(repo)
        try expectValidRecord(first)
        #expect(first.contains("inputTokens: 11") && first.contains("outputTokens: 7"), "\(first)")
        #expect(!first.contains(key))
        #expect(first.contains("transcript:\n  events: \"events.jsonl\""), "\(first)")
        try expectTranscript(answer: "answer from claude-stub-model", usage: (11, 7))
        try expectContinued("claude-code", path: "/v1/messages")

        try use("codex", "codex-stub")
        let codex = try agentry(["run", "swapper", "--apply"], in: repo, timeout: 1500, environment: pip)
        #expect(codex.status == 0, "\(codex.stdout)\(codex.stderr)")
        #expect(codex.stdout.contains("answer from codex-stub-model"), "\(codex.stdout)")
        let responses = try requests().filter { ($0["path"] as? String)?.hasPrefix("/v1/responses") == true }
        #expect(!responses.isEmpty)
        for request in responses {
            let headers = request["headers"] as? [String: String] ?? [:]
            #expect(headers["authorization"] == "Bearer " + key, "\(headers)")
        }
        let second = try latestRecord(repo)
        #expect(second.contains("inputTokens: 17") && second.contains("outputTokens: 3"), "\(second)")
        try expectValidRecord(second)
        try expectTranscript(answer: "answer from codex-stub-model", usage: (17, 3))
        try expectContinued("codex", path: "/v1/responses")

        try use("hermes", "hermes-stub")
        let hermes = try agentry(["run", "swapper", "--apply"], in: repo, timeout: 1500, environment: pip)
        #expect(hermes.status == 0, "\(hermes.stdout)\(hermes.stderr)")
        #expect(hermes.stdout.contains("answer from hermes-stub-model"), "\(hermes.stdout)")
        let chats = try requests().filter { ($0["path"] as? String)?.hasPrefix("/v1/chat/completions") == true }
        #expect(!chats.isEmpty)
        for request in chats {
            let headers = request["headers"] as? [String: String] ?? [:]
            #expect(headers["authorization"] == "Bearer " + key, "\(headers)")
        }
        let third = try latestRecord(repo)
        try expectValidRecord(third)
        #expect(third.contains("inputTokens: 13") && third.contains("outputTokens: 5"), "\(third)")
        try expectTranscript(answer: "answer from hermes-stub-model", usage: nil)
        try expectContinued("hermes", path: "/v1/chat/completions")

        // The environment disk went through both switches: Claude Code's session of the first run
        // is still there, beside the Codex session of the second.
        let kept = try agentry(
            [
                "exec", "swapper", "--", "sh", "-c",
                "ls /agent/.claude-home/projects/*/*.jsonl | wc -l; ls /agent/.codex/sessions/*/*/*/*.jsonl | wc -l; command -v claude || echo no-claude",
            ], in: repo)
        let counts = kept.stdout.split(separator: "\n")
        #expect(
            counts.count == 3 && Int(counts[0]) ?? 0 >= 1 && Int(counts[1]) ?? 0 >= 1 && counts[2] == "no-claude",
            "\(kept.stdout)\(kept.stderr)")
        // Each harness started the MCP server from its own configuration, and handed it the secret.
        let probes = try agentry(["exec", "swapper", "--", "cat", "/agent/memory/mcp.log"], in: repo).stdout
        let clients = try probes.split(separator: "\n").map { line -> (String, String) in
            let entry = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
            return (entry["client"] ?? "", entry["token"] ?? "")
        }
        let digest = try Shell.run("sh", ["-c", "printf %s \"$1\" | sha256sum | cut -d' ' -f1", "-", probeToken]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(Set(clients.map(\.0)).count >= 3, "a client per harness: \(probes)")
        #expect(clients.allSatisfy { $0.1 == digest }, "every server got the secret: \(probes)")
        #expect(!probes.contains(probeToken))
        withExtendedLifetime((stub, index)) {}
    }
}
