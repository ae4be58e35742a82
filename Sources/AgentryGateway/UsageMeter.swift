import Foundation

/// Reads the token counts out of a model's answer as it streams past, whichever of the three APIs
/// it speaks: a JSON body (`usage` at the top), or server-sent events whose usage comes in
/// `message_start`/`message_delta` (Messages), the last chunk (chat completions) or
/// `response.completed` (Responses). Bounded: a body or an event line past its limit is not read.
struct UsageMeter {
    let streaming: Bool
    private var pending: [UInt8] = []
    private var overflowed = false
    private(set) var inputTokens = 0
    private(set) var outputTokens = 0

    /// A JSON answer is read whole up to this size; an event line up to `lineLimit`.
    static let bodyLimit = 8 << 20
    static let lineLimit = 1 << 20

    init(contentType: String?) {
        streaming = contentType?.lowercased().contains("text/event-stream") == true
    }

    mutating func feed(_ bytes: some Collection<UInt8>) {
        if overflowed && !streaming { return }
        if !streaming {
            if pending.count + bytes.count > Self.bodyLimit {
                overflowed = true
                pending = []
            } else {
                pending.append(contentsOf: bytes)
            }
            return
        }
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                if !overflowed { line(pending) }
                pending.removeAll(keepingCapacity: true)
                overflowed = false
            } else if pending.count < Self.lineLimit {
                pending.append(byte)
            } else {
                overflowed = true
            }
        }
    }

    mutating func finish() {
        if streaming {
            if !overflowed { line(pending) }
        } else if !overflowed {
            read(pending)
        }
        pending = []
    }

    private mutating func line(_ line: [UInt8]) {
        var text = line[...]
        guard text.starts(with: Array("data:".utf8)) else { return }
        text = text.dropFirst(5)
        while text.first == UInt8(ascii: " ") { text = text.dropFirst() }
        if text.last == UInt8(ascii: "\r") { text = text.dropLast() }
        guard text.first == UInt8(ascii: "{") else { return }  // [DONE], keep-alives
        read(Array(text))
    }

    private mutating func read(_ json: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any] else { return }
        for container in [object, object["message"], object["response"]] {
            guard let usage = (container as? [String: Any])?["usage"] as? [String: Any] else { continue }
            // Counts are cumulative where they repeat (a Messages stream's output in message_delta).
            if let input = Self.count(usage, "input_tokens") ?? Self.count(usage, "prompt_tokens") {
                inputTokens = max(inputTokens, input)
            }
            if let output = Self.count(usage, "output_tokens") ?? Self.count(usage, "completion_tokens") {
                outputTokens = max(outputTokens, output)
            }
        }
    }

    private static func count(_ usage: [String: Any], _ key: String) -> Int? {
        guard let number = usage[key] as? NSNumber else { return nil }
        let value = number.intValue
        return value >= 0 && value < 1 << 40 ? value : nil
    }
}
