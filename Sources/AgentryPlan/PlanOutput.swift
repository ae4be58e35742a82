import AgentryModel

/// A plan with what it was computed from, as printed and as saved by `plan --out`.
public struct PlanDocument: Sendable {
    public enum Kind: String, Sendable {
        /// Desired state at a commit against the actual state.
        case plan
        /// One commit's desired state against another's, with no actual state.
        case diff
    }

    public var kind: Kind
    public var plan: Plan
    /// The desired commit (HEAD of a diff).
    public var commit: String
    /// The base commit of a diff.
    public var baseCommit: String?
    public var repository: String
    public var ref: String
    public var path: String
    /// Digest of the actual state the plan was computed against (plans only).
    public var actualDigest: String?
    /// The texts behind changed digests (instructions, skill files), each once.
    public var textChanges: [TextChange] = []

    public init(
        kind: Kind, plan: Plan, commit: String, baseCommit: String? = nil, repository: String, ref: String,
        path: String, actualDigest: String? = nil
    ) {
        self.kind = kind
        self.plan = plan
        self.commit = commit
        self.baseCommit = baseCommit
        self.repository = repository
        self.ref = ref
        self.path = path
        self.actualDigest = actualDigest
    }
}

/// Renders plans for a terminal (`text`), a pull-request comment (`markdown`) and machines (`json`).
public enum PlanOutput {
    /// Bumped only when a field is removed or changes meaning.
    public static let formatVersion = 1

    static let order: [Action] = [
        .create, .update, .repair, .restart, .reinstall, .replace, .pause, .resume, .revoke, .delete,
    ]

    /// "2 to create, 1 to update, 1 to delete, 5 unchanged" (or "no changes, 5 unchanged").
    public static func summary(_ plan: Plan) -> String {
        let parts = order.compactMap { action -> String? in
            let count = plan.count(action)
            return count > 0 ? "\(count) to \(action.rawValue)" : nil
        }
        let unchanged = plan.count(.noop)
        let blocked = plan.count(.blocked)
        let changes = parts.isEmpty ? "no changes" : parts.joined(separator: ", ")
        return changes + (blocked > 0 ? ", \(blocked) blocked" : "") + (unchanged > 0 ? ", \(unchanged) unchanged" : "")
    }

    static func symbol(_ action: Action) -> String {
        switch action {
        case .create: return "+"
        case .delete: return "-"
        case .replace: return "-/+"
        case .noop: return " "
        case .pause, .revoke: return "‖"
        case .resume: return "▶"
        case .update, .repair, .restart, .reinstall: return "~"
        case .blocked: return "!"
        }
    }

    static func color(_ action: Action) -> String {
        switch action {
        case .create, .resume: return "\u{1B}[32m"
        case .delete, .replace, .revoke: return "\u{1B}[31m"
        default: return "\u{1B}[33m"
        }
    }

    /// Shortens digests and blob ids so reasons stay readable.
    static func display(_ value: String?) -> String {
        guard let value else { return "(none)" }
        let isDigest = (value.count == 64 || value.count == 40) && value.allSatisfy(\.isHexDigit)
        if isDigest { return String(value.prefix(12)) }
        let oneLine = value.contains("\n") ? value.split(separator: "\n").first.map(String.init)! + " …" : value
        return oneLine.count > 80 ? String(oneLine.prefix(77)) + "…" : oneLine
    }

    static func reason(_ change: Change) -> String {
        let field = label(change.field)
        switch (change.old, change.new) {
        case (nil, let new?): return "\(field): → \(display(new))"
        case (let old?, nil): return "\(field): \(display(old)) → (removed)"
        default: return "\(field): \(display(change.old)) → \(display(change.new))"
        }
    }

    /// A field as a reader writes it: a config file's path (which may start with a dot) in
    /// brackets, `harness.configFiles[".hermes/config.yaml"]`, not run into the field's name.
    public static func label(_ field: String) -> String {
        let marker = "configFiles."
        guard let start = field.indices.first(where: { field[$0...].hasPrefix(marker) }) else { return field }
        let name = field[..<field.index(start, offsetBy: marker.count - 1)]
        return name + "[\"" + field[field.index(start, offsetBy: marker.count)...] + "\"]"
    }

