import AgentryYAML

/// How an agent's `spec.tools` and `spec.mcpServers` read in each harness's own configuration:
/// which file, which keys, and what a harness cannot express (a validation error naming it, never
/// a policy silently dropped). Validation and rendering both ask here, so they cannot disagree.
public enum NativeTools {
    /// The format of a configuration file, which decides how agentry's keys are put into it.
    public enum Format: String, Sendable {
        case json, toml, yaml
        /// A file of agentry's own text (`Target.text`).
        case text
    }

    /// A configuration file agentry writes keys into: the harness's own file when it declares one
    /// at `path` (agentry's keys are added; the harness may not set them itself), else a new one.
    public struct Target: Sendable {
        public var path: String
        public var format: Format
        /// Top-level keys agentry sets, in order.
        public var entries: [(key: String, value: JSON)]
        /// Whether the whole file is agentry's (the harness may not declare it at all).
        public var whole: Bool
        /// The content of a `.text` file.
        public var text: String = ""
    }

    /// What a harness of `type` needs for `tools` and `servers`: the files and keys to render.
    /// Call `problems` first; a policy a harness cannot express renders as near as it gets.
    public static func targets(_ harness: Harness, tools: ToolPolicy?, servers: [MCPServer]) -> [Target] {
        let tools = tools ?? .unrestricted
        switch harness.type {
        case .claudeCode?:
            var targets = [
                Target(
                    path: configDirectory(harness, variable: "CLAUDE_CONFIG_DIR", fallback: ".claude")
                        + "/settings.json",
                    format: .json, entries: ClaudeCode.settings(tools, servers), whole: true)
            ]
            if !servers.isEmpty {
                targets.append(
                    Target(path: ".mcp.json", format: .json, entries: ClaudeCode.mcp(servers), whole: true))
            }
            return targets
        case .codex?:
            let home = configDirectory(harness, variable: "CODEX_HOME", fallback: ".codex")
            var targets = [
                Target(
                    path: home + "/config.toml", format: .toml, entries: Codex.config(tools, servers), whole: false)
            ]
            if let rules = Codex.rules(tools) {
                targets.append(
                    Target(path: home + "/rules/agentry.rules", format: .text, entries: [], whole: true, text: rules))
            }
            return targets
        case .hermes?:
            return [
                Target(
                    path: configDirectory(harness, variable: "HERMES_HOME", fallback: ".hermes") + "/config.yaml",
                    format: .yaml, entries: Hermes.config(tools, servers), whole: false)
            ]
        case .opencode?:
            return [
                Target(path: "opencode.json", format: .json, entries: OpenCode.config(tools, servers), whole: false)
            ]
        case .openclaw?:
            return [
                Target(
                    path: configDirectory(
                        harness, variable: "OPENCLAW_CONFIG_PATH", fallback: ".openclaw/openclaw.json"),
                    format: .json, entries: OpenClaw.config(tools, servers), whole: false)
            ]
        case .shell?, .custom?, nil:
            return []
        }
    }

    /// The top-level keys agentry may set in a harness's own configuration file, by type: a
    /// harness that sets one itself is refused (the agent's `spec.tools` and `spec.mcpServers` say it).
    public static func ownedKeys(_ type: HarnessType?) -> [String] {
        switch type {
        // Codex's profiles override top-level keys; OpenCode's agents and modes carry permissions of their own.
        case .codex?:
            return ["approval_policy", "sandbox_mode", "web_search", "features", "mcp_servers", "profile", "profiles"]
        case .hermes?: return ["platform_toolsets", "approvals", "mcp_servers"]
        case .opencode?: return ["permission", "mcp", "agent", "mode"]
        case .openclaw?: return ["tools", "mcp"]
        case .claudeCode?, .shell?, .custom?, nil: return []
        }
    }

    /// A problem with an agent's tools or MCP servers on a harness type: what, and where.
    public struct Problem: Sendable, Hashable {
        public var message: String
        public var mark: SourceMark
    }

