import AgentryYAML

/// `allow` or `deny`: whether an agent may use a built-in capability of its harness.
public enum ToolAccess: String, Sendable, CaseIterable, Hashable {
    case allow, deny
}

/// What the agent may run in a shell: everything, nothing, or commands by pattern.
public enum ShellRule: Sendable, Hashable {
    case access(ToolAccess)
    /// With `allow` patterns only those commands run (and `deny` ones never); with only `deny`
    /// patterns every other command runs. A pattern is a command line where `*` matches anything.
    case patterns(allow: [String], deny: [String])
}

/// `spec.tools`: which of the harness's built-in capabilities the agent may use. An absent entry
/// is `allow`: the machine is the sandbox, so a harness's own prompts would only stall a headless run.
public struct ToolPolicy: Sendable, Hashable {
    public var shell: ShellRule?
    public var edit: ToolAccess?
    public var web: ToolAccess?
    /// Where each entry was written (`shell`, `edit`, `web`), for diagnostics.
    public var marks: [String: SourceMark]

    public init(
        shell: ShellRule? = nil, edit: ToolAccess? = nil, web: ToolAccess? = nil, marks: [String: SourceMark] = [:]
    ) {
        self.shell = shell
        self.edit = edit
        self.web = web
        self.marks = marks
    }

    public static let unrestricted = ToolPolicy()

    public var shellAllowed: Bool {
        if case .access(.deny)? = shell { return false }
        return true
    }
    public var editAllowed: Bool { edit != .deny }
    public var webAllowed: Bool { web != .deny }
    public var shellPatterns: (allow: [String], deny: [String])? {
        if case .patterns(let allow, let deny)? = shell { return (allow, deny) }
        return nil
    }
}

/// A value an MCP server gets: plain text, or a secret from the host's store (with an optional
/// prefix such as `Bearer `), projected only for a run and never written into a file.
public enum MCPValue: Sendable, Hashable {
    case text(String)
    case secret(ref: String, prefix: String)

    public var secretRef: String? {
        if case .secret(let ref, _) = self { return ref }
        return nil
    }
}

/// One entry of `spec.mcpServers`: a local server the harness starts (`command`) or a remote one (`url`).
public struct MCPServer: Sendable, Hashable {
    public var name: String
    public var command: String?
    public var args: [String]
    /// Sorted by variable name.
    public var env: [(name: String, value: MCPValue)]
    public var url: String?
    /// Sorted by header name.
    public var headers: [(name: String, value: MCPValue)]
    public var mark: SourceMark

    public var isRemote: Bool { url != nil }

    public static func == (lhs: MCPServer, rhs: MCPServer) -> Bool {
        lhs.name == rhs.name && lhs.command == rhs.command && lhs.args == rhs.args && lhs.url == rhs.url
            && lhs.env.map(\.name) == rhs.env.map(\.name) && lhs.env.map(\.value) == rhs.env.map(\.value)
            && lhs.headers.map(\.name) == rhs.headers.map(\.name)
            && lhs.headers.map(\.value) == rhs.headers.map(\.value) && lhs.mark == rhs.mark
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(command)
        hasher.combine(url)
    }

    /// The environment variable that carries a secret of this server into the run, for harnesses
    /// that expand variables in their configuration: `AGENTRY_MCP_<SERVER>__<KEY>` (the server's
    /// name upper-cased, `-` as `_`; an env key as it is, a header's name upper-cased). Validation
    /// refuses an agent whose variables would collide.
    public func secretVariable(_ key: String) -> String {
        func upper(_ text: String) -> String {
            String(text.uppercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
        }
        let isEnv = env.contains { $0.name == key }
        return "AGENTRY_MCP_" + upper(name) + "__" + (isEnv ? key : upper(key))
    }
}

extension Shapes {
    static let access = Shape.string(.oneOf(ToolAccess.allCases.map(\.rawValue)))
    static let commandPatterns = Shape.list(.string(.text(maxLength: 1024)), minItems: 1, unique: true)

    static let toolsSpec = ObjectShape(
        "Tools",
        doc:
            "The harness's built-in capabilities the agent may use, rendered into each harness's own permission settings. An absent entry is `allow` (the machine is the sandbox); a policy the harness cannot express is a validation error.",
        fields: [
            FieldShape(
                "shell",
                .choice([
                    access,
                    .object(
                        ObjectShape(
                            "ShellPatterns",
                            doc:
                                "Shell commands by pattern: a command line where `*` matches anything (`git log *`, `make test`).",
                            fields: [
                                FieldShape(
                                    "allow", commandPatterns,
                                    doc: "Only these commands run (less any `deny` match)."),
                                FieldShape(
                                    "deny", commandPatterns,
                                    doc: "These commands never run; without `allow`, all others do."),
                            ])),
                ]),
                doc: "Running commands: `allow`, `deny`, or `{allow: [patterns], deny: [patterns]}`."),
            FieldShape(
                "edit", access, doc: "Writing and editing files: `allow` or `deny` (reading is always allowed)."),
            FieldShape("web", access, doc: "Web search and fetching pages: `allow` or `deny`."),
        ])

    static let mcpSecret = ObjectShape(
        "MCPSecret", doc: "A secret from the host's store, projected only for a run; never the value itself.",
        fields: [
            FieldShape(
                "ref", .string(.secretRef), required: true,
                doc: "The key in the host's secret store (`github/token`), set with `agentry secret set`."),
            FieldShape(
                "prefix", .string(.text(maxLength: 64)),
                doc: "Text before the secret (`\"Bearer \"` for an `Authorization` header)."),
        ],
        refusedKeys: ["value": (.secretValue, secretValueMessage)])

