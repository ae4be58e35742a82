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

        try use("claude-code", "claude-stub")
        let claude = try agentry(["run", "swapper", "--apply"], in: repo, timeout: 1500, environment: pip)
        #expect(claude.status == 0, "\(claude.stdout)\(claude.stderr)")
        #expect(claude.stdout.contains("answer from claude-stub-model"), "\(claude.stdout)")
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

        // The environment disk went through both switches: Claude Code's session of the first run
        // is still there, beside the Codex session of the second.
        let kept = try agentry(
            [
                "exec", "swapper", "--", "sh", "-c",
                "ls /agent/.claude-home/projects/*/*.jsonl | wc -l; ls /agent/.codex/sessions/*/*/*/*.jsonl | wc -l; command -v claude || echo no-claude",
            ], in: repo)
        #expect(kept.stdout == "1\n1\nno-claude\n", "\(kept.stdout)\(kept.stderr)")
        withExtendedLifetime((stub, index)) {}
    }
}
