import AgentryModel
import Foundation

/// One harness-neutral event of a run's transcript (`events.jsonl`, schema in
/// `schemas/transcript-event.schema.json`): what the model said, which tool it called with what,
/// what came back, what it used, what went wrong. Runs of different harnesses read the same way.
public struct TranscriptEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case session, message, toolCall, toolResult, usage, error
    }

    public var kind: Kind
    public var role: String?
    public var text: String?
    /// The tool's name as the harness calls it (`Bash`, `shell`, `edit`, an MCP tool).
    public var tool: String?
    /// Pairs a call with its result.
    public var callID: String?
    /// The call's input, as JSON text.
    public var input: String?
    public var isError: Bool?
    public var inputTokens: Int?
    public var outputTokens: Int?
    public var sessionID: String?
    public var model: String?

    public init(_ kind: Kind) { self.kind = kind }

    /// One line of `events.jsonl`.
    public func json(sequence: Int, harness: String) -> String {
        var pairs: [(String, JSON)] = [("seq", .int(sequence)), ("type", .string(kind.rawValue))]
        pairs.append(("harness", .string(harness)))
        for (key, value) in [
            ("role", role), ("text", text), ("tool", tool), ("callId", callID), ("input", input),
            ("sessionId", sessionID), ("model", model),
        ] {
            if let value { pairs.append((key, .string(value))) }
        }
        if let isError { pairs.append(("isError", .bool(isError))) }
        if let inputTokens { pairs.append(("inputTokens", .int(inputTokens))) }
        if let outputTokens { pairs.append(("outputTokens", .int(outputTokens))) }
        return JSON.object(pairs).rendered(pretty: false)
    }
}

/// A run's transcript, read from what its harness printed (Claude Code's `stream-json`, Codex's
/// `--json`; Hermes prints only its answer). The output is the guest's: every line is untrusted, a
/// line that is not what the harness would print is skipped, and texts are bounded.
public struct Transcript: Sendable, Equatable {
    public static let textLimit = 64 * 1024
    public static let eventLimit = 10_000

    public var events: [TranscriptEvent] = []
    /// The final answer, for `result.md`.
    public var result: String?
    /// Events past `eventLimit`, not kept.
    public var omitted = 0

    public init() {}

    /// The transcript of a harness of `type`'s standard output; nil for a harness whose output
    /// agentry does not read (shell, custom).
    public static func read(type: HarnessType?, stdout: [UInt8]) -> Transcript? {
        switch type {
        case .claudeCode?: return lines(stdout, claudeCode)
        case .codex?: return lines(stdout, codex)
        case .hermes?:
            var transcript = Transcript()
            let text = String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { return transcript }
            var message = TranscriptEvent(.message)
            message.role = "assistant"
            message.text = bounded(text)
            transcript.add(message)
            transcript.result = message.text
            return transcript
        default: return nil
        }
    }

    mutating func add(_ event: TranscriptEvent) {
        if events.count < Self.eventLimit { events.append(event) } else { omitted += 1 }
    }

    static func bounded(_ text: String) -> String {
        guard text.utf8.count > textLimit else { return text }
        return String(decoding: text.utf8.prefix(textLimit), as: UTF8.self) + "…"
    }

