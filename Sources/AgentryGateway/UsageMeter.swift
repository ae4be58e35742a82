import Foundation

#if canImport(Glibc)
    import Glibc
#endif

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
        if bytes.withContiguousStorageIfAvailable({ lines(in: $0) }) == nil {
            Array(bytes).withUnsafeBufferPointer { lines(in: $0) }
        }
    }

    /// Each whole line read where it lies; only a line split across chunks is copied.
    private mutating func lines(in bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { return }
        var start = 0
        while start < bytes.count {
            let newline = memchr(base + start, Int32(UInt8(ascii: "\n")), bytes.count - start)
            let end = newline.map { UnsafePointer<UInt8>(base).distance(to: $0.assumingMemoryBound(to: UInt8.self)) }
            let piece = UnsafeBufferPointer(rebasing: bytes[start..<(end ?? bytes.count)])
            guard let end else {
                keep(piece)
                return
            }
            if pending.isEmpty && !overflowed {
                line(piece)
            } else {
                keep(piece)
                if !overflowed { pending.withUnsafeBufferPointer { line($0) } }
                pending.removeAll(keepingCapacity: true)
                overflowed = false
            }
            start = end + 1
        }
    }

    private mutating func keep(_ piece: UnsafeBufferPointer<UInt8>) {
        if pending.count + piece.count <= Self.lineLimit {
            pending.append(contentsOf: piece)
        } else {
            overflowed = true
        }
    }

    mutating func finish() {
        if streaming {
            if !overflowed { pending.withUnsafeBufferPointer { line($0) } }
        } else if !overflowed {
            pending.withUnsafeBufferPointer { read($0) }
        }
        pending = []
    }

    private mutating func line(_ line: UnsafeBufferPointer<UInt8>) {
        var text = line[...]
        guard text.starts(with: Self.dataField) else { return }
        text = text.dropFirst(5)
        while text.first == UInt8(ascii: " ") { text = text.dropFirst() }
        if text.last == UInt8(ascii: "\r") { text = text.dropLast() }
        guard text.first == UInt8(ascii: "{") else { return }  // [DONE], keep-alives
        // Most events carry a token of text and no usage: only those naming it are parsed.
        let json = UnsafeBufferPointer(rebasing: text)
        guard Self.mentionsUsage(json) else { return }
        read(json)
    }

    private mutating func read(_ json: UnsafeBufferPointer<UInt8>) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: json)) as? [String: Any] else {
            return
        }
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

    private static let dataField = Array("data:".utf8)
    private static let usageKey = Array("\"usage\"".utf8)

    private static func mentionsUsage(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = text.baseAddress else { return false }
        var offset = 0
        // memchr to each quote; the key compared only where a `u` follows it.
        while text.count - offset >= usageKey.count,
            let found = memchr(base + offset, Int32(UInt8(ascii: "\"")), text.count - offset)
        {
            let at = UnsafePointer<UInt8>(base).distance(to: found.assumingMemoryBound(to: UInt8.self))
            if text.count - at >= usageKey.count, text[at + 1] == UInt8(ascii: "u"),
                memcmp(base + at, usageKey, usageKey.count) == 0
            {
                return true
            }
            offset = at + 1
        }
        return false
    }

    private static func count(_ usage: [String: Any], _ key: String) -> Int? {
        guard let number = usage[key] as? NSNumber else { return nil }
        let value = number.intValue
        return value >= 0 && value < 1 << 40 ? value : nil
    }
}