    /// What a harness of `type` cannot express of `tools` and `servers`.
    /// `bound`: the agent's own `spec.secrets`, variable → key (a Codex server's secret shares their names).
    public static func problems(
        _ tools: ToolPolicy?, _ servers: [MCPServer], type: HarnessType, bound: [String: String] = [:]
    ) -> [Problem] {
        var problems: [Problem] = []
        let tools = tools ?? .unrestricted
        func refuse(_ field: String, _ message: String) {
            problems.append(Problem(message: "spec.tools.\(field): " + message, mark: tools.marks[field] ?? .start))
        }
        switch type {
        case .shell, .custom:
            for (field, restricted) in [
                ("shell", !tools.shellAllowed || tools.shellPatterns != nil), ("edit", !tools.editAllowed),
                ("web", !tools.webAllowed),
            ] where restricted {
                refuse(
                    field,
                    "a \(type.rawValue) harness has no permission settings agentry can render; its command decides what runs"
                )
            }
            for server in servers {
                problems.append(
                    Problem(
                        message:
                            "spec.mcpServers (\(server.name)): a \(type.rawValue) harness has no MCP configuration agentry can render",
                        mark: server.mark))
            }
        case .claudeCode, .opencode:
            break
        case .codex:
            problems += Codex.problems(tools, servers, bound: bound, refuse: refuse)
        case .hermes:
            problems += Hermes.problems(tools, servers, refuse: refuse)
        case .openclaw:
            if tools.shellPatterns != nil {
                refuse(
                    "shell",
                    "openclaw cannot allow or deny commands by pattern (its exec allowlist matches only the program's path); use `allow` or `deny`"
                )
            }
        }
        return problems
    }

    /// `text` double-quoted for JSON, TOML and YAML alike: besides JSON's escapes, DEL, C1 controls,
    /// line and paragraph separators and non-characters as `\\uXXXX` (TOML and YAML refuse them raw).
    public static func quoted(_ text: String) -> String {
        var output = ""
        JSON.quote(text, into: &output) { scalar in
            scalar == 0x7F || (0x80...0x9F).contains(scalar) || scalar == 0x2028 || scalar == 0x2029
                || scalar == 0xFFFE || scalar == 0xFFFF || scalar == 0xFEFF
        }
        return output
    }

    /// The variable a run sets to a secret of `server` (named by `key`, an env variable or a header).
    public static func secretVariable(_ server: MCPServer, key: String, type: HarnessType?) -> String {
        // Codex passes variables to a local server by their own name (`env_vars`); the others
        // expand a variable of any name inside their configuration.
        if type == .codex, server.env.contains(where: { $0.name == key }) { return key }
        return server.secretVariable(key)
    }

    /// The folder (or, for OpenClaw, the file) a harness keeps its configuration in, relative to
    /// the home: where the harness's `variable` points under `{{agent.home}}`, else `fallback`.
    public static func configDirectory(_ harness: Harness, variable: String, fallback: String) -> String {
        homeRelative(harness.env[variable] ?? harness.modelEnv[variable]) ?? fallback
    }

    /// `{{agent.home}}/x/y` → `x/y`; nil for anything else.
    static func homeRelative(_ template: String?) -> String? {
        guard let template else { return nil }
        let compact = String(template.filter { $0 != " " })
        guard compact.hasPrefix("{{agent.home}}/") else { return nil }
        let rest = String(compact.dropFirst("{{agent.home}}/".count))
        // The home itself is not a configuration folder agentry can put a file beside.
        guard let path = SourceTree.normalize(rest), !path.isEmpty, path != "." else { return nil }
        return path
    }

    /// The text a configuration has for a value: plain text, or the secret's variable as the
    /// harness expands it (`${VAR}`, `{env:VAR}`), after its prefix.
    static func text(
        _ value: MCPValue, server: MCPServer, key: String, type: HarnessType, reference: (String) -> String
    ) -> String {
        switch value {
        case .text(let text): return text
        case .secret(_, let prefix): return prefix + reference(secretVariable(server, key: key, type: type))
        }
    }
}

extension NativeTools {
    /// Plain values and secrets (as `reference` of the variable that carries them), by name.
    static func values(
        _ values: [(name: String, value: MCPValue)], of server: MCPServer, type: HarnessType,
        reference: (String) -> String
    ) -> JSON {
        .object(
            values.map { name, value in
                (name, .string(text(value, server: server, key: name, type: type, reference: reference)))
            })
    }

