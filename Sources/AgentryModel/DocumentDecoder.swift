import AgentryYAML

/// One decoded resource document.
enum DecodedResource: Sendable {
    case agent(Agent)
    case harness(Harness)
    case model(Model)
    case environment(Environment)
}

/// Turns the bytes of one file into resources and diagnostics. Everything here is per file, so
/// files decode in parallel.
enum DocumentDecoder {
    /// The names a harness template may use.
    static let templateVariables = [
        "prompt", "agent.name", "agent.home", "agent.instructionsFile", "agent.skillsDir", "agent.outputDir",
        "agent.memoryDir", "model.name", "model.provider", "model.api", "model.baseUrl", "model.apiKey",
        "model.contextWindow", "model.maxOutputTokens", "harness.version", "run.id", "run.timeoutSeconds",
    ]

    static func decodeResourceFile(path: String, display: String, entry: SourceTree.Entry) -> FileResult {
        var result = FileResult()
        guard let bytes = readableText(display: display, entry: entry, into: &result.diagnostics) else {
            return result
        }
        let composed = bytes.withUnsafeBufferPointer { YAMLComposer.compose($0) }
        switch composed {
        case .failure(let error):
            result.diagnostics.append(syntaxDiagnostic(error, display: display, bytes: bytes))
        case .success(let documents):
            // An empty document (`---` with nothing after) composes to a null scalar: skip it.
            let roots = documents.compactMap(\.root).filter { $0.resolved != .null }
            if roots.isEmpty {
                result.diagnostics.append(
                    Diagnostic(.warning, .emptyFile, file: display, at: .start, "the file holds no YAML documents"))
            }
            for root in roots {
                decodeDocument(root, display: display, into: &result)
            }
        }
        return result
    }

    /// The file's bytes if it can be read as UTF-8 text; otherwise reports why not.
    static func readableText(display: String, entry: SourceTree.Entry, into diagnostics: inout [Diagnostic])
        -> [UInt8]?
    {
        guard case .file(let size, let content, _) = entry else { return nil }
        guard let content else {
            diagnostics.append(
                Diagnostic(
                    .error, .fileTooLarge, file: display, at: .start,
                    "the file is \(size) bytes, over the \(SourceTree.maxFileSize)-byte limit for agentry files; it was not read"
                ))
            return nil
        }
        if let offset = TextScan.firstInvalidUTF8(content) {
            diagnostics.append(
                Diagnostic(
                    .error, .notUTF8, file: display, at: TextScan.mark(ofByte: offset, in: content),
                    "the file is not UTF-8 text (invalid byte 0x\(String(content[offset], radix: 16, uppercase: true)))"
                ))
            return nil
        }
        return content
    }

    static func syntaxDiagnostic(_ error: YAMLError, display: String, bytes: [UInt8]) -> Diagnostic {
        switch error.kind {
        case .limit:
            return Diagnostic(.error, .yamlLimit, file: display, at: error.mark, error.message)
        case .duplicateKey:
            return Diagnostic(.error, .duplicateKey, file: display, at: error.mark, error.message)
        case .syntax, .undefinedAlias:
            if let tabLine = TextScan.tabIndentedLine(near: error.mark.line, in: bytes) {
                return Diagnostic(
                    .error, .tabIndent, file: display, at: SourceMark(line: tabLine, column: 1),
                    "line \(tabLine) is indented with a tab; YAML indentation must use spaces")
            }
            return Diagnostic(.error, .yamlSyntax, file: display, at: error.mark, "invalid YAML: \(error.message)")
        }
    }

