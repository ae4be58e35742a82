import AgentryModel
import Foundation

/// The top-level `"model"` members of a JSON request body, found by one pass over its bytes that
/// allocates nothing for the rest: a guest's 32 MiB of nested arrays costs a scan, not a parse into
/// gigabytes of objects. Not a validator: the provider reads the body and says what is wrong with it.
enum ModelField {
    /// Each top-level `"model"` member whose value is a string: the value's byte range (with its
    /// quotes) and its text. Empty when the body is not a JSON object or has none.
    static func find(in body: [UInt8]) -> [(range: Range<Int>, value: String)] {
        var found: [(Range<Int>, String)] = []
        var i = skipSpace(body, 0)
        guard i < body.count, body[i] == UInt8(ascii: "{") else { return [] }
        i += 1
        while true {
            i = skipSpace(body, i)
            guard i < body.count, body[i] == UInt8(ascii: "\"") else { return found }
            let keyStart = i
            guard let keyEnd = endOfString(body, keyStart) else { return found }
            i = skipSpace(body, keyEnd)
            guard i < body.count, body[i] == UInt8(ascii: ":") else { return found }
            let valueStart = skipSpace(body, i + 1)
            guard let valueEnd = endOfValue(body, valueStart) else { return found }
            // The key as written: a `model` spelt with escapes is not one (the provider reads the
            // same bytes and agrees only if it unescapes; then it is caught as not pinned below).
            if isModelKey(body[keyStart..<keyEnd]), body[valueStart] == UInt8(ascii: "\"") {
                found.append((valueStart..<valueEnd, decode(body[valueStart..<valueEnd])))
            }
            i = skipSpace(body, valueEnd)
            guard i < body.count, body[i] == UInt8(ascii: ",") else { return found }
            i += 1
        }
    }

    /// `body` with every top-level `"model"` string replaced by `model`; nil when it has none.
    static func replacing(_ body: [UInt8], with model: String) -> [UInt8]? {
        let fields = find(in: body)
        guard !fields.isEmpty else { return nil }
        var quoted = ""
        JSON.quote(model, into: &quoted)
        var result = body
        for field in fields.reversed() { result.replaceSubrange(field.range, with: Array(quoted.utf8)) }
        return result
    }

    static func skipSpace(_ body: [UInt8], _ start: Int) -> Int {
        var i = start
        while i < body.count, body[i] == 0x20 || body[i] == 0x09 || body[i] == 0x0A || body[i] == 0x0D { i += 1 }
        return i
    }

    /// Just past the string starting at `start` (a quote).
    static func endOfString(_ body: [UInt8], _ start: Int) -> Int? {
        var i = start + 1
        while i < body.count {
            switch body[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""): return i + 1
            default: i += 1
            }
        }
        return nil
    }

    /// Just past the value starting at `start`: a string, an object or array (strings inside
    /// skipped whole), or a bare number or word.
    static func endOfValue(_ body: [UInt8], _ start: Int) -> Int? {
        guard start < body.count else { return nil }
        switch body[start] {
        case UInt8(ascii: "\""):
            return endOfString(body, start)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var i = start
            while i < body.count {
                switch body[i] {
                case UInt8(ascii: "\""):
                    guard let end = endOfString(body, i) else { return nil }
                    i = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return i + 1 }
                default: break
                }
                i += 1
            }
            return nil
        default:
            var i = start
            while i < body.count,
                ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x09, 0x0A, 0x0D]
                    .contains(body[i])
            {
                i += 1
            }
            return i > start ? i : nil
        }
    }

    /// `model`, also spelt with escapes (`mod\u0065l`), as a provider's parser reads it.
    static func isModelKey(_ quoted: ArraySlice<UInt8>) -> Bool {
        let key = quoted.dropFirst().dropLast()
        if key.elementsEqual("model".utf8) { return true }
        guard key.contains(UInt8(ascii: "\\")), key.count <= 64 else { return false }
        return decode(quoted) == "model"
    }

    /// A JSON string's text (at most 1 KiB of it read; longer ones are `""`: no model is named so).
    static func decode(_ quoted: ArraySlice<UInt8>) -> String {
        let inner = quoted.dropFirst().dropLast()
        guard inner.count <= 1024 else { return "" }
        if !inner.contains(UInt8(ascii: "\\")) { return String(decoding: inner, as: UTF8.self) }
        let value = try? JSONSerialization.jsonObject(with: Data(quoted), options: .fragmentsAllowed)
        return value as? String ?? ""
    }
}