    /// A server as most harnesses write it: `command`, `args`, `env` or `url`, `headers`, after the
    /// harness's own `local` or `remote` fields.
    static func entry(
        _ server: MCPServer, type: HarnessType, local: [(String, JSON)] = [], remote: [(String, JSON)] = [],
        reference: (String) -> String
    ) -> (String, JSON) {
        var fields: [(String, JSON)]
        if let url = server.url {
            fields = remote + [("url", .string(url))]
            if !server.headers.isEmpty {
                fields.append(("headers", values(server.headers, of: server, type: type, reference: reference)))
            }
        } else {
            fields =
                local + [("command", .string(server.command ?? "")), ("args", .array(server.args.map(JSON.string)))]
            if !server.env.isEmpty {
                fields.append(("env", values(server.env, of: server, type: type, reference: reference)))
            }
        }
        return (server.name, .object(fields))
    }
}

// MARK: - Per harness

extension NativeTools {
    enum ClaudeCode {
        static func settings(_ tools: ToolPolicy, _ servers: [MCPServer]) -> [(key: String, value: JSON)] {
            var allow: [String] = ["Read", "Glob", "Grep", "LS", "TodoWrite", "Task"]
            var deny: [String] = []
            switch tools.shell {
            case .access(.deny)?: deny.append("Bash")
            case .patterns(let allowed, let denied)?:
                allow += allowed.isEmpty ? ["Bash"] : allowed.map { "Bash(\($0))" }
                deny += denied.map { "Bash(\($0))" }
            default: allow.append("Bash")
            }
            // A bare `Edit` rule does not cover Write; both, and notebooks, are named.
            let edit = ["Edit", "Write", "NotebookEdit"]
            if tools.editAllowed { allow += edit } else { deny += edit }
            let web = ["WebFetch", "WebSearch"]
            if tools.webAllowed { allow += web } else { deny += web }
            allow += servers.map { "mcp__\($0.name)" }
            var permissions: [(String, JSON)] = [("allow", .array(allow.map(JSON.string)))]
            if !deny.isEmpty { permissions.append(("deny", .array(deny.map(JSON.string)))) }
            // Nothing waits for an answer headless: what is not allowed is refused.
            permissions.append(("defaultMode", .string("dontAsk")))
            return [("permissions", .object(permissions))]
        }

        static func mcp(_ servers: [MCPServer]) -> [(key: String, value: JSON)] {
            let entries = servers.map { server in
                NativeTools.entry(
                    server, type: .claudeCode, local: [("type", .string("stdio"))], remote: [("type", .string("http"))]
                ) { "${\($0)}" }
            }
            return [("mcpServers", .object(entries))]
        }
    }

    enum OpenCode {
        static func config(_ tools: ToolPolicy, _ servers: [MCPServer]) -> [(key: String, value: JSON)] {
            // The last matching rule wins, and anything unmatched would be `ask`, which a headless
            // run refuses: every key is explicit.
            let shell: JSON
            switch tools.shell {
            case .access(let access)?: shell = .string(access.rawValue)
            case .patterns(let allowed, let denied)?:
                var rules: [(String, JSON)] = [("*", .string(allowed.isEmpty ? "allow" : "deny"))]
                rules += allowed.map { ($0, .string("allow")) }
                rules += denied.map { ($0, .string("deny")) }
                shell = .object(rules)
            case nil: shell = .string("allow")
            }
            let edit = JSON.string(tools.editAllowed ? "allow" : "deny")
            let web = JSON.string(tools.webAllowed ? "allow" : "deny")
            var permission: [(String, JSON)] = [
                ("*", .string("allow")), ("bash", shell), ("edit", edit), ("webfetch", web), ("websearch", web),
            ]
            permission.append(("external_directory", .string("allow")))
            var entries: [(key: String, value: JSON)] = [("permission", .object(permission))]
            if !servers.isEmpty {
                let mcp: [(String, JSON)] = servers.map { server in
                    let reference = { (variable: String) in "{env:\(variable)}" }
                    if let url = server.url {
                        var fields: [(String, JSON)] = [("type", .string("remote")), ("url", .string(url))]
                        if !server.headers.isEmpty {
                            fields.append(
                                ("headers", values(server.headers, of: server, type: .opencode, reference: reference)))
                        }
                        fields += [("oauth", .bool(false)), ("enabled", .bool(true))]
                        return (server.name, .object(fields))
                    }
                    var fields: [(String, JSON)] = [
                        ("type", .string("local")),
                        ("command", .array(([server.command ?? ""] + server.args).map(JSON.string))),
                    ]
                    if !server.env.isEmpty {
                        fields.append(
                            ("environment", values(server.env, of: server, type: .opencode, reference: reference)))
                    }
                    fields.append(("enabled", .bool(true)))
                    return (server.name, .object(fields))
                }
                entries.append(("mcp", .object(mcp)))
            }
            return entries
        }
    }

