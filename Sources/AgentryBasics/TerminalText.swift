/// Output from a guest on its way to a terminal: control sequences are neutralised (a hostile
/// agent could otherwise set the window title, move the cursor over earlier lines, write the
/// clipboard with OSC 52 or hide text), colour (SGR, `ESC [ ... m`) passes. Other escapes and
/// control characters are shown in caret notation (`^[`, `^G`); newlines, tabs and carriage returns
/// pass. A sequence split across chunks is held until it is complete (at most a few bytes). The
/// stored log keeps the bytes as they came: this is only for what a terminal shows.
public struct TerminalFilter {
    var held: [UInt8] = []

    public init() {}

    /// The longest SGR sequence passed whole; longer ones are shown, not obeyed.
    static let longestSequence = 64

    public mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        let input = held + bytes
        held = []
        var output: [UInt8] = []
        output.reserveCapacity(input.count)
        var index = 0
        while index < input.count {
            let byte = input[index]
            switch byte {
            case 0x1B:
                // ESC [ parameters m: colour, passed whole; anything else is shown.
                var end = index + 1
                if end < input.count, input[end] == UInt8(ascii: "[") {
                    end += 1
                    while end < input.count, end - index < Self.longestSequence,
                        (0x30...0x3B).contains(input[end])
                    {
                        end += 1
                    }
                    if end == input.count && end - index < Self.longestSequence {
                        held = Array(input[index...])
                        return output
                    }
                    if end < input.count, input[end] == UInt8(ascii: "m") {
                        output += input[index...end]
                        index = end + 1
                        continue
                    }
                } else if end == input.count {
                    held = [byte]
                    return output
                }
                output += Array("^[".utf8)
                index += 1
            case 0x0A, 0x09, 0x0D:
                output.append(byte)
                index += 1
            case 0x00..<0x20, 0x7F:
                output += [UInt8(ascii: "^"), byte == 0x7F ? UInt8(ascii: "?") : byte + 0x40]
                index += 1
            case 0xC2:
                // U+0080...U+009F (C1 controls, 8-bit CSI among them) in UTF-8.
                if index + 1 == input.count {
                    held = [byte]
                    return output
                }
                if (0x80...0x9F).contains(input[index + 1]) {
                    output += Array("^[".utf8) + [input[index + 1] - 0x40]
                    index += 2
                } else {
                    output.append(byte)
                    index += 1
                }
            default:
                output.append(byte)
                index += 1
            }
        }
        return output
    }

    /// What is still held (an unfinished sequence at the end), shown.
    public mutating func finish() -> [UInt8] {
        defer { held = [] }
        guard held.first == 0x1B else { return held }
        var rest = TerminalFilter()
        return Array("^[".utf8) + rest.feed(Array(held.dropFirst())) + rest.finish()
    }

    /// A whole text, filtered.
    public static func filter(_ bytes: [UInt8]) -> [UInt8] {
        var filter = TerminalFilter()
        return filter.feed(bytes) + filter.finish()
    }
}

public enum UTF8Text {
    /// How many of `bytes` end on a whole UTF-8 character: all but the first bytes of a multi-byte
    /// character cut short at the end (at most 3). Bytes that are no UTF-8 at all count as whole
    /// (they are sent as U+FFFD either way).
    public static func wholeCharacters(_ bytes: ArraySlice<UInt8>) -> Int {
        var index = bytes.endIndex
        var continuation = 0
        while index > bytes.startIndex, continuation < 4 {
            let byte = bytes[index - 1]
            if byte & 0xC0 == 0x80 {
                continuation += 1
                index -= 1
                continue
            }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > continuation + 1 ? bytes.count - (continuation + 1) : bytes.count
        }
        return bytes.count
    }
}
