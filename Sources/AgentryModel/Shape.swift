import AgentryBasics
import Foundation

/// The declarative shape of a resource: one description drives the strict decoder, the JSON
/// Schemas in `schemas/` and the field reference, so the three cannot drift apart.
public indirect enum Shape: Sendable {
    case string(StringFormat)
    case integer(min: Int, max: Int)
    case boolean
    case list(Shape, minItems: Int = 0, unique: Bool = false)
    case object(ObjectShape)
    /// A mapping with free keys of `key` format and values of one shape.
    case map(key: StringFormat, value: Shape)
    /// One of several shapes, chosen by the node's type (a string or a mapping, say).
    case choice([Shape])
}

/// A field of an object shape.
public struct FieldShape: Sendable {
    public var name: String
    public var shape: Shape
    public var required: Bool
    public var doc: String
    /// The diagnostic when a required field is absent (`missing-owner` for an agent's owner).
    public var missingCode: Diagnostic.Code
    /// The diagnostic when the value breaks its format, if not the format's own code.
    public var invalidCode: Diagnostic.Code?

    public init(
        _ name: String, _ shape: Shape, required: Bool = false, missingCode: Diagnostic.Code = .missingField,
        invalidCode: Diagnostic.Code? = nil, doc: String
    ) {
        self.name = name
        self.shape = shape
        self.required = required
        self.doc = doc
        self.missingCode = missingCode
        self.invalidCode = invalidCode
    }
}

public struct ObjectShape: Sendable {
    public var title: String
    public var doc: String
    public var fields: [FieldShape]
    /// Keys refused with a specific code and message rather than a generic "unknown field".
    public var refusedKeys: [String: (code: Diagnostic.Code, message: String)]

    public init(
        _ title: String, doc: String, fields: [FieldShape],
        refusedKeys: [String: (code: Diagnostic.Code, message: String)] = [:]
    ) {
        self.title = title
        self.doc = doc
        self.fields = fields
        self.refusedKeys = refusedKeys
    }

    public func field(_ name: String) -> FieldShape? {
        fields.first { $0.name == name }
    }
}

/// A string's format: how the decoder checks it, which diagnostic it raises, and the JSON Schema
/// keywords that express the same rule.
public enum StringFormat: Sendable {
    /// Free text; `minLength` 1 unless the field may be empty.
    case text(minLength: Int = 1, maxLength: Int? = nil)
    /// Exactly this text.
    case constant(String)
    /// One of a closed set of words.
    case oneOf([String])
    /// An RFC 1123 DNS label: lower-case letters, digits and `-`, at most 63, no `-` at the ends.
    case dnsLabel
    /// An Agent Skills name: lower-case letters, digits, single `-` between them, at most 64.
    case skillName
    /// A size: an integer or decimal with an optional unit, `512Mi`, `4Gi`, `1.5G`.
    case quantity
    /// A duration: one or more `<integer><unit>` with units `ms`, `s`, `m`, `h`; `90s`, `1h30m`.
    case duration
    /// An environment variable name.
    case envName
    /// A key in the host's secret store: segments of `[A-Za-z0-9_.-]` joined by `/`.
    case secretRef
    /// An `http://` or `https://` URL.
    case url
    /// A relative path with no `..` segment.
    case relativePath
    /// A host name, optionally `*.` wildcarded and with a `:port`.
    case hostname
    /// A label key: an optional DNS-style prefix and `/`, then a name of up to 63 characters.
    case labelKey
    /// A five-field cron expression or a macro (`@daily`); see `CronSchedule`.
    case cron
    /// An IANA time zone name (`Europe/Paris`, `UTC`).
    case timeZone

    /// What the user should have written, for messages.
    public var expected: String {
        switch self {
        case .text(let minLength, let maxLength):
            var text = minLength > 0 ? "a non-empty string" : "a string"
            if let maxLength { text += " of at most \(maxLength) characters" }
            return text
        case .constant(let value): return "\"\(value)\""
        case .oneOf(let values): return "one of " + values.joined(separator: ", ")
        case .dnsLabel:
            return
                "a DNS label (lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)"
        case .skillName:
            return "a skill name (lower-case letters and digits separated by single '-', at most 64 characters)"
        case .quantity:
            return "a quantity such as 512Mi, 4Gi or 1G (units Ki, Mi, Gi, Ti, k, M, G, T), greater than zero"
        case .duration: return "a duration such as 90s, 15m or 1h30m (units ms, s, m, h), greater than zero"
        case .envName: return "an environment variable name (letters, digits and '_', not starting with a digit)"
        case .secretRef:
            return "a secret store key such as github/token (letters, digits, '_', '.', '-', segments joined by '/')"
        case .url: return "an http:// or https:// URL"
        case .relativePath: return "a relative path without '..' segments"
        case .hostname: return "a host name such as api.example.com, optionally with a :port or a leading *."
        case .labelKey: return "a label key such as team or example.com/tier"
        case .cron:
            return
                "a five-field cron expression (minute hour day-of-month month day-of-week) such as \"0 9 * * 1-5\" or \"*/15 * * * *\", or @hourly, @daily, @weekly, @monthly, @yearly"
        case .timeZone: return "an IANA time zone name such as UTC or Europe/Paris"
        }
    }