    enum OpenClaw {
        static func config(_ tools: ToolPolicy, _ servers: [MCPServer]) -> [(key: String, value: JSON)] {
            var deny: [String] = []
            if !tools.shellAllowed { deny.append("group:runtime") }
            if !tools.editAllowed { deny += ["write", "edit", "apply_patch"] }
            if !tools.webAllowed { deny += ["group:web", "browser"] }
            var toolFields: [(String, JSON)] = [("profile", .string("full"))]
            if !deny.isEmpty { toolFields.append(("deny", .array(deny.map(JSON.string)))) }
            var entries: [(key: String, value: JSON)] = [("tools", .object(toolFields))]
            if !servers.isEmpty {
                let list = servers.map { server in
                    NativeTools.entry(server, type: .openclaw, remote: [("transport", .string("streamable-http"))]) {
                        "${\($0)}"
                    }
                }
                entries.append(("mcp", .object([("servers", .object(list))])))
            }
            return entries
        }
    }
}

extension NativeTools {
    enum Codex {
        /// Codex's exec policy matches a command's leading words: a pattern `git push *` is the
        /// prefix `git push`.
        static func prefix(_ pattern: String) -> [String]? {
            var words = pattern.split(separator: " ").map(String.init)
            guard words.last == "*" else { return nil }
            words.removeLast()
            guard !words.isEmpty, !words.contains(where: { $0.contains("*") }) else { return nil }
            return words
        }

        static func problems(
            _ tools: ToolPolicy, _ servers: [MCPServer], bound: [String: String], refuse: (String, String) -> Void
        ) -> [Problem] {
            if let (allowed, denied) = tools.shellPatterns {
                if !allowed.isEmpty {
                    refuse(
                        "shell",
                        "codex cannot run only some commands (its exec policy can forbid commands, not allow just a few); use `deny` patterns, or `shell: deny`"
                    )
                }
                for pattern in denied where prefix(pattern) == nil {
                    refuse(
                        "shell",
                        "codex forbids commands by their leading words only: write \"\(pattern)\" as words followed by ` *` (`git push *`)"
                    )
                }
            }
            var problems: [Problem] = []
            var variables = bound
            for server in servers {
                for (key, value) in server.env {
                    guard case .secret(let ref, let prefix) = value else { continue }
                    if ["PATH", "HOME", "CODEX_HOME", "SHELL"].contains(key) || key.hasPrefix("LD_")
                        || key.hasPrefix("AGENTRY_")
                    {
                        problems.append(
                            Problem(
                                message:
                                    "spec.mcpServers (\(server.name)).env.\(key): codex passes a local server's secret by the variable's own name, which would set \(key) for the whole run; the server must read its secret from another variable",
                                mark: server.mark))
                    }
                    if !prefix.isEmpty {
                        problems.append(
                            Problem(
                                message:
                                    "spec.mcpServers (\(server.name)).env.\(key): codex passes a secret to a local server as it is; it cannot add a prefix",
                                mark: server.mark))
                    }
                    if let other = variables[key], other != ref {
                        problems.append(
                            Problem(
                                message:
                                    "spec.mcpServers (\(server.name)).env.\(key): codex passes secrets to local servers by the variable's own name, and \(key) already carries the secret \(variables[key] ?? "")",
                                mark: server.mark))
                    }
                    variables[key] = ref
                }
                for (name, value) in server.headers {
                    guard case .secret(_, let prefix) = value else { continue }
                    let bearer = name.lowercased() == "authorization" && prefix == "Bearer "
                    if !bearer && !prefix.isEmpty {
                        problems.append(
                            Problem(
                                message:
                                    "spec.mcpServers (\(server.name)).headers.\(name): codex sends a secret header whole, or as `Authorization: Bearer`; it cannot add the prefix \"\(prefix)\"",
                                mark: server.mark))
                    }
                }
            }
            return problems
        }