    public static func text(_ document: PlanDocument, color: Bool) -> String {
        let plan = document.plan
        let reset = color ? "\u{1B}[0m" : ""
        let bold = color ? "\u{1B}[1m" : ""
        var lines: [String] = []
        switch document.kind {
        case .plan:
            lines.append(
                "\(bold)Plan\(reset) for \(String(document.commit.prefix(12))) (\(document.ref)): \(summary(plan))")
        case .diff:
            lines.append(
                "\(bold)Diff\(reset) \(String((document.baseCommit ?? "").prefix(12)))..\(String(document.commit.prefix(12))): \(summary(plan))"
            )
        }
        for action in plan.listed {
            let tint = color ? self.color(action.action) : ""
            let verb = action.action.rawValue.padding(toLength: 9)
            lines.append(
                "  \(tint)\(symbol(action.action).padding(toLength: 3)) \(verb)\(reset) \(bold)\(action.agent)\(reset)")
            for note in action.notes { lines.append("        " + note) }
            for change in action.reasons { lines.append("        " + reason(change)) }
        }
        for change in document.textChanges {
            lines.append("")
            lines.append("  \(bold)\(change.path)\(reset) (\(agentsPhrase(change.agents))):")
            for line in change.unifiedDiff {
                let tint =
                    !color
                    ? ""
                    : line.hasPrefix("+") && !line.hasPrefix("+++")
                        ? "\u{1B}[32m"
                        : line.hasPrefix("-") && !line.hasPrefix("---") ? "\u{1B}[31m" : ""
                lines.append("    \(tint)\(line)\(tint.isEmpty ? "" : reset)")
            }
        }
        if !plan.hasChanges {
            let blocked = plan.count(.blocked)
            lines.append(
                blocked > 0
                    ? "  Nothing to do: every other agent matches the repository."
                    : "  Nothing to do: every agent matches the repository.")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func markdown(_ document: PlanDocument) -> String {
        let plan = document.plan
        let title = document.kind == .plan ? "agentry plan" : "agentry diff"
        var lines = ["### \(title): \(summary(plan))", ""]
        switch document.kind {
        case .plan:
            lines.append(
                "Desired state at `\(document.commit.prefix(12))`\(document.path.isEmpty ? "" : " (`\(document.path)`)") against the actual state."
            )
        case .diff:
            lines.append(
                "`\((document.baseCommit ?? "").prefix(12))` → `\(document.commit.prefix(12))`\(document.path.isEmpty ? "" : " (`\(document.path)`)")."
            )
        }
        lines.append("")
        guard !plan.listed.isEmpty else {
            lines.append("No agent changes.")
            return lines.joined(separator: "\n") + "\n"
        }
        lines += ["| Agent | Action | Why |", "|---|---|---|"]
        for action in plan.listed {
            var why = action.notes.first.map { [$0] } ?? []
            why += action.reasons.prefix(3).map { codeSpan(escape(reason($0))) }
            if action.reasons.count > 3 { why.append("and \(action.reasons.count - 3) more") }
            lines.append("| `\(action.agent)` | **\(action.action.rawValue)** | \(why.joined(separator: "<br>")) |")
        }
        lines += ["", "<details><summary>Details</summary>", ""]
        for action in plan.listed {
            lines.append("#### `\(action.agent)`: \(action.action.rawValue)")
            lines.append("")
            for note in action.notes { lines.append("- \(note)") }
            for change in action.reasons {
                lines.append(
                    "- \(codeSpan(label(change.field))): \(change.old.map { codeSpan(escape(display($0))) } ?? "(none)") → \(change.new.map { codeSpan(escape(display($0))) } ?? "(removed)")"
                )
            }
            if let from = action.fromRevision, let to = action.toRevision, from != to {
                lines.append("- revision `\(from.prefix(12))` → `\(to.prefix(12))`")
            }
            lines.append("")
        }
        for change in document.textChanges {
            lines.append("#### `\(change.path)` (\(agentsPhrase(change.agents)))")
            lines.append("")
            let body = change.unifiedDiff
            let fence = String(repeating: "`", count: max(3, longestBacktickRun(body.joined(separator: "\n")) + 1))
            lines += [fence + "diff"] + body + [fence, ""]
        }
        lines.append("</details>")
        return lines.joined(separator: "\n") + "\n"
    }

    /// `agent hello` or `2 agents: docs-writer, hello`.
    static func agentsPhrase(_ agents: [String]) -> String {
        agents.count == 1 ? "agent \(agents[0])" : "\(agents.count) agents: \(agents.joined(separator: ", "))"
    }

    static func longestBacktickRun(_ text: String) -> Int {
        var longest = 0
        var run = 0
        for character in text {
            run = character == "`" ? run + 1 : 0
            longest = max(longest, run)
        }
        return longest
    }

    /// A Markdown code span that holds any text, backticks included (CommonMark: a longer fence).
    static func codeSpan(_ text: String) -> String {
        let fence = String(repeating: "`", count: longestBacktickRun(text) + 1)
        let padded = text.hasPrefix("`") || text.hasSuffix("`") ? " \(text) " : text
        return fence + padded + fence
    }

    /// Table-safe: a `|` would end the cell (backticks are kept: code spans take them).
    static func escape(_ text: String) -> String {
        text.replacingAll("|", with: "\\|")
    }

    public static func json(_ document: PlanDocument) -> String {
        String(decoding: jsonBytes(document), as: UTF8.self)
    }

    /// One action, borrowed rather than copied (a plan has 10,000 of them).
    static func write(_ action: borrowing PlannedAction, into writer: inout JSONWriter) {
        writer.beginObject()
        writer.field("agent", action.agent)
        writer.field("action", action.action.rawValue)
        writer.field("fromRevision", action.fromRevision)
        writer.field("toRevision", action.toRevision)
        writer.key("notes")
        writer.beginArray()
        for note in action.notes { writer.string(note) }
        writer.endArray()
        writer.key("reasons")
        writer.beginArray()
        for change in action.reasons {
            writer.beginObject()
            writer.field("field", change.field)
            writer.field("old", change.old)
            writer.field("new", change.new)
            writer.endObject()
        }
        writer.endArray()
        writer.endObject()
    }

    /// The same as bytes, as they are written out (a plan of 10,000 agents is a few megabytes).
    public static func jsonBytes(_ document: PlanDocument) -> [UInt8] {
        // Written as it goes: 10,000 actions would otherwise be a tree of a few hundred thousand values.
        let plan = document.plan
        var writer = JSONWriter(capacity: 4096 + 512 * plan.actions.count)
        writer.beginObject()
        func field(_ key: String, _ value: JSON) {
            writer.key(key)
            writer.value(value)
        }
        field("formatVersion", .int(formatVersion))
        field("kind", .string(document.kind.rawValue))
        field("repository", .string(document.repository))
        field("ref", .string(document.ref))
        field("path", .string(document.path))
        field("commit", .string(document.commit))
        if let base = document.baseCommit { field("baseCommit", .string(base)) }
        if let digest = document.actualDigest { field("actualDigest", .string(digest)) }
        field("hasChanges", .bool(plan.hasChanges))
        field("summary", .object(([.noop] + order + [.blocked]).map { ($0.rawValue, JSON.int(plan.count($0))) }))
        writer.key("actions")
        writer.beginArray()
        for index in plan.actions.indices { write(plan.actions[index], into: &writer) }
        writer.endArray()
        if !document.textChanges.isEmpty {
            field(
                "textChanges",
                .array(
                    document.textChanges.map { change in
                        .object([
                            ("path", .string(change.path)),
                            ("agents", .array(change.agents.map(JSON.string))),
                            ("diff", .string(change.unifiedDiff.joined(separator: "\n") + "\n")),
                        ])
                    }))
        }
        writer.endObject()
        writer.endLine()
        return writer.bytes
    }
}

extension String {
    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }
}