    static let mcpValue = Shape.choice([.string(.text(minLength: 0)), .object(mcpSecret)])

    static let mcpServer = ObjectShape(
        "MCPServer",
        doc:
            "An MCP server the agent's harness connects to: a local one it starts (`command`) or a remote one (`url`), never both.",
        fields: [
            FieldShape(
                "name", .string(.dnsLabel), required: true,
                doc: "The server's name, unique per agent (its tools show as `mcp__<name>__<tool>` in Claude Code)."),
            FieldShape("command", .string(.text()), doc: "The program that serves MCP on standard input and output."),
            FieldShape("args", .list(.string(.text(minLength: 0))), doc: "Its arguments."),
            FieldShape(
                "env", .map(key: .envName, value: mcpValue),
                doc: "Its environment: text, or `{ref: KEY}` for a secret."),
            FieldShape("url", .string(.url), doc: "A remote server's Streamable HTTP endpoint."),
            FieldShape(
                "headers", .map(key: .text(maxLength: 128), value: mcpValue),
                doc: "HTTP headers for a remote server: text, or `{ref: KEY, prefix: \"Bearer \"}` for a secret."),
        ],
        refusedKeys: ["value": (.secretValue, secretValueMessage)])
}

extension Extract {
    static func mcpValue(_ node: YAMLNode) -> MCPValue? {
        if let text = node.stringValue { return .text(text) }
        guard let ref = node["ref"]?.stringValue else { return nil }
        return .secret(ref: ref, prefix: node["prefix"]?.stringValue ?? "")
    }

    static func mcpValues(_ node: YAMLNode?) -> [(name: String, value: MCPValue)] {
        var values: [(name: String, value: MCPValue)] = []
        for pair in node?.pairs ?? [] {
            if let key = pair.key.stringValue, let value = mcpValue(pair.value) { values.append((key, value)) }
        }
        return values.sorted { $0.name < $1.name }
    }

    static func tools(_ node: YAMLNode?) -> ToolPolicy? {
        guard let node, node.pairs != nil else { return nil }
        var policy = ToolPolicy()
        for key in ["shell", "edit", "web"] {
            if let entry = node[key] { policy.marks[key] = entry.mark }
        }
        if let shell = node["shell"] {
            if let access = shell.stringValue.flatMap(ToolAccess.init(rawValue:)) {
                policy.shell = .access(access)
            } else if shell.pairs != nil {
                policy.shell = .patterns(allow: shell["allow"]?.stringList ?? [], deny: shell["deny"]?.stringList ?? [])
            }
        }
        policy.edit = node["edit"]?.stringValue.flatMap(ToolAccess.init(rawValue:))
        policy.web = node["web"]?.stringValue.flatMap(ToolAccess.init(rawValue:))
        return policy
    }

    static func mcpServers(_ node: YAMLNode?) -> [MCPServer] {
        (node?.sequence ?? []).compactMap { item in
            guard let name = item["name"]?.stringValue else { return nil }
            return MCPServer(
                name: name, command: item["command"]?.stringValue, args: item["args"]?.stringList ?? [],
                env: mcpValues(item["env"]), url: item["url"]?.stringValue, headers: mcpValues(item["headers"]),
                mark: item.mark)
        }
    }
}

extension Agent {
    /// The secrets a run projects: `spec.secrets`, then those the MCP servers reference, each under
    /// the variable the harness's configuration reads it from.
    public func runSecrets(for type: HarnessType?) -> [SecretBinding] {
        var bindings = secrets
        for server in mcpServers {
            for (key, value) in server.env + server.headers {
                guard case .secret(let ref, _) = value else { continue }
                let variable = NativeTools.secretVariable(server, key: key, type: type)
                guard !bindings.contains(where: { $0.env == variable }) else { continue }
                bindings.append(SecretBinding(env: variable, ref: ref, optional: false, mark: server.mark))
            }
        }
        return bindings
    }

    var toolFields: Fields {
        var fields: Fields = []
        if let tools {
            switch tools.shell {
            case .access(let access)?: fields.append(("tools.shell", access.rawValue))
            case .patterns(let allow, let deny)?:
                if !allow.isEmpty { fields.append(("tools.shell.allow", Canonical.list(allow))) }
                if !deny.isEmpty { fields.append(("tools.shell.deny", Canonical.list(deny))) }
            case nil: break
            }
            if let edit = tools.edit { fields.append(("tools.edit", edit.rawValue)) }
            if let web = tools.web { fields.append(("tools.web", web.rawValue)) }
        }
        func value(_ value: MCPValue) -> String {
            switch value {
            case .text(let text): return text
            case .secret(let ref, let prefix):
                return (prefix.isEmpty ? "" : Canonical.quoted(prefix) + " + ") + "ref " + ref
            }
        }
        for server in mcpServers.sorted(by: { $0.name < $1.name }) {
            let prefix = "mcpServers.\(server.name)."
            if let command = server.command { fields.append((prefix + "command", command)) }
            if !server.args.isEmpty { fields.append((prefix + "args", Canonical.list(server.args))) }
            for (name, item) in server.env { fields.append((prefix + "env." + name, value(item))) }
            if let url = server.url { fields.append((prefix + "url", url)) }
            for (name, item) in server.headers { fields.append((prefix + "headers." + name, value(item))) }
        }
        return fields
    }
}