        static func config(_ tools: ToolPolicy, _ servers: [MCPServer]) -> [(key: String, value: JSON)] {
            // `codex exec` never waits for an approval; the machine is the sandbox, so Codex's own
            // is off unless editing is denied (then nothing in the home can be written).
            var entries: [(key: String, value: JSON)] = [
                ("approval_policy", .string("never")),
                ("sandbox_mode", .string(tools.editAllowed ? "danger-full-access" : "read-only")),
                ("web_search", .string(tools.webAllowed ? "live" : "disabled")),
            ]
            if !tools.shellAllowed { entries.append(("features", .object([("shell_tool", .bool(false))]))) }
            if !servers.isEmpty {
                let tables: [(String, JSON)] = servers.map { server in
                    var fields: [(String, JSON)] = []
                    if let url = server.url {
                        fields.append(("url", .string(url)))
                        var plain: [(String, JSON)] = []
                        var fromEnvironment: [(String, JSON)] = []
                        for (name, value) in server.headers {
                            switch value {
                            case .text(let text): plain.append((name, .string(text)))
                            case .secret(_, let prefix):
                                let variable = server.secretVariable(name)
                                if name.lowercased() == "authorization" && prefix == "Bearer " {
                                    fields.append(("bearer_token_env_var", .string(variable)))
                                } else {
                                    fromEnvironment.append((name, .string(variable)))
                                }
                            }
                        }
                        if !plain.isEmpty { fields.append(("http_headers", .object(plain))) }
                        if !fromEnvironment.isEmpty { fields.append(("env_http_headers", .object(fromEnvironment))) }
                    } else {
                        fields.append(("command", .string(server.command ?? "")))
                        fields.append(("args", .array(server.args.map(JSON.string))))
                        let plain: [(String, JSON)] = server.env.compactMap { name, value in
                            if case .text(let text) = value { return (name, .string(text)) }
                            return nil
                        }
                        let forwarded = server.env.filter { $0.value.secretRef != nil }.map { JSON.string($0.name) }
                        if !plain.isEmpty { fields.append(("env", .object(plain))) }
                        if !forwarded.isEmpty { fields.append(("env_vars", .array(forwarded))) }
                    }
                    return (server.name, .object(fields))
                }
                entries.append(("mcp_servers", .object(tables)))
            }
            return entries
        }

        /// The exec policy file for `deny` patterns, if any.
        static func rules(_ tools: ToolPolicy) -> String? {
            guard let (_, denied) = tools.shellPatterns, !denied.isEmpty else { return nil }
            var text = "# Rendered by agentry from the agent's spec.tools.shell.deny.\n"
            for pattern in denied {
                guard let words = prefix(pattern) else { continue }
                let list = words.map { JSON.string($0).rendered(pretty: false) }.joined(separator: ", ")
                let reason = JSON.string("denied by the agent's spec.tools: \(pattern)").rendered(pretty: false)
                text += "prefix_rule(pattern=[\(list)], decision=\"forbidden\", justification=\(reason))\n"
            }
            return text
        }
    }

    enum Hermes {
        /// What `hermes -z` loads when `platform_toolsets` does not say.
        static let defaultToolsets = [
            "browser", "clarify", "code_execution", "computer_use", "cronjob", "delegation", "file", "image_gen",
            "kanban", "memory", "session_search", "skills", "terminal", "todo", "tts", "vision", "web",
        ]

        static func problems(
            _ tools: ToolPolicy, _ servers: [MCPServer], refuse: (String, String) -> Void
        ) -> [Problem] {
            var problems: [Problem] = []
            for server in servers where (defaultToolsets + ["search", "no_mcp", "all"]).contains(server.name) {
                problems.append(
                    Problem(
                        message:
                            "spec.mcpServers (\(server.name)): hermes lists MCP servers beside its own toolsets, and \(server.name) is one of them; name the server otherwise",
                        mark: server.mark))
            }
            if let (allowed, _) = tools.shellPatterns, !allowed.isEmpty {
                refuse(
                    "shell",
                    "hermes cannot run only some commands (its approvals can deny commands, not allow just a few); use `deny` patterns, or `shell: deny`"
                )
            }
            return problems
        }

