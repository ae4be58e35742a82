import AgentryBasics
import AgentryYAML
import Foundation

/// An audit record in the history branch: `applies/<time>-<commit>-<id>.yaml` for an apply that
/// carried out a step, `events/<time>-<agent>-<kind>-<id>.yaml` for an operator's kill or unkill.
public struct AuditRecord: Sendable {
    public var kind: String
    public var actor: String
    public var time: Date
    public var path: String
    /// The record file (YAML, values double-quoted so any text reads back exactly).
    public var text: String
    public var commitMessage: String

    /// `fields` and `lists` follow the standard `kind`, `at`, `by` and `host` lines in order.
    public init(
        kind: String, subject: String, fields: [(String, String)], lists: [(String, [String])] = [], actor: String,
        host: String, at date: Date
    ) {
        self.kind = kind
        self.actor = actor
        self.time = date
        var lines = [
            "# agentry \(kind) record", "kind: \(kind)", "at: \(RunRecord.quote(RunRecord.time(date)))",
            "by: \(RunRecord.quote(actor))", "host: \(RunRecord.quote(host))",
        ]
        for (key, value) in fields { lines.append("\(key): \(RunRecord.quote(value))") }
        for (key, values) in lists {
            lines.append(values.isEmpty ? "\(key): []" : "\(key):")
            for value in values { lines.append("  - \(RunRecord.quote(value))") }
        }
        let folder = kind == "apply" ? "applies" : "events"
        // Unique like run ids: two kills in one second, or two hosts applying one commit at once,
        // must not overwrite each other's record.
        path = "\(folder)/\(RunID.stamp(date))-\(subject)-\(Hex.random(bytes: 4)).yaml"
        text = lines.joined(separator: "\n") + "\n"
        commitMessage = "\(kind) \(subject) by \(actor)\n\n" + lines.dropFirst().joined(separator: "\n") + "\n"
    }
}

/// An audit record read back from the history branch: its top-level scalars (`kind`, `at`, `by`,
/// `host`, `agent`, `reason`, `desiredCommit`, `summary`, ...) and its lists (`actions`).
public struct AuditEntry: Sendable, Equatable {
    public var path: String
    public var kind: String
    public var time: Date
    public var actor: String
    public var fields: [String: String]
    public var lists: [String: [String]]

    /// Nil when the text is not an audit record agentry wrote.
    public static func parse(_ text: String, path: String) -> AuditEntry? {
        guard case .success(let documents) = YAMLComposer.compose(text), let root = documents.first?.root,
            let pairs = root.pairs
        else { return nil }
        var fields: [String: String] = [:]
        var lists: [String: [String]] = [:]
        for pair in pairs {
            guard let name = pair.key.scalarText else { continue }
            if let items = pair.value.sequence {
                lists[name] = items.compactMap(\.scalarText)
            } else if let scalar = pair.value.scalarText {
                fields[name] = scalar
            }
        }
        guard let kind = fields["kind"], let at = fields["at"].flatMap(RunRecord.parseTime) else { return nil }
        return AuditEntry(path: path, kind: kind, time: at, actor: fields["by"] ?? "", fields: fields, lists: lists)
    }

    /// `triage` for a kill, `3f9a1c2b7d0e` (the commit) for an apply.
    public var subject: String {
        fields["agent"] ?? String((fields["desiredCommit"] ?? "").prefix(12))
    }

    /// What happened, in a line: the reason of a kill, the summary of an apply.
    public var what: String {
        if let reason = fields["reason"] { return reason }
        let summary = fields["summary"] ?? ""
        let interrupted = fields["interrupted"].map { " (interrupted: \($0))" } ?? ""
        return summary + interrupted
    }
}
