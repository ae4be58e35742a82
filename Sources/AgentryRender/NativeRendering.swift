import AgentryModel

/// Puts what `NativeTools` says into the agent's files: keys added to the harness's own
/// configuration file (as its format wants them), or files of agentry's own.
enum NativeRendering {
    static func apply(_ bundle: AgentBundle, to files: inout [BundleFile]) {
        let targets = NativeTools.targets(
            bundle.harness, tools: bundle.agent.tools, servers: bundle.agent.mcpServers)
        for target in targets {
            if let index = files.firstIndex(where: { $0.path == target.path }), !target.whole {
                let existing = String(decoding: files[index].bytes, as: UTF8.self)
                files[index].bytes = Array(merge(existing, target).utf8)
            } else {
                files.removeAll { $0.path == target.path }
                files.append(BundleFile(path: target.path, mode: 0o600, bytes: Array(merge("", target).utf8)))
            }
        }
    }

    /// `existing` (possibly empty) with the target's keys added.
    static func merge(_ existing: String, _ target: NativeTools.Target) -> String {
        switch target.format {
        case .text:
            return target.text
        case .json:
            let object = JSON.object(target.entries.map { ($0.key, $0.value) })
            var text = existing
            while let last = text.last, last.isWhitespace { text.removeLast() }
            guard text.hasSuffix("}"), let open = text.firstIndex(of: "{") else { return object.rendered() + "\n" }
            text.removeLast()
            let inner = text[text.index(after: open)...]
            let empty = inner.allSatisfy(\.isWhitespace)
            while let last = text.last, last.isWhitespace { text.removeLast() }
            let added = target.entries.map { entry in
                "  " + JSON.string(entry.key).rendered(pretty: false) + ": "
                    + indented(entry.value.rendered(), by: "  ")
            }
            return text + (empty ? "\n" : ",\n") + added.joined(separator: ",\n") + "\n}\n"
        case .yaml:
            var text = existing
            if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
            if !text.isEmpty { text += "# Rendered by agentry from the agent's spec.tools and spec.mcpServers.\n" }
            for entry in target.entries { text += YAMLText.block(entry.key, entry.value, indent: "") }
            return text
        case .toml:
            var lines = existing.split(separator: "\n", omittingEmptySubsequences: false).map(Substring.init)
            if lines.last == "" { lines.removeLast() }
            let split = TOMLText.firstTableLine(lines)
            var top: [String] = []
            var tables: [String] = []
            for entry in target.entries {
                guard case .object(let pairs) = entry.value else {
                    top.append(TOMLText.keyText(entry.key) + " = " + TOMLText.value(entry.value))
                    continue
                }
                let nested = pairs.allSatisfy { if case .object = $0.1 { return true } else { return false } }
                if nested && !pairs.isEmpty {
                    for (name, value) in pairs {
                        guard case .object(let fields) = value else { continue }
                        tables.append("")
                        tables.append("[\(TOMLText.keyText(entry.key)).\(TOMLText.keyText(name))]")
                        tables += fields.map { TOMLText.keyText($0.0) + " = " + TOMLText.value($0.1) }
                    }
                } else {
                    tables.append("")
                    tables.append("[\(TOMLText.keyText(entry.key))]")
                    tables += pairs.map { TOMLText.keyText($0.0) + " = " + TOMLText.value($0.1) }
                }
            }
            let comment = "# Rendered by agentry from the agent's spec.tools and spec.mcpServers."
            var output = [comment] + top
            if !lines.isEmpty { output += [""] + lines[..<split].map(String.init) }
            output += lines[split...].map(String.init)
            output += tables
            return output.joined(separator: "\n") + "\n"
        }
    }

    static func indented(_ text: String, by indent: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().map {
            $0.offset == 0 ? String($0.element) : indent + $0.element
        }.joined(separator: "\n")
    }
}

/// JSON values written as block YAML (strings double-quoted, so nothing is read as another type).
enum YAMLText {
    static func block(_ key: String, _ value: JSON, indent: String) -> String {
        let name = NativeTools.quoted(key)
        switch value {
        case .object(let pairs) where !pairs.isEmpty:
            return indent + name + ":\n" + pairs.map { block($0.0, $0.1, indent: indent + "  ") }.joined()
        case .array(let items) where !items.isEmpty:
            return indent + name + ":\n" + items.map { item in list(item, indent: indent + "  ") }.joined()
        default:
            return indent + name + ": " + scalar(value) + "\n"
        }
    }

    static func scalar(_ value: JSON) -> String {
        if case .string(let text) = value { return NativeTools.quoted(text) }
        return value.rendered(pretty: false)
    }

    static func list(_ item: JSON, indent: String) -> String {
        switch item {
        case .object(let pairs) where !pairs.isEmpty:
            let body = pairs.map { block($0.0, $0.1, indent: indent + "  ") }.joined()
            return indent + "-" + body.dropFirst(indent.count + 1)
        default:
            return indent + "- " + scalar(item) + "\n"
        }
    }
}