    /// The code a value that fails this format gets.
    public var code: Diagnostic.Code {
        switch self {
        case .dnsLabel, .skillName: return .invalidName
        case .quantity: return .invalidQuantity
        case .duration: return .invalidDuration
        default: return .invalidValue
        }
    }

    /// The ECMA-262 pattern for the JSON Schema, when the rule is a pattern.
    public var pattern: String? {
        switch self {
        case .text, .constant, .oneOf, .cron, .timeZone: return nil
        case .dnsLabel: return "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
        case .skillName: return "^[a-z0-9]+(-[a-z0-9]+)*$"
        case .quantity: return "^(?=[0-9.]*[1-9])[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
        case .duration: return "^(?=[0-9a-z]*[1-9])([0-9]+(ms|s|m|h))+$"
        case .envName: return "^[A-Za-z_][A-Za-z0-9_]*$"
        case .secretRef: return "^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
        case .url: return "^https?://[^\\s/?#]+[^\\s]*$"
        case .relativePath: return "^(?!/)(?!(.*/)?\\.\\.(/|$)).+$"
        case .hostname:
            return
                "^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?$"
        case .labelKey: return "^([a-z0-9]([a-z0-9.-]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
        }
    }

    public var maxLength: Int? {
        switch self {
        case .text(_, let maxLength): return maxLength
        case .skillName: return 64
        case .secretRef: return 253
        case .labelKey: return 317
        default: return nil
        }
    }

    public var minLength: Int {
        switch self {
        case .text(let minLength, _): return minLength
        default: return 1
        }
    }

    /// Whether `value` is acceptable. Hand-written rather than regex-driven: it runs for every
    /// string in the repository, and tests hold it to `pattern`.
    public func accepts(_ value: String) -> Bool {
        switch self {
        case .text(let minLength, let maxLength):
            if minLength == 0 && maxLength == nil { return true }
            let count = value.unicodeScalars.count
            return count >= minLength && (maxLength.map { count <= $0 } ?? true)
        case .constant(let expected): return value == expected
        case .oneOf(let values): return values.contains(value)
        case .dnsLabel: return Formats.isDNSLabel(value.utf8)
        case .skillName: return Formats.isSkillName(value)
        case .quantity: return Quantity(value) != nil
        case .duration: return DurationText.parse(value) != nil
        case .envName: return Formats.isEnvName(value)
        case .secretRef: return Formats.isSecretRef(value)
        case .url: return Formats.isURL(value)
        case .relativePath: return Formats.isRelativePath(value)
        case .hostname: return Formats.isHostname(value)
        case .labelKey: return Formats.isLabelKey(value)
        case .cron: return CronSchedule(value) != nil
        case .timeZone: return value.utf8.count <= 64 && TimeZone(identifier: value) != nil
        }
    }
}

/// Names of resources (agents, harnesses, models, environments): DNS labels.
public enum ResourceName {
    /// Whether `name` is a DNS label (and so safe as a file name, a path segment, a host name).
    public static func isValid(_ name: String) -> Bool { Formats.isDNSLabel(name.utf8) }
}

enum Formats {
    static func isLowerAlnum(_ byte: UInt8) -> Bool {
        (byte >= 97 && byte <= 122) || (byte >= 48 && byte <= 57)
    }

    static func isAlnum(_ byte: UInt8) -> Bool {
        isLowerAlnum(byte) || (byte >= 65 && byte <= 90)
    }

