#if canImport(Glibc)
    import Glibc
#endif

/// Points in time as agentry writes them: RFC 3339 in UTC (`2026-11-28T02:45:12Z`, optionally with
/// milliseconds) and compact stamps for sortable names (`20261128-024512`). Times are seconds since
/// the Unix epoch, so this module needs no Foundation (`Date.timeIntervalSince1970`).
public enum Timestamp {
    struct Parts {
        var year, month, day, hour, minute, second: Int
    }

    static func parts(_ seconds: Int64) -> Parts {
        var time = time_t(seconds)
        var value = tm()
        gmtime_r(&time, &value)
        return Parts(
            year: Int(value.tm_year) + 1900, month: Int(value.tm_mon) + 1, day: Int(value.tm_mday),
            hour: Int(value.tm_hour), minute: Int(value.tm_min), second: Int(value.tm_sec))
    }

    static func padded(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }

    /// `2026-11-28T02:45:12Z`, or `2026-11-28T02:45:12.250Z` with `fractional`.
    public static func rfc3339(_ secondsSinceEpoch: Double, fractional: Bool = false) -> String {
        var whole = Int64(secondsSinceEpoch.rounded(.down))
        var millis = Int(((secondsSinceEpoch - Double(whole)) * 1000).rounded())
        if millis >= 1000 {
            whole += 1
            millis -= 1000
        }
        let p = parts(whole)
        var text = "\(padded(p.year, 4))-\(padded(p.month, 2))-\(padded(p.day, 2))T"
        text += "\(padded(p.hour, 2)):\(padded(p.minute, 2)):\(padded(p.second, 2))"
        if fractional { text += "." + padded(millis, 3) }
        return text + "Z"
    }

    /// `20261128-024512`: sorts by time, safe in file names.
    public static func compact(_ secondsSinceEpoch: Double) -> String {
        let p = parts(Int64(secondsSinceEpoch.rounded(.down)))
        return
            "\(padded(p.year, 4))\(padded(p.month, 2))\(padded(p.day, 2))-\(padded(p.hour, 2))\(padded(p.minute, 2))\(padded(p.second, 2))"
    }

    /// Parses RFC 3339 (`Z` or a numeric offset, optional fraction); nil when `text` is not one.
    public static func parse(_ text: String) -> Double? {
        let bytes = Array(text.utf8)
        func number(_ start: Int, _ count: Int) -> Int? {
            guard start + count <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[start..<(start + count)] {
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int(byte - 48)
            }
            return value
        }
        guard bytes.count >= 20, let year = number(0, 4), bytes[4] == 45, let month = number(5, 2), bytes[7] == 45,
            let day = number(8, 2), bytes[10] == 84 || bytes[10] == 116, let hour = number(11, 2), bytes[13] == 58,
            let minute = number(14, 2), bytes[16] == 58, let second = number(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        var fraction = 0.0
        if bytes[index] == 46 {
            index += 1
            var scale = 0.1
            let start = index
            while index < bytes.count, bytes[index] >= 48 && bytes[index] <= 57 {
                fraction += Double(bytes[index] - 48) * scale
                scale /= 10
                index += 1
            }
            guard index > start else { return nil }
        }
        guard index < bytes.count else { return nil }
        var offset = 0
        if bytes[index] == 90 || bytes[index] == 122 {
            index += 1
        } else if bytes[index] == 43 || bytes[index] == 45, let hours = number(index + 1, 2), index + 3 < bytes.count,
            bytes[index + 3] == 58, let minutes = number(index + 4, 2)
        {
            offset = (hours * 60 + minutes) * 60 * (bytes[index] == 45 ? -1 : 1)
            index += 6
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm), then seconds.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        return Double(seconds) + fraction
    }
}
