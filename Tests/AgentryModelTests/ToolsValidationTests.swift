import AgentryModel
import AgentryYAML
import Testing

/// `spec.tools` and `spec.mcpServers`: their shape, and what each harness type can express.
@Suite struct ToolsValidationTests {
    func harness(_ type: String, name: String? = nil, extra: String = "") -> String {
        """
        apiVersion: agentry/v1
        kind: Harness
        metadata: {name: \(name ?? type)}
        spec:
          type: \(type)
          command: ["run", "{{prompt}}"]
          supports: {apis: [chat-completions, messages, responses]}
        \(extra.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))

        """
    }

    func agent(on harness: String, _ spec: String) -> String {
        Fixture.agent(spec: spec).replacingOccurrences(of: "harness: hermes", with: "harness: \(harness)")
    }

    @Test func everyHarnessTypeTakesAnAllowOrDenyPolicyAndAServer() {
        let spec = """
            tools: {shell: deny, edit: deny, web: deny}
            mcpServers:
              - {name: github, command: github-mcp, args: [stdio], env: {GITHUB_TOKEN: {ref: github/token}}}
              - {name: docs, url: "https://docs.example.com/mcp", headers: {Authorization: {ref: docs/token, prefix: "Bearer "}}}
            """
        for type in ["claude-code", "codex", "hermes", "opencode", "openclaw"] {
            let report = validate(
                Fixture.repository([
                    "harnesses/\(type).yaml": harness(type), "agents/triage.yaml": agent(on: type, spec),
                ]))
            #expect(report.diagnostics.isEmpty, "\(type): \(report.diagnostics)")
            let decoded = report.catalog.agents.first { $0.metadata.name == "triage" }
            #expect(decoded?.tools?.shellAllowed == false && decoded?.mcpServers.count == 2, "\(type)")
        }
    }

    /// A policy a harness cannot express is an error naming the harness and pointing at the field.
    @Test func whatAHarnessCannotExpressIsAnErrorNamingIt() throws {
        let cases: [(type: String, spec: String, says: String)] = [
            ("codex", "tools: {shell: {allow: [\"git log *\"]}}", "codex cannot run only some commands"),
            ("codex", "tools: {shell: {deny: [\"git push\"]}}", "leading words only"),
            ("hermes", "tools: {shell: {allow: [\"make test\"]}}", "hermes cannot run only some commands"),
            ("openclaw", "tools: {shell: {deny: [\"rm *\"]}}", "openclaw cannot allow or deny commands by pattern"),
            ("shell", "tools: {web: deny}", "a shell harness has no permission settings"),
            ("shell", "mcpServers: [{name: x, command: y}]", "no MCP configuration"),
            (
                "codex",
                "mcpServers: [{name: x, url: \"https://x.example/mcp\", headers: {X-Key: {ref: x/key, prefix: \"Token \"}}}]",
                "cannot add the prefix"
            ),
            (
                "codex",
                "secrets: [{env: GITHUB_TOKEN, ref: github/mine}]\nmcpServers: [{name: x, command: y, env: {GITHUB_TOKEN: {ref: github/other}}}]",
                "GITHUB_TOKEN already carries the secret github/mine"
            ),
            ("hermes", "tools: {shell: deny}\nmcpServers: [{name: terminal, command: y}]", "terminal is one of them"),
            (
                "codex", "mcpServers: [{name: db, command: y, env: {CODEX_HOME: {ref: db/home}}}]",
                "set CODEX_HOME for the whole run"
            ),
        ]
        for (type, spec, says) in cases {
            let report = validate(
                Fixture.repository([
                    "harnesses/\(type).yaml": harness(type), "agents/triage.yaml": agent(on: type, spec),
                ]))
            let diagnostic = try #require(report.first(.unsupportedTool), "\(type) \(spec): \(report.diagnostics)")
            #expect(diagnostic.message.contains(says), "\(diagnostic.message)")
            #expect(diagnostic.message.contains("harness \"\(type)\""), "\(diagnostic.message)")
            #expect(diagnostic.file == "agents/triage.yaml" && diagnostic.mark.line >= 11, "\(diagnostic)")
        }
        // The same patterns are fine where the harness has them.
        for type in ["claude-code", "opencode"] {
            let report = validate(
                Fixture.repository([
                    "harnesses/\(type).yaml": harness(type),
                    "agents/triage.yaml": agent(
                        on: type, "tools: {shell: {allow: [\"git log *\"], deny: [\"git push\"]}}"),
                ]))
            #expect(report.diagnostics.isEmpty, "\(type): \(report.diagnostics)")
        }
    }

