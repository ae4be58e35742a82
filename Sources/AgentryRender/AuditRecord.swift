import AgentryBasics
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