    static func decodeDocument(_ root: YAMLNode, display: String, into result: inout FileResult) {
        var checker = ShapeChecker(file: display)
        defer { result.diagnostics += checker.diagnostics }
        guard root.pairs != nil else {
            checker.report(
                .notAMapping, root.mark,
                "expected a resource (a mapping with apiVersion, kind, metadata and spec), got \(ShapeChecker.describe(root))"
            )
            return
        }
        scanForCredentials(root, path: "", checker: &checker)
        let kindNode = root["kind"]
        guard let kindNode else {
            checker.report(
                .missingField, root.mark,
                "document: missing required field \"kind\" (one of \(Kind.allCases.map(\.rawValue).joined(separator: ", ")))"
            )
            if root["apiVersion"] == nil {
                checker.report(.missingField, root.mark, "document: missing required field \"apiVersion\" (agentry/v1)")
            }
            return
        }
        guard let kindText = kindNode.stringValue, let kind = Kind(rawValue: kindText) else {
            let text = kindNode.scalarText ?? ""
            checker.report(
                .unknownKind, kindNode.mark,
                "kind: expected one of \(Kind.allCases.map(\.rawValue).joined(separator: ", ")), got \(ShapeChecker.describe(kindNode))"
                    + Suggest.hint(text, Kind.allCases.map(\.rawValue)))
            if let apiVersion = root["apiVersion"] {
                checker.check(
                    apiVersion, .string(.constant(Kind.apiVersion)), path: "apiVersion",
                    invalidCode: .unsupportedAPIVersion)
            }
            return
        }
        checker.check(root, .object(kind.shape), path: "")
        // Where the resource is defined: its `metadata.name` (a duplicate is reported there).
        let origin = Origin(file: display, mark: root["metadata"]?["name"]?.mark ?? root.mark)
        switch kind {
        case .agent:
            let agent = Extract.agent(root, origin: origin)
            checkSecretBindings(agent, checker: &checker)
            checkTools(root["spec"], agent, checker: &checker)
            if let schedule = root["spec"]?["run", "schedule"], root["spec"]?["run", "prompt"] == nil {
                checker.report(
                    .missingField, schedule.mark,
                    "spec.run.schedule: a scheduled run takes spec.run.prompt, and this agent has none (its harness would get an empty prompt)",
                    severity: .warning)
            }
            result.decoded.append(.agent(agent))
            result.agents.append(AgentSummary(agent))
        case .harness:
            checkTemplates(root["spec"], checker: &checker)
            let harness = Extract.harness(root, origin: origin)
            for (field, message) in NativeTools.harnessProblems(harness) {
                var node = root["spec"]
                for part in field.split(separator: ".").dropFirst() {
                    if let open = part.firstIndex(of: "["), let index = Int(part[part.index(after: open)...].dropLast())
                    {
                        node = node?[String(part[..<open])]?.sequence.flatMap { index < $0.count ? $0[index] : nil }
                    } else {
                        node = node?[String(part)]
                    }
                }
                checker.report(.configConflict, (node ?? root).mark, "\(field): \(message)")
            }
            result.decoded.append(.harness(harness))
            result.resources.append(
                ResourceSummary(
                    kind: .harness, name: harness.metadata.name, origin: origin,
                    digest: Canonical.digest(harness.fields), apis: harness.apis, harnessType: harness.type))
        case .model:
            let model = Extract.model(root, origin: origin)
            result.decoded.append(.model(model))
            result.resources.append(
                ResourceSummary(
                    kind: .model, name: model.metadata.name, origin: origin, digest: Canonical.digest(model.fields),
                    api: model.api))
        case .environment:
            let environment = Extract.environment(root, origin: origin)
            result.decoded.append(.environment(environment))
            result.resources.append(
                ResourceSummary(
                    kind: .environment, name: environment.metadata.name, origin: origin,
                    digest: Canonical.digest(environment.fields)))
        }
    }

    /// One environment variable, one secret.
    static func checkSecretBindings(_ agent: Agent, checker: inout ShapeChecker) {
        var bound: [String: SourceMark] = [:]
        for secret in agent.secrets {
            if let first = bound[secret.env] {
                checker.report(
                    .duplicateName, secret.mark,
                    "spec.secrets: \(secret.env) is bound twice (first at line \(first.line))")
            }
            bound[secret.env] = secret.mark
        }
    }

