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
        var writer = JSONWriter(pretty: pretty)
        writer.value(self)
        return writer.text
    }

    /// `text` as a double-quoted JSON string, appended as bytes.
    public static func quote(_ text: String, into output: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            if !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                output.append(UInt8(ascii: "\""))
                output.append(contentsOf: bytes)
                output.append(UInt8(ascii: "\""))
                return
            }
            var escaped = ""
            JSON.quote(String(decoding: bytes, as: UTF8.self), into: &escaped)
            output += escaped.utf8
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

/// Writes JSON as it goes, in the layout of `JSON.rendered`, without building a tree first (a plan of
/// 10,000 agents is megabytes). Open a container, write its keys and values, close it.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []
    let pretty: Bool
    var depth = 0
    /// Whether the open container has nothing in it yet.
    var empty = true
    /// A key was written: its value follows on the same line.
    var afterKey = false

    /// `capacity`: the bytes expected, reserved at once (a large document then grows in place).
    public init(pretty: Bool = true, capacity: Int = 0) {
        self.pretty = pretty
        bytes.reserveCapacity(capacity)
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Ends the document's line (after its last value).
    public mutating func endLine() { bytes.append(UInt8(ascii: "\n")) }

    public mutating func beginObject() { open(UInt8(ascii: "{")) }
    public mutating func endObject() { close(UInt8(ascii: "}")) }
    public mutating func beginArray() { open(UInt8(ascii: "[")) }
    public mutating func endArray() { close(UInt8(ascii: "]")) }

    public mutating func key(_ key: String) {
        separate()
        JSON.quote(key, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
        if pretty { bytes.append(UInt8(ascii: " ")) }
        afterKey = true
    }

    /// A key and its text (null when nil).
    public mutating func field(_ key: String, _ value: String?) {
        self.key(key)
        string(value)
    }

    public mutating func string(_ value: String?) {
        separate()
        guard let value else { return bytes += "null".utf8 }
        JSON.quote(value, into: &bytes)
    }

    public mutating func value(_ value: JSON) {
        switch value {
        case .null:
            separate()
            bytes += "null".utf8
        case .bool(let flag):
            separate()
            bytes += (flag ? "true" : "false").utf8
        case .int(let number):
            separate()
            bytes += String(number).utf8
        case .string(let text): string(text)
        case .array(let items):
            beginArray()
            for item in items { self.value(item) }
            endArray()
        case .object(let pairs):
            beginObject()
            for (name, item) in pairs {
                key(name)
                self.value(item)
            }
            endObject()
        }
    }

    /// Before a value or a key: a comma after a sibling, and a new line when pretty.
    mutating func separate() {
        if afterKey {
            afterKey = false
            return
        }
        guard depth > 0 else { return }
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        newline()
    }

    mutating func open(_ bracket: UInt8) {
        separate()
        bytes.append(bracket)
        depth += 1
        empty = true
    }

    mutating func close(_ bracket: UInt8) {
        depth -= 1
        if !empty { newline() }
        empty = false
        bytes.append(bracket)
    }

    mutating func newline() {
        guard pretty else { return }
        bytes.append(UInt8(ascii: "\n"))
        bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: 2 * depth))
    }
}