    static func isDNSLabel<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        guard let first = bytes.first, bytes.count <= 63 else { return false }
        var last = first
        for byte in bytes {
            guard isLowerAlnum(byte) || byte == UInt8(ascii: "-") else { return false }
            last = byte
        }
        return isLowerAlnum(first) && isLowerAlnum(last)
    }

    static func isSkillName(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard !bytes.isEmpty, bytes.count <= 64 else { return false }
        var previousWasHyphen = true  // forbids a leading hyphen
        for byte in bytes {
            if byte == UInt8(ascii: "-") {
                if previousWasHyphen { return false }
                previousWasHyphen = true
            } else if isLowerAlnum(byte) {
                previousWasHyphen = false
            } else {
                return false
            }
        }
        return !previousWasHyphen
    }

    static func isEnvName(_ value: String) -> Bool {
        guard let first = value.utf8.first, !(first >= 48 && first <= 57) else { return false }
        return value.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") }
    }

    static func isSecretRef(_ value: String) -> Bool {
        guard !value.isEmpty, value.utf8.count <= 253 else { return false }
        let segments = value.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        return segments.allSatisfy { segment in
            !segment.isEmpty
                && segment.allSatisfy {
                    isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
                }
        }
    }

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 32 || (byte >= 9 && byte <= 13)
    }

    static func isURL(_ value: String) -> Bool {
        let rest: Substring
        if value.hasPrefix("https://") {
            rest = value.dropFirst(8)
        } else if value.hasPrefix("http://") {
            rest = value.dropFirst(7)
        } else {
            return false
        }
        guard let first = rest.utf8.first, first != UInt8(ascii: "/"), first != UInt8(ascii: "?"),
            first != UInt8(ascii: "#")
        else { return false }
        return !rest.unicodeScalars.contains(where: isECMAWhitespace)
    }

    /// ECMA-262 `\s`, which JSON Schema patterns use (not Unicode's White_Space list).
    static func isECMAWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x20, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF:
            return true
        default:
            return false
        }
    }

    /// ECMA-262 `.` matches anything but these line terminators.
    static func isECMALineTerminator(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "\n" || scalar == "\r" || scalar == "\u{2028}" || scalar == "\u{2029}"
    }

    static func isRelativePath(_ value: String) -> Bool {
        guard !value.isEmpty, !value.hasPrefix("/") else { return false }
        guard !value.unicodeScalars.contains(where: isECMALineTerminator) else { return false }
        return !value.split(separator: "/", omittingEmptySubsequences: false).contains("..")
    }

    static func isHostLabel(_ label: Substring.UTF8View) -> Bool {
        guard let first = label.first, let last = label.last else { return false }
        return isAlnum(first) && isAlnum(last) && label.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") }
    }

    static func isHostname(_ value: String) -> Bool {
        var host = Substring(value)
        if host.hasPrefix("*.") { host = host.dropFirst(2) }
        if let colon = host.lastIndex(of: ":") {
            let port = host[host.index(after: colon)...]
            guard (1...5).contains(port.count), port.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
            host = host[..<colon]
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty && labels.allSatisfy { isHostLabel($0.utf8) }
    }

    static func isLabelKey(_ value: String) -> Bool {
        var name = Substring(value)
        if let slash = value.firstIndex(of: "/") {
            let prefix = value[..<slash].utf8
            guard let first = prefix.first, let last = prefix.last, isLowerAlnum(first), isLowerAlnum(last),
                prefix.allSatisfy({ isLowerAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") })
            else { return false }
            name = value[value.index(after: slash)...]
        }
        let bytes = name.utf8
        guard let first = bytes.first, let last = bytes.last, bytes.count <= 63 else { return false }
        return isAlnum(first) && isAlnum(last)
            && bytes.allSatisfy {
                isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
            }
    }
}

/// A size in bytes, written as `512Mi`, `4Gi`, `1.5G` or a plain number of bytes.
public struct Quantity: Sendable, Hashable, CustomStringConvertible {
    public var bytes: UInt64
    public var text: String

    public init?(_ text: String) {
        var number = Substring(text)
        var multiplier: Double = 1
        let units: [(String, Double)] = [
            ("Ki", 1024), ("Mi", 1024 * 1024), ("Gi", 1024 * 1024 * 1024), ("Ti", 1024 * 1024 * 1024 * 1024),
            ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12),
        ]
        for (suffix, factor) in units where number.hasSuffix(suffix) {
            multiplier = factor
            number = number.dropLast(suffix.count)
            break
        }
        let parts = number.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count),
            parts.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } }),
            let value = Double(number), value > 0
        else { return nil }
        // Absurd sizes parse (saturating): whether they fit a host is apply's question, not the format's.
        let bytes = value * multiplier
        self.bytes = bytes >= 1.8e19 ? UInt64.max : UInt64(bytes.rounded(.up))
        self.text = text
    }

    public var description: String { text }
}