    /// An MCP server is local (`command`) or remote (`url`), with the settings of its kind only;
    /// names are unique; a shell pattern list is not empty.
    static func checkTools(_ spec: YAMLNode?, _ agent: Agent, checker: inout ShapeChecker) {
        if let shell = spec?["tools"]?["shell"], shell.pairs != nil, shell["allow"] == nil, shell["deny"] == nil {
            checker.report(
                .missingField, shell.mark,
                "spec.tools.shell: expected `allow`, `deny`, or a mapping with `allow` and/or `deny` command patterns")
        }
        if case .patterns(let allowed, let denied)? = agent.tools?.shell,
            let bad = (allowed + denied).first(where: {
                $0.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
            }),
            let node = spec?["tools"]?["shell"]
        {
            checker.report(
                .invalidValue, node.mark,
                "spec.tools.shell: the pattern \(Canonical.quoted(bad)) holds a control character; a pattern is one command line"
            )
        }
        // The variables a run sets for the servers' secrets: each carries one secret, and none is
        // one the agent sets otherwise (the server would get that value instead).
        var variables: [String: (ref: String, what: String)] = [:]
        for secret in agent.secrets { variables[secret.env] = (secret.ref, "spec.secrets") }
        for key in agent.env.keys { variables[key] = ("", "spec.env") }
        var seen: [String: SourceMark] = [:]
        for (index, node) in (spec?["mcpServers"]?.sequence ?? []).enumerated() {
            let path = "spec.mcpServers[\(index)]"
            guard let server = agent.mcpServers.first(where: { $0.mark == node.mark }) else { continue }
            var headers: [String: String] = [:]
            for (name, _) in server.headers {
                if name.isEmpty
                    || !name.unicodeScalars.allSatisfy({
                        $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-")
                    })
                {
                    checker.report(
                        .invalidValue, node["headers"]?.mark ?? node.mark,
                        "\(path).headers: \(Canonical.quoted(name)) is not a header name (letters, digits and `-`)")
                }
                if let other = headers[name.lowercased()] {
                    checker.report(
                        .duplicateKey, node["headers"]?.mark ?? node.mark,
                        "\(path).headers: \(name) and \(other) are the same header")
                }
                headers[name.lowercased()] = name
            }
            for (name, value) in server.env + server.headers {
                switch value {
                case .text(let text):
                    if let found = ["${", "{env:", "{file:"].first(where: { text.contains($0) }) {
                        checker.report(
                            .invalidValue, node.mark,
                            "\(path) (\(server.name)).\(name): \(found)…} would be expanded by some harnesses and not others; a secret is `{ref: KEY}`"
                        )
                    }
                case .secret(let ref, _):
                    let variable = server.secretVariable(name)
                    if let other = variables[variable], other.ref != ref {
                        checker.report(
                            .duplicateName, node.mark,
                            "\(path) (\(server.name)).\(name): its secret travels in \(variable), which \(other.what) already sets; rename the server or the key"
                        )
                    }
                    variables[variable] = (ref, "spec.mcpServers (\(server.name))")
                }
            }
            if let first = seen[server.name] {
                checker.report(
                    .duplicateName, node.mark,
                    "\(path): an MCP server named \"\(server.name)\" is already declared at line \(first.line)")
            }
            seen[server.name] = node.mark
            switch (node["command"] != nil, node["url"] != nil) {
            case (true, true):
                checker.report(
                    .invalidValue, node.mark,
                    "\(path) (\(server.name)): set either `command` (a local server) or `url` (a remote one), not both")
            case (false, false):
                checker.report(
                    .missingField, node.mark,
                    "\(path) (\(server.name)): missing `command` (a local server) or `url` (a remote one)")
            case (true, false):
                if let headers = node["headers"] {
                    checker.report(
                        .invalidValue, headers.mark,
                        "\(path).headers: only a remote server (`url`) takes headers; a local one takes `env`")
                }
            case (false, true):
                for key in ["args", "env"] {
                    guard let field = node[key] else { continue }
                    checker.report(
                        .invalidValue, field.mark,
                        "\(path).\(key): only a local server (`command`) takes \(key); a remote one takes `headers`")
                }
            }
        }
    }

    /// Refuses any string value shaped like a credential, wherever it appears.
    static func scanForCredentials(_ node: YAMLNode, path: String, checker: inout ShapeChecker) {
        switch node.content {
        case .scalar(let text, _):
            if let what = CredentialScanner.match(text) {
                checker.report(
                    .credentialLike, node.mark,
                    "\(path.isEmpty ? "value" : path): this looks like \(what); secrets never belong in git: store it with `agentry secret set KEY` and reference the key"
                )
            }
        case .sequence(let items):
            for (index, item) in items.enumerated() {
                scanForCredentials(item, path: "\(path)[\(index)]", checker: &checker)
            }
        case .mapping(let pairs):
            for pair in pairs {
                scanForCredentials(
                    pair.value, path: ShapeChecker.join(path, pair.key.scalarText ?? "?"), checker: &checker)
            }
        }
    }

