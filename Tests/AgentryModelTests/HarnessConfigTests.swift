import AgentryModel
import AgentryYAML
import Testing

/// What a harness's own files and command may hold, beside what agentry renders for its agents.
@Suite struct HarnessConfigTests {
    func harness(_ type: String, command: String = #"["run", "{{prompt}}"]"#, extra: String = "") -> String {
        """
        apiVersion: agentry/v1
        kind: Harness
        metadata: {name: \(type)}
        spec:
          type: \(type)
          command: \(command)
          supports: {apis: [chat-completions, messages, responses]}
        \(extra.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))

        """
    }

    func conflict(_ file: String, type: String) -> Diagnostic? {
        validate(Fixture.repository(["harnesses/\(type).yaml": file])).first(.configConflict)
    }

    /// agentry adds its keys to the harness's text: strict JSON, a block YAML mapping.
    @Test func textAgentryAddsToMustBeStrict() {
        let loose: [(type: String, path: String, content: String)] = [
            ("openclaw", ".openclaw/openclaw.json", "agents: {x: 1,} // JSON5"),
            ("opencode", "opencode.json", "{\"model\": \"{{model.name}}\",\n}"),
            ("opencode", "opencode.json", "{\"model\": \"x\"}\n# a comment"),
            ("hermes", ".hermes/config.yaml", "{model: {default: x}}"),
            ("hermes", ".hermes/config.yaml", "model: {default: x}\n...\nmore: 1"),
        ]
        for (type, path, content) in loose {
            let block = content.split(separator: "\n").map { "      " + $0 }.joined(separator: "\n")
            let file = harness(type, extra: "configFiles:\n  - path: \(path)\n    content: |\n\(block)")
            #expect(conflict(file, type: type)?.message.contains("must be a plain") == true, "\(content)")
        }
        let strict = harness(
            "opencode",
            extra: """
                configFiles:
                  - path: opencode.json
                    content: |
                      {"n": {{model.contextWindow}}, "a": [1.5e3, true, null, "\\u00e9"], "o": {}}
                """)
        #expect(conflict(strict, type: "opencode") == nil)
    }

    /// Keys that outrank agentry's (Codex profiles, OpenCode agents), flags that bypass it, and a
    /// configuration folder that is the home itself are refused.
    @Test func whatWouldOverrideTheAgentsPolicyIsRefused() throws {
        let profiles = harness(
            "codex",
            extra: """
                configFiles:
                  - path: .codex/config.toml
                    content: |
                      profile = "ci"
                      [profiles.ci]
                      sandbox_mode = "danger-full-access"
                """)
        #expect(conflict(profiles, type: "codex")?.message.contains("sets profile") == true)
        let agents = harness(
            "opencode",
            extra: """
                configFiles:
                  - path: opencode.json
                    content: |
                      {"agent": {"build": {"permission": {"bash": "allow"}}}}
                """)
        #expect(conflict(agents, type: "opencode")?.message.contains("sets agent") == true)
        let bypass = harness(
            "claude-code", command: #"["claude", "-p", "{{prompt}}", "--dangerously-skip-permissions"]"#)
        let flagged = try #require(conflict(bypass, type: "claude-code"))
        #expect(flagged.message.contains("--dangerously-skip-permissions would override"), "\(flagged.message)")
        let override = harness(
            "codex", command: #"["codex", "exec", "-c", "sandbox_mode=\"danger-full-access\"", "{{prompt}}"]"#)
        #expect(conflict(override, type: "codex") != nil)
        #expect(conflict(harness("codex", extra: #"env: {CODEX_HOME: "{{agent.home}}/."}"#), type: "codex") != nil)
        // A multi-line string does not hide a key after it.
        let multiline = harness(
            "codex",
            extra: """
                configFiles:
                  - path: .codex/config.toml
                    content: |
                      notes = \"\"\"
                      [not a table]
                      \"\"\"
                      sandbox_mode = "workspace-write"
                """)
        #expect(conflict(multiline, type: "codex")?.message.contains("sets sandbox_mode") == true)
    }
}