    static func lines(_ bytes: [UInt8], _ read: (inout Transcript, [String: Any]) -> Void) -> Transcript {
        var transcript = Transcript()
        for line in bytes.split(separator: 0x0A) where line.first == UInt8(ascii: "{") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { continue }
            read(&transcript, object)
        }
        return transcript
    }

    static func jsonText(_ value: Any?) -> String? {
        guard let value else { return nil }
        if let text = value as? String { return bounded(text) }
        guard JSONSerialization.isValidJSONObject(value),
            let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
        else { return nil }
        return bounded(String(decoding: data, as: UTF8.self))
    }

    /// The text of a tool result's content: a string, or text blocks.
    static func contentText(_ value: Any?) -> String? {
        if let text = value as? String { return bounded(text) }
        guard let blocks = value as? [[String: Any]] else { return jsonText(value) }
        return bounded(blocks.compactMap { $0["text"] as? String }.joined(separator: "\n"))
    }

    /// A usage event from an `{input_tokens, output_tokens}` object (both CLIs name them so).
    static func usage(_ value: Any?) -> TranscriptEvent {
        let usage = value as? [String: Any]
        var event = TranscriptEvent(.usage)
        event.inputTokens = usage?["input_tokens"] as? Int
        event.outputTokens = usage?["output_tokens"] as? Int
        return event
    }

    /// Claude Code's `--output-format stream-json`: `system` (init), `assistant` and `user`
    /// messages with content blocks, and a final `result`.
    static func claudeCode(_ transcript: inout Transcript, _ line: [String: Any]) {
        switch line["type"] as? String {
        case "system" where line["subtype"] as? String == "init":
            var event = TranscriptEvent(.session)
            event.sessionID = line["session_id"] as? String
            event.model = line["model"] as? String
            transcript.add(event)
        case "assistant", "user":
            guard let message = line["message"] as? [String: Any],
                let blocks = message["content"] as? [[String: Any]]
            else { return }
            for block in blocks {
                switch block["type"] as? String {
                case "text":
                    var event = TranscriptEvent(.message)
                    event.role = message["role"] as? String ?? (line["type"] as? String)
                    event.text = (block["text"] as? String).map(bounded)
                    transcript.add(event)
                case "tool_use":
                    var event = TranscriptEvent(.toolCall)
                    event.tool = block["name"] as? String
                    event.callID = block["id"] as? String
                    event.input = jsonText(block["input"])
                    transcript.add(event)
                case "tool_result":
                    var event = TranscriptEvent(.toolResult)
                    event.callID = block["tool_use_id"] as? String
                    event.text = contentText(block["content"])
                    event.isError = block["is_error"] as? Bool ?? false
                    transcript.add(event)
                default: break
                }
            }
        case "result":
            var event = usage(line["usage"])
            event.sessionID = line["session_id"] as? String
            transcript.add(event)
            if line["is_error"] as? Bool == true {
                var error = TranscriptEvent(.error)
                error.text = (line["result"] as? String).map(bounded) ?? line["subtype"] as? String
                transcript.add(error)
            } else {
                transcript.result = (line["result"] as? String).map(bounded)
            }
        default: break
        }
    }

    /// Codex's `exec --json`: `thread.started`, `item.completed` (agent messages, commands, file
    /// changes, MCP calls, web searches, errors), `turn.completed` with usage, `turn.failed`.
    static func codex(_ transcript: inout Transcript, _ line: [String: Any]) {
        switch line["type"] as? String {
        case "thread.started":
            var event = TranscriptEvent(.session)
            event.sessionID = line["thread_id"] as? String
            transcript.add(event)
        case "item.completed":
            guard let item = line["item"] as? [String: Any] else { return }
            let id = item["id"] as? String
            switch item["type"] as? String {
            case "agent_message":
                var event = TranscriptEvent(.message)
                event.role = "assistant"
                event.text = (item["text"] as? String).map(bounded)
                transcript.add(event)
                transcript.result = event.text
            case "command_execution":
                var call = TranscriptEvent(.toolCall)
                call.tool = "shell"
                call.callID = id
                call.input = jsonText(item["command"])
                transcript.add(call)
                var result = TranscriptEvent(.toolResult)
                result.callID = id
                result.text = (item["aggregated_output"] as? String).map(bounded)
                result.isError = (item["exit_code"] as? Int).map { $0 != 0 }
                transcript.add(result)
            case "file_change", "mcp_tool_call", "web_search":
                var call = TranscriptEvent(.toolCall)
                call.tool =
                    item["type"] as? String == "mcp_tool_call"
                    ? [item["server"] as? String, item["tool"] as? String].compactMap { $0 }.joined(separator: "/")
                    : item["type"] as? String == "file_change" ? "edit" : "web"
                call.callID = id
                call.input = jsonText(item["changes"] ?? item["arguments"] ?? item["query"])
                transcript.add(call)
            case "error":
                var event = TranscriptEvent(.error)
                event.text = (item["message"] as? String).map(bounded)
                transcript.add(event)
            default: break
            }
        case "turn.completed":
            transcript.add(usage(line["usage"]))
        case "turn.failed", "error":
            var event = TranscriptEvent(.error)
            event.text = ((line["error"] as? [String: Any])?["message"] as? String ?? line["message"] as? String)
                .map(bounded)
            transcript.add(event)
        default: break
        }
    }

    /// `events.jsonl`: one event per line.
    public func jsonLines(harness: String) -> [UInt8] {
        var text = ""
        for (index, event) in events.enumerated() { text += event.json(sequence: index + 1, harness: harness) + "\n" }
        return Array(text.utf8)
    }
}