    /// Every `{{name}}` in a harness's command, environment and config files must be a known variable.
    static func checkTemplates(_ spec: YAMLNode?, checker: inout ShapeChecker) {
        guard let spec else { return }
        var strings: [(String, YAMLNode)] = []
        for field in ["command", "continueCommand"] {
            for (index, item) in (spec[field]?.sequence ?? []).enumerated() {
                strings.append(("spec.\(field)[\(index)]", item))
            }
        }
        for field in ["env", "modelEnv"] {
            for pair in spec[field]?.pairs ?? [] {
                strings.append(("spec.\(field).\(pair.key.scalarText ?? "?")", pair.value))
            }
        }
        for (index, item) in (spec["configFiles"]?.sequence ?? []).enumerated() {
            if let content = item["content"] { strings.append(("spec.configFiles[\(index)].content", content)) }
        }
        for (path, node) in strings {
            guard let text = node.stringValue else { continue }
            let placeholders = Template.placeholders(in: text)
            if placeholders.contains("model.apiKey"), !(path.hasPrefix("spec.env.") || path.hasPrefix("spec.modelEnv."))
            {
                checker.report(
                    .secretInFile, node.mark,
                    "\(path): {{model.apiKey}} may only be rendered into env or modelEnv, never into files or command arguments (which other processes can read)"
                )
            }
            for name in placeholders where !templateVariables.contains(name) {
                let hint = Suggest.hint(name, templateVariables)
                checker.report(
                    .unknownTemplateVariable, node.mark,
                    "\(path): unknown template variable {{\(name)}}"
                        + (hint.isEmpty ? "; known: " + templateVariables.joined(separator: ", ") : hint))
            }
        }
    }
}

/// `{{ name }}` placeholders in harness templates.
public enum Template {
    public static func placeholders(in text: String) -> [String] {
        var names: [String] = []
        var rest = Substring(text)
        while let open = rest.firstRange(of: "{{") {
            guard let close = rest[open.upperBound...].firstRange(of: "}}") else { break }
            names.append(rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: " "))
            rest = rest[close.upperBound...]
        }
        return names
    }

    /// `text` with each placeholder replaced by a plain word, so its structure can be parsed.
    public static func standIn(_ text: String, with word: String = "x") -> String {
        var output = ""
        var rest = Substring(text)
        while let open = rest.firstRange(of: "{{") {
            guard let close = rest[open.upperBound...].firstRange(of: "}}") else { break }
            output += rest[..<open.lowerBound]
            output += word
            rest = rest[close.upperBound...]
        }
        return output + rest
    }
}

extension Substring {
    func trimmingCharacters(in character: Character) -> String {
        var slice = self
        while slice.first == character { slice = slice.dropFirst() }
        while slice.last == character { slice = slice.dropLast() }
        return String(slice)
    }
}

/// Byte-level facts about text files.
enum TextScan {
    /// The offset of the first byte that breaks UTF-8, or nil for valid text.
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        // Fast path: all ASCII.
        if !bytes.contains(where: { $0 >= 0x80 }) { return nil }
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            let length: Int
            var minimum: UInt32 = 0
            if byte < 0x80 {
                index += 1
                continue
            } else if byte & 0xE0 == 0xC0 {
                length = 2
                minimum = 0x80
            } else if byte & 0xF0 == 0xE0 {
                length = 3
                minimum = 0x800
            } else if byte & 0xF8 == 0xF0 {
                length = 4
                minimum = 0x10000
            } else {
                return index
            }
            guard index + length <= count else { return index }
            var scalar = UInt32(byte) & (0xFF >> UInt32(length + 1))
            for offset in 1..<length {
                let next = bytes[index + offset]
                guard next & 0xC0 == 0x80 else { return index }
                scalar = scalar << 6 | UInt32(next & 0x3F)
            }
            if scalar < minimum || scalar > 0x10FFFF || (0xD800...0xDFFF).contains(scalar) { return index }
            index += length
        }
        return nil
    }

    static func mark(ofByte offset: Int, in bytes: [UInt8]) -> SourceMark {
        var line = 1
        var lineStart = 0
        for index in 0..<min(offset, bytes.count) where bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        return SourceMark(line: line, column: offset - lineStart + 1)
    }

    /// The line (at or just before `line`) whose indentation contains a tab, if any.
    static func tabIndentedLine(near line: Int, in bytes: [UInt8]) -> Int? {
        var current = 1
        var atIndent = true
        var found: Int?
        for byte in bytes {
            if current > line { break }
            if byte == UInt8(ascii: "\n") {
                current += 1
                atIndent = true
                continue
            }
            if atIndent {
                if byte == UInt8(ascii: "\t") {
                    if current >= line - 1 { found = current }
                    atIndent = false
                } else if byte != UInt8(ascii: " ") {
                    atIndent = false
                }
            }
        }
        return found
    }
}