        static func config(_ tools: ToolPolicy, _ servers: [MCPServer]) -> [(key: String, value: JSON)] {
            var entries: [(key: String, value: JSON)] = []
            var dropped: Set<String> = []
            // Its Python tool runs commands too, past the approvals' deny list.
            if !tools.shellAllowed || tools.shellPatterns != nil { dropped.insert("code_execution") }
            if !tools.shellAllowed { dropped.insert("terminal") }
            // Hermes reads and writes files with one toolset: denying edits takes reading with it.
            if !tools.editAllowed { dropped.insert("file") }
            if !tools.webAllowed { dropped.formUnion(["web", "browser"]) }
            if !dropped.isEmpty {
                let kept = defaultToolsets.filter { !dropped.contains($0) } + servers.map(\.name)
                entries.append(("platform_toolsets", .object([("cli", .array(kept.map(JSON.string)))])))
            }
            if let (_, denied) = tools.shellPatterns, !denied.isEmpty {
                // Whole command lines, as globs: also after `cd x && `, and `git push *` also bare.
                let patterns = denied.flatMap { pattern -> [String] in
                    var forms = [pattern, "* " + pattern]
                    if pattern.hasSuffix(" *") {
                        let bare = String(pattern.dropLast(2))
                        forms += [bare, "* " + bare]
                    }
                    return forms
                }
                entries.append(("approvals", .object([("deny", .array(patterns.map(JSON.string)))])))
            }
            if !servers.isEmpty {
                let list = servers.map { server in NativeTools.entry(server, type: .hermes) { "${\($0)}" } }
                entries.append(("mcp_servers", .object(list)))
            }
            return entries
        }
    }
}

extension NativeTools {
    /// The configuration variable of each harness type agentry renders into.
    static func configVariable(_ type: HarnessType?) -> String? {
        switch type {
        case .claudeCode?: return "CLAUDE_CONFIG_DIR"
        case .codex?: return "CODEX_HOME"
        case .hermes?: return "HERMES_HOME"
        case .openclaw?: return "OPENCLAW_CONFIG_PATH"
        case .opencode?, .shell?, .custom?, nil: return nil
        }
    }

