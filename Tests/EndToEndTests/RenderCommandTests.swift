import Foundation
import TestSupport
import Testing

/// `agentry render` on the bundled harness files: one declaration of tools and MCP servers becomes
/// each harness's own settings, read back with real parsers (JSON, TOML, YAML) as the harness would.
@Suite struct RenderCommandTests {
    /// What a rendered file parses to, as JSON, through Python's own readers.
    func parsed(_ text: String, as format: String) throws -> [String: Any] {
        let reader: String
        switch format {
        case "toml": reader = "import sys, json, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))"
        case "yaml": reader = "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
        default: reader = "import sys, json; print(json.dumps(json.load(sys.stdin)))"
        }
        let result = try Shell.run("python3", ["-c", reader], input: text)
        #expect(result.status == 0, "\(format): \(result.stderr)\n\(text)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    func hermesServers(_ config: [String: Any]) -> [String: [String: Any]] {
        config["mcp_servers"] as? [String: [String: Any]] ?? [:]
    }

    @Test func oneDeclarationBecomesEachHarnesssOwnSettings() throws {
        let repo = try TemporaryDirectory("agentry-render")
        let examples = Agentry.packageRoot.appendingPathComponent("examples/quickstart")
        for type in ["claude-code", "codex", "hermes", "opencode", "openclaw"] {
            try repo.write(
                "harnesses/\(type).yaml",
                try String(contentsOf: examples.appendingPathComponent("harnesses/\(type).yaml"), encoding: .utf8))
        }
        try repo.write(
            "environments/box.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: box}\nspec: {base: debian-12}\n")
        for (name, api) in [("messages", "messages"), ("responses", "responses"), ("chat", "chat-completions")] {
            try repo.write(
                "models/\(name).yaml",
                "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: \(name)}\nspec: {provider: p, name: \(name)-model, api: \(api), baseUrl: 'https://models.example.com/v1'}\n"
            )
        }
        let servers = """
              mcpServers:
                - name: github
                  command: github-mcp
                  args: [stdio]
                  env: {GITHUB_TOKEN: {ref: github/token}, LOG_LEVEL: info, ODD: "del\\x7f sep\\u2028 end"}
                - name: docs
                  url: https://docs.example.com/mcp
                  headers: {Authorization: {ref: docs/token, prefix: "Bearer "}, X-Team: platform}
            """
        let patterns = "  tools: {shell: {deny: [\"git push *\"]}, web: deny}\n"
        for (agent, harness, model, tools) in [
            ("on-claude", "claude-code", "messages", patterns), ("on-codex", "codex", "responses", patterns),
            ("on-hermes", "hermes", "chat", patterns), ("on-opencode", "opencode", "chat", patterns),
            ("on-openclaw", "openclaw", "chat", "  tools: {web: deny, edit: deny}\n"),
        ] {
            try repo.write(
                "agents/\(agent).yaml",
                "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: \(agent), owner: t}\nspec:\n  harness: \(harness)\n  model: \(model)\n  environment: box\n  instructions: Be brief.\n"
                    + tools + servers + "\n")
        }
        try repo.commitAll("five harnesses, one declaration")
        func render(_ arguments: [String]) throws -> String {
            let result = try Agentry.run(["render"] + arguments, in: repo.url)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            return result.stdout
        }

        // Claude Code: its user settings (a project's allow rules wait for a trust dialog) and .mcp.json.
        let settings = try parsed(try render(["on-claude", "--file", ".claude-home/settings.json"]), as: "json")
        let permissions = try #require(settings["permissions"] as? [String: Any])
        let deny = permissions["deny"] as? [String] ?? []
        let allow = permissions["allow"] as? [String] ?? []
        #expect(deny.contains("Bash(git push *)") && deny.contains("WebFetch") && deny.contains("WebSearch"), "\(deny)")
        #expect(allow.contains("Bash") && allow.contains("Write") && allow.contains("mcp__github"), "\(allow)")
        #expect(permissions["defaultMode"] as? String == "dontAsk")
        let claudeMCP = try parsed(try render(["on-claude", "--file", ".mcp.json"]), as: "json")
        let claudeServers = try #require(claudeMCP["mcpServers"] as? [String: [String: Any]])
        #expect(claudeServers["github"]?["args"] as? [String] == ["stdio"])
        #expect(
            (claudeServers["github"]?["env"] as? [String: String])?["GITHUB_TOKEN"]
                == "${AGENTRY_MCP_GITHUB__GITHUB_TOKEN}")
        #expect(
            (claudeServers["docs"]?["headers"] as? [String: String])?["Authorization"]
                == "Bearer ${AGENTRY_MCP_DOCS__AUTHORIZATION}")

        // Codex: keys added to the harness's own config.toml (the model's stay), and an exec policy.
        let codex = try parsed(try render(["on-codex", "--file", ".codex/config.toml"]), as: "toml")
        #expect(codex["model"] as? String == "responses-model" && codex["approval_policy"] as? String == "never")
        #expect(
            codex["web_search"] as? String == "disabled" && codex["sandbox_mode"] as? String == "danger-full-access")
        let codexServers = try #require(codex["mcp_servers"] as? [String: [String: Any]])
        #expect(codexServers["github"]?["env_vars"] as? [String] == ["GITHUB_TOKEN"])
        #expect((codexServers["github"]?["env"] as? [String: String])?["LOG_LEVEL"] == "info")
        #expect((codexServers["github"]?["env"] as? [String: String])?["ODD"] == "del\u{7f} sep\u{2028} end")
        #expect(codexServers["docs"]?["bearer_token_env_var"] as? String == "AGENTRY_MCP_DOCS__AUTHORIZATION")
        #expect((codexServers["docs"]?["http_headers"] as? [String: String]) == ["X-Team": "platform"])
        let rules = try render(["on-codex", "--file", ".codex/rules/agentry.rules"])
        #expect(rules.contains(#"prefix_rule(pattern=["git", "push"], decision="forbidden""#), "\(rules)")

        // Hermes: config.yaml keeps its model, and gains toolsets, approvals and mcp_servers.
        let hermes = try parsed(try render(["on-hermes", "--file", ".hermes/config.yaml"]), as: "yaml")
        #expect((hermes["model"] as? [String: Any])?["default"] as? String == "chat-model")
        let toolsets = (hermes["platform_toolsets"] as? [String: [String]])?["cli"] ?? []
        #expect(
            toolsets.contains("terminal") && toolsets.contains("file") && toolsets.contains("github"), "\(toolsets)")
        #expect(!toolsets.contains("web") && !toolsets.contains("browser") && !toolsets.contains("code_execution"))
        let hermesDeny = (hermes["approvals"] as? [String: Any])?["deny"] as? [String] ?? []
        #expect(hermesDeny.contains("git push *") && hermesDeny.contains("git push"), "\(hermesDeny)")
        #expect(
            (hermesServers(hermes)["github"]?["env"] as? [String: String])?["ODD"] == "del\u{7f} sep\u{2028} end",
            "TOML and YAML carry every character")
        let hermesServers = try #require(hermes["mcp_servers"] as? [String: [String: Any]])
        #expect(
            (hermesServers["github"]?["env"] as? [String: String])?["GITHUB_TOKEN"]
                == "${AGENTRY_MCP_GITHUB__GITHUB_TOKEN}")

        // OpenCode: permission and mcp beside the harness's provider, in one opencode.json.
        let opencode = try parsed(try render(["on-opencode", "--file", "opencode.json"]), as: "json")
        #expect(opencode["model"] as? String == "agentry/chat-model")
        let permission = try #require(opencode["permission"] as? [String: Any])
        #expect((permission["bash"] as? [String: String]) == ["*": "allow", "git push *": "deny"], "\(permission)")
        #expect(permission["webfetch"] as? String == "deny" && permission["edit"] as? String == "allow")
        let local = try #require((opencode["mcp"] as? [String: [String: Any]])?["github"])
        #expect(local["command"] as? [String] == ["github-mcp", "stdio"] && local["type"] as? String == "local")
        #expect(
            (local["environment"] as? [String: String])?["GITHUB_TOKEN"] == "{env:AGENTRY_MCP_GITHUB__GITHUB_TOKEN}")

        // OpenClaw: tools.deny by group, mcp.servers beside its model settings.
        let openclaw = try parsed(try render(["on-openclaw", "--file", ".openclaw/openclaw.json"]), as: "json")
        let denied = (openclaw["tools"] as? [String: Any])?["deny"] as? [String] ?? []
        #expect(denied.contains("group:web") && denied.contains("write") && !denied.contains("group:runtime"))
        let remote = ((openclaw["mcp"] as? [String: Any])?["servers"] as? [String: [String: Any]])?["docs"]
        #expect(remote?["transport"] as? String == "streamable-http")
        #expect(
            (remote?["headers"] as? [String: String])?["Authorization"] == "Bearer ${AGENTRY_MCP_DOCS__AUTHORIZATION}")
        #expect(openclaw["models"] != nil, "the harness's own keys stay")

        // The whole rendering names secrets and the run's token, never a value.
        let whole = try render(["on-codex"])
        #expect(whole.contains("GITHUB_TOKEN=<secret github/token>"), "\(whole)")
        #expect(whole.contains("AGENTRY_MODEL_KEY=<run token>"), "\(whole)")
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(try render(["on-hermes", "-o", "json"]).utf8)) as? [String: Any]
        )
        #expect(json["kind"] as? String == "render")
        #expect(
            (json["files"] as? [[String: Any]])?.contains { $0["path"] as? String == ".hermes/config.yaml" } == true)

        // A file the agent does not have, and an agent the repository does not have, are named.
        let missing = try Agentry.run(["render", "on-codex", "--file", ".codex/config.tom"], in: repo.url)
        #expect(missing.status != 0 && missing.stderr.contains("did you mean .codex/config.toml?"), "\(missing.stderr)")
        let unknown = try Agentry.run(["render", "on-codx"], in: repo.url)
        #expect(unknown.status != 0 && unknown.stderr.contains("did you mean \"on-codex\"?"), "\(unknown.stderr)")
    }
}
