/// Spans of time as agentry reads and writes them: `90s`, `15m`, `1h30m`, `500ms`.
public enum DurationText {
    /// Milliseconds, or nil when `text` does not parse or is zero. Absurdly long durations saturate.
    public static func parse(_ text: String) -> UInt64? {
        var total: UInt64 = 0
        var digits: UInt64 = 0
        var digitCount = 0
        var nonZero = false
        var bytes = Array(text.utf8)[...]
        guard !bytes.isEmpty else { return nil }
        while let byte = bytes.first {
            if byte >= 48 && byte <= 57 {
                digits = digits.multipliedReportingOverflow(by: 10).overflow ? .max : digits * 10
                digits = digits.addingReportingOverflow(UInt64(byte - 48)).overflow ? .max : digits + UInt64(byte - 48)
                if byte != 48 { nonZero = true }
                digitCount += 1
                bytes = bytes.dropFirst()
                continue
            }
            guard digitCount > 0 else { return nil }
            let factor: UInt64
            if bytes.starts(with: "ms".utf8) {
                factor = 1
                bytes = bytes.dropFirst(2)
            } else if byte == UInt8(ascii: "s") {
                factor = 1000
                bytes = bytes.dropFirst()
            } else if byte == UInt8(ascii: "m") {
                factor = 60_000
                bytes = bytes.dropFirst()
            } else if byte == UInt8(ascii: "h") {
                factor = 3_600_000
                bytes = bytes.dropFirst()
            } else {
                return nil
            }
            let (part, overflow) = digits.multipliedReportingOverflow(by: factor)
            let (sum, overflow2) = total.addingReportingOverflow(overflow ? .max : part)
            total = overflow || overflow2 ? .max : sum
            digits = 0
            digitCount = 0
        }
        guard digitCount == 0, nonZero else { return nil }
        return total
    }

    /// A normalised duration: 900000 ms prints as `15m`, 5400000 as `1h30m`, 1500 as `1s500ms`.
    public static func format(milliseconds: UInt64) -> String {
        if milliseconds == .max { return "unbounded" }
        var rest = milliseconds
        var text = ""
        for (unit, size) in [("h", UInt64(3_600_000)), ("m", 60_000), ("s", 1000), ("ms", 1)] where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text.isEmpty ? "0s" : text
    }

    /// Seconds with one decimal, as commit messages and progress lines show them: `1.5s`.
    public static func seconds(milliseconds: Int) -> String {
        let tenths = (max(0, milliseconds) + 50) / 100
        return "\(tenths / 10).\(tenths % 10)s"
    }
}

extension Duration {
    /// As agentry prints durations, Go-style: `90s`, `15m`, `1h30m`, `1s500ms`.
    public var goStyle: String { DurationText.format(milliseconds: UInt64(max(0, millisecondsRoundedUp))) }

    /// Whole milliseconds, truncated.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Whole milliseconds, rounded up: a positive duration under a millisecond is still one (0
    /// would often mean "no limit").
    public var millisecondsRoundedUp: Int64 {
        components.seconds * 1000 + (components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }

    /// From milliseconds that may be huge (saturating at the largest duration that fits).
    public static func milliseconds(saturating value: UInt64) -> Duration {
        .milliseconds(Int64(min(value, UInt64(Int64.max / 1000))))
    }
}