    /// What a harness's own definition does that would hide what agentry renders for its agents'
    /// tools and MCP servers: a file agentry writes whole, a key agentry sets, a configuration
    /// folder outside the home. Each with the field it concerns (`spec.configFiles[0]`, `spec.env.X`).
    public static func harnessProblems(_ harness: Harness) -> [(field: String, message: String)] {
        guard let type = harness.type else { return [] }
        var problems: [(field: String, message: String)] = []
        if let variable = configVariable(type) {
            for (field, map) in [("env", harness.env), ("modelEnv", harness.modelEnv)] {
                guard let value = map[variable], homeRelative(value) == nil else { continue }
                problems.append(
                    (
                        "spec.\(field).\(variable)",
                        "agentry renders \(type.rawValue)'s tool and MCP settings under the agent's home: set \(variable) to \"{{agent.home}}/<folder>\""
                    ))
            }
        }
        // Flags and variables that would override what agentry renders from the agents' tools.
        let overriding: [HarnessType: [String]] = [
            .claudeCode: [
                "--dangerously-skip-permissions", "--allowedTools", "--allowed-tools", "--disallowedTools",
                "--disallowed-tools", "--settings", "--mcp-config", "bypassPermissions",
            ],
            .codex: [
                "--dangerously-bypass-approvals-and-sandbox", "--full-auto", "-s", "--sandbox", "-c", "--config",
                "-p", "--profile", "--ignore-rules", "--enable", "--disable",
            ],
            .opencode: ["--dangerously-skip-permissions", "--auto"],
        ]
        for (field, argv) in [("command", harness.command), ("continueCommand", harness.continueCommand)] {
            for (index, word) in argv.enumerated() {
                let flag = String(word.split(separator: "=", maxSplits: 1).first ?? "")
                guard overriding[type]?.contains(flag) == true || overriding[type]?.contains(word) == true else {
                    continue
                }
                problems.append(
                    (
                        "spec.\(field)[\(index)]",
                        "\(word) would override the tools and MCP settings agentry renders for \(type.rawValue) from each agent's spec.tools and spec.mcpServers; declare them there"
                    ))
            }
        }
        for variable in ["OPENCODE_CONFIG_CONTENT", "OPENCODE_PERMISSION"] where type == .opencode {
            for (field, map) in [("env", harness.env), ("modelEnv", harness.modelEnv)] where map[variable] != nil {
                problems.append(
                    (
                        "spec.\(field).\(variable)",
                        "\(variable) would override the permissions agentry renders from each agent's spec.tools; declare them there"
                    ))
            }
        }
        let probe = MCPServer(name: "probe", command: "probe", args: [], env: [], url: nil, headers: [], mark: .start)
        let targets = targets(harness, tools: nil, servers: [probe])
        let owned = ownedKeys(type)
        for (index, file) in harness.configFiles.enumerated() {
            let path = SourceTree.normalize(file.path) ?? file.path
            guard let target = targets.first(where: { $0.path == path }) else { continue }
            let field = "spec.configFiles[\(index)]"
            if target.whole {
                problems.append(
                    (
                        field,
                        "\(path) is written by agentry for \(type.rawValue) harnesses, from each agent's spec.tools and spec.mcpServers; remove it from configFiles"
                    ))
                continue
            }
            guard let keys = topLevelKeys(file.content, format: target.format) else {
                problems.append(
                    (
                        field,
                        "agentry adds the agent's tool and MCP settings to \(path), so it must be a plain \(target.format == .json ? "JSON object" : target.format.rawValue.uppercased() + " mapping") (with {{placeholders}} inside strings)"
                    ))
                continue
            }
            for key in keys where owned.contains(key) {
                problems.append(
                    (
                        field,
                        "\(path) sets \(key), which agentry renders from each agent's spec.tools and spec.mcpServers; remove it here and declare it on the agents"
                    ))
            }
        }
        return problems
    }

    /// The top-level keys of a configuration file's text (its placeholders stood in for); nil when
    /// the text is not a mapping of its format.
    static func topLevelKeys(_ content: String, format: Format) -> [String]? {
        let text = Template.standIn(content)
        switch format {
        case .json, .yaml:
            // agentry adds its keys to the text: JSON must be strict (no comments, no trailing
            // commas, nothing after the object), YAML a block mapping in one document.
            if format == .json, !StrictJSON.isObject(Template.standIn(content, with: "0")) { return nil }
            if format == .yaml {
                let lines = text.split(separator: "\n").map { TOMLText.trim($0) }
                let first = lines.first { !$0.isEmpty && !$0.hasPrefix("#") && $0 != "---" }
                if first?.hasPrefix("{") == true || first?.hasPrefix("[") == true || lines.contains("...")
                    || lines.dropFirst().contains("---") || lines.contains(where: { $0.hasPrefix("<<") })
                {
                    return nil
                }
            }
            guard case .success(let documents) = YAMLComposer.compose(text), documents.count <= 1 else { return nil }
            guard let root = documents.first?.root else { return [] }
            guard let pairs = root.pairs else { return nil }
            return pairs.compactMap(\.key.scalarText)
        case .toml:
            return TOMLText.topLevelKeys(text)
        case .text:
            return []
        }
    }
}

/// Just enough TOML for agentry to add keys to a harness's file: which top-level keys and tables
/// it has, and where its first table starts.
public enum TOMLText {
    static func trim(_ text: Substring, _ characters: Set<Character> = [" ", "\t", "\r"]) -> Substring {
        var text = text
        while let first = text.first, characters.contains(first) { text.removeFirst() }
        while let last = text.last, characters.contains(last) { text.removeLast() }
        return text
    }

    static func key(_ text: Substring) -> String {
        let trimmed = trim(text)
        let first = trimmed.split(separator: ".", maxSplits: 1).first ?? trimmed
        return String(trim(first, [" ", "\t", "\"", "'"]))
    }