    /// A server's secret travels in a variable of its own: one that another server's secret, the
    /// agent's own secrets or env would set is refused (the server would get their value).
    @Test func secretVariablesNeverCollide() {
        let cases = [
            "secrets: [{env: AGENTRY_MCP_GH__TOKEN, ref: prod/deploy}]\nmcpServers: [{name: gh, command: y, env: {TOKEN: {ref: github/readonly}}}]",
            "env: {AGENTRY_MCP_GH__TOKEN: plain}\nmcpServers: [{name: gh, command: y, env: {TOKEN: {ref: github/readonly}}}]",
        ]
        for spec in cases {
            let report = validate(Fixture.repository(["agents/triage.yaml": Fixture.agent(spec: spec)]))
            #expect(
                report.diagnostics.contains { $0.code == .duplicateName && $0.message.contains("already sets") },
                "\(spec): \(report.diagnostics)")
        }
        // Distinct servers and keys stay apart, upper and lower case and `-` included.
        let apart = validate(
            Fixture.repository([
                "agents/triage.yaml": Fixture.agent(
                    spec:
                        "mcpServers: [{name: a-b, command: y, env: {C: {ref: k/one}}}, {name: a, command: y, env: {B_C: {ref: k/two}, b_c: {ref: k/three}}}]"
                )
            ]))
        #expect(apart.diagnostics.isEmpty, "\(apart.diagnostics)")
        // Harness-specific interpolation in plain values, and odd header names, are refused.
        let odd = validate(
            Fixture.repository([
                "agents/triage.yaml": Fixture.agent(
                    spec:
                        "mcpServers: [{name: r, url: \"https://r.example\", headers: {\"X Bad\": v, X-Tok: \"${ANTHROPIC_API_KEY}\", x-a: b, X-A: c}}]"
                )
            ]))
        let messages = odd.diagnostics.map(\.message)
        #expect(messages.contains { $0.contains("is not a header name") }, "\(messages)")
        #expect(messages.contains { $0.contains("a secret is `{ref: KEY}`") }, "\(messages)")
        #expect(messages.contains { $0.contains("are the same header") }, "\(messages)")
    }

    @Test func serversAreLocalOrRemoteAndNamedOnce() {
        let both = validate(
            Fixture.repository([
                "agents/triage.yaml": Fixture.agent(
                    spec:
                        "mcpServers: [{name: x, command: y, url: \"https://x.example\"}, {name: x, url: \"https://z.example\", env: {A: b}}, {name: z}]"
                )
            ]))
        let messages = both.diagnostics.map(\.message)
        #expect(messages.contains { $0.contains("either `command`") }, "\(messages)")
        #expect(messages.contains { $0.contains("already declared") }, "\(messages)")
        #expect(messages.contains { $0.contains("only a local server (`command`) takes env") }, "\(messages)")
        #expect(messages.contains { $0.contains("missing `command`") }, "\(messages)")
        // A secret value written in git is refused as everywhere else.
        let value = validate(
            Fixture.repository([
                "agents/triage.yaml": Fixture.agent(spec: "mcpServers: [{name: x, command: y, env: {T: {value: abc}}}]")
            ]))
        #expect(value.codes().contains("secret-value"), "\(value.diagnostics)")
    }

    /// A harness that sets, in its own file, what agentry renders from its agents is refused; so is
    /// a configuration folder agentry cannot write into.
    @Test func aHarnessMayNotSetWhatTheAgentsDecide() throws {
        let codex = harness(
            "codex",
            extra: """
                env: {CODEX_HOME: "{{agent.home}}/.codex"}
                configFiles:
                  - path: .codex/config.toml
                    content: |
                      model = "{{model.name}}"
                      sandbox_mode = "danger-full-access"
                """)
        let report = validate(Fixture.repository(["harnesses/codex.yaml": codex]))
        let conflict = try #require(report.first(.configConflict), "\(report.diagnostics)")
        #expect(conflict.message.contains("sets sandbox_mode"), "\(conflict.message)")
        #expect(conflict.file == "harnesses/codex.yaml")

        let claude = harness(
            "claude-code",
            extra: """
                env: {CLAUDE_CONFIG_DIR: /etc/claude}
                configFiles:
                  - {path: .mcp.json, content: "{}"}
                """)
        let both = validate(Fixture.repository(["harnesses/claude.yaml": claude]))
        let messages = both.diagnostics.filter { $0.code == .configConflict }.map(\.message)
        #expect(messages.contains { $0.contains(".mcp.json is written by agentry") }, "\(messages)")
        #expect(
            messages.contains { $0.contains("set CLAUDE_CONFIG_DIR to \"{{agent.home}}/<folder>\"") }, "\(messages)")
    }
}
