/// A JSON value with ordered keys, so agentry's JSON output is byte-for-byte stable.
public indirect enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (lhs: JSON, rhs: JSON) -> Bool {
        lhs.rendered() == rhs.rendered()
    }

    /// Renders with two-space indentation (pretty) or compactly; always ends without a newline.
    public func rendered(pretty: Bool = true) -> String {
        var output = ""
        write(into: &output, indent: pretty ? "" : nil)
        return output
    }

    private func write(into output: inout String, indent: String?) {
        switch self {
        case .null: output += "null"
        case .bool(let value): output += value ? "true" : "false"
        case .int(let value): output += String(value)
        case .string(let value): JSON.quote(value, into: &output)
        case .array(let items):
            if items.isEmpty {
                output += "[]"
                return
            }
            output += "["
            let inner = indent.map { $0 + "  " }
            for (index, item) in items.enumerated() {
                if index > 0 { output += "," }
                if let inner { output += "\n" + inner }
                item.write(into: &output, indent: inner)
            }
            if let indent { output += "\n" + indent }
            output += "]"
        case .object(let pairs):
            if pairs.isEmpty {
                output += "{}"
                return
            }
            output += "{"
            let inner = indent.map { $0 + "  " }
            for (index, (key, value)) in pairs.enumerated() {
                if index > 0 { output += "," }
                if let inner { output += "\n" + inner }
                JSON.quote(key, into: &output)
                output += indent == nil ? ":" : ": "
                value.write(into: &output, indent: inner)
            }
            if let indent { output += "\n" + indent }
            output += "}"
        }
    }

    /// `text` as a double-quoted string; `also` names further scalars to write as `\\uXXXX` (YAML,
    /// whose double-quoted strings read JSON's escapes, needs more of them escaped than JSON).
    public static func quote(_ text: String, into output: inout String, also: ((UInt32) -> Bool)? = nil) {
        // Fast path: nothing to escape (the common case), appended whole.
        if also == nil,
            !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") })
        {
            output += "\""
            output += text
            output += "\""
            return
        }
        output += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            default:
                if scalar.value < 0x20 || also?(scalar.value) == true {
                    let hex = String(scalar.value, radix: 16)
                    output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
    }
}