    static func topLevelKeys(_ text: String) -> [String] {
        var keys: [String] = []
        var inTable = false
        var inString: String? = nil
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = trim(line)
            // Inside a multi-line string nothing is a key or a table.
            if let delimiter = inString {
                if trimmed.contains(delimiter) { inString = nil }
                continue
            }
            for delimiter in ["\"\"\"", "'''"] where trimmed.ranges(of: delimiter).count % 2 == 1 {
                inString = delimiter
            }
            if trimmed.hasPrefix("[") {
                inTable = true
                keys.append(key(trim(trimmed, ["[", "]", " ", "\t"])))
            } else if !inTable, !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") {
                keys.append(key(trimmed[..<equals]))
            }
        }
        return keys
    }

    /// The offset (in lines) of the first table header, or the line count when there is none.
    public static func firstTableLine(_ lines: [Substring]) -> Int {
        lines.firstIndex { trim($0).hasPrefix("[") } ?? lines.count
    }

    /// A JSON value as a TOML value (inline tables for objects).
    public static func value(_ json: JSON) -> String {
        switch json {
        case .null: return "\"\""
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .string(let text): return NativeTools.quoted(text)
        case .array(let items): return "[" + items.map(value).joined(separator: ", ") + "]"
        case .object(let pairs):
            return "{ " + pairs.map { keyText($0.0) + " = " + value($0.1) }.joined(separator: ", ") + " }"
        }
    }

    public static func keyText(_ key: String) -> String {
        let bare =
            !key.isEmpty
            && key.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
                    || $0 == "-"
            }
        return bare ? key : NativeTools.quoted(key)
    }
}

/// A strict JSON check (RFC 8259, no comments, no trailing commas): is the text one object?
enum StrictJSON {
    static func isObject(_ text: String) -> Bool {
        var parser = Parser(bytes: Array(text.utf8))
        parser.skipSpace()
        guard parser.peek == UInt8(ascii: "{"), parser.value(depth: 0) else { return false }
        parser.skipSpace()
        return parser.index == parser.bytes.count
    }

    struct Parser {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpace() {
            while let byte = peek, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
        }

        mutating func take(_ byte: Character) -> Bool {
            skipSpace()
            guard peek == byte.asciiValue else { return false }
            index += 1
            return true
        }

        mutating func literal(_ word: String) -> Bool {
            let word = Array(word.utf8)
            guard index + word.count <= bytes.count, Array(bytes[index..<index + word.count]) == word else {
                return false
            }
            index += word.count
            return true
        }

        mutating func string() -> Bool {
            guard peek == UInt8(ascii: "\"") else { return false }
            index += 1
            while let byte = peek {
                index += 1
                if byte == UInt8(ascii: "\"") { return true }
                if byte < 0x20 { return false }
                if byte == UInt8(ascii: "\\") {
                    guard let escaped = peek else { return false }
                    index += 1
                    if escaped == UInt8(ascii: "u") {
                        guard index + 4 <= bytes.count,
                            bytes[index..<index + 4].allSatisfy({
                                (0x30...0x39).contains($0) || (0x41...0x46).contains($0) || (0x61...0x66).contains($0)
                            })
                        else { return false }
                        index += 4
                    } else if !"\"\\/bfnrt".utf8.contains(escaped) {
                        return false
                    }
                }
            }
            return false
        }

        mutating func number() -> Bool {
            let start = index
            if peek == UInt8(ascii: "-") { index += 1 }
            var digits = 0
            while let byte = peek, (0x30...0x39).contains(byte) || ".eE+-".utf8.contains(byte) {
                index += 1
                digits += 1
            }
            return digits > 0 && index > start
        }

        mutating func value(depth: Int) -> Bool {
            guard depth < 64 else { return false }
            skipSpace()
            switch peek {
            case UInt8(ascii: "{"):
                index += 1
                if take("}") { return true }
                repeat {
                    skipSpace()
                    guard string(), take(":"), value(depth: depth + 1) else { return false }
                } while take(",")
                return take("}")
            case UInt8(ascii: "["):
                index += 1
                if take("]") { return true }
                repeat {
                    guard value(depth: depth + 1) else { return false }
                } while take(",")
                return take("]")
            case UInt8(ascii: "\""): return string()
            case UInt8(ascii: "t"): return literal("true")
            case UInt8(ascii: "f"): return literal("false")
            case UInt8(ascii: "n"): return literal("null")
            default: return number()
            }
        }
    }
}
