/// A position in a source file, 1-based, columns counted in Unicode scalars (as libyaml does).
public struct SourceMark: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public static let start = SourceMark(line: 1, column: 1)

    public static func < (lhs: SourceMark, rhs: SourceMark) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }

    public var description: String { "\(line):\(column)" }
}

/// How a scalar was written. Only plain scalars are subject to type resolution.
public enum ScalarStyle: Sendable, Hashable {
    case plain, singleQuoted, doubleQuoted, literal, folded
}

/// A composed YAML node with its position. Aliases are already expanded (within a budget).
public struct YAMLNode: Sendable {
    public enum Content: Sendable {
        case scalar(String, ScalarStyle)
        case sequence([YAMLNode])
        case mapping([YAMLPair])
    }

    public var content: Content
    public var mark: SourceMark
    /// The explicit tag, if the document wrote one (`!!str`, `!custom`), in its resolved long form.
    public var tag: String?

    public init(_ content: Content, mark: SourceMark, tag: String? = nil) {
        self.content = content
        self.mark = mark
        self.tag = tag
    }

    /// The value of `key` when this node is a mapping with a scalar key of that text.
    public subscript(key: String) -> YAMLNode? {
        guard case .mapping(let pairs) = content else { return nil }
        for pair in pairs where pair.key.scalarText == key {
            return pair.value
        }
        return nil
    }

    /// The pair whose scalar key is `key`, so callers can point at the key's position.
    public func pair(_ key: String) -> YAMLPair? {
        guard case .mapping(let pairs) = content else { return nil }
        return pairs.first { $0.key.scalarText == key }
    }

    /// The text of a scalar node, whatever its resolved type.
    public var scalarText: String? {
        if case .scalar(let text, _) = content { return text }
        return nil
    }

    public var sequence: [YAMLNode]? {
        if case .sequence(let items) = content { return items }
        return nil
    }

    public var pairs: [YAMLPair]? {
        if case .mapping(let pairs) = content { return pairs }
        return nil
    }

    /// The node's value under the YAML 1.2 core schema (what a JSON Schema validator would see).
    public var resolved: ResolvedScalar? {
        guard case .scalar(let text, let style) = content else { return nil }
        return ResolvedScalar.resolve(text, style: style, tag: tag)
    }
}

public struct YAMLPair: Sendable {
    public var key: YAMLNode
    public var value: YAMLNode

    public init(key: YAMLNode, value: YAMLNode) {
        self.key = key
        self.value = value
    }
}

/// A scalar's type under the YAML 1.2 core schema. YAML 1.1 booleans (`yes`, `on`) stay strings.
public enum ResolvedScalar: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)

    static let tagPrefix = "tag:yaml.org,2002:"

    public static func resolve(_ text: String, style: ScalarStyle, tag: String?) -> ResolvedScalar {
        if let tag {
            switch tag {
            case tagPrefix + "str": return .string(text)
            case tagPrefix + "null": return .null
            case tagPrefix + "bool": return resolvePlain(text).boolValue.map(ResolvedScalar.bool) ?? .string(text)
            case tagPrefix + "int":
                if case .int(let value) = resolvePlain(text) { return .int(value) }
                return .string(text)
            case tagPrefix + "float":
                switch resolvePlain(text) {
                case .int(let value): return .float(Double(value))
                case .float(let value): return .float(value)
                default: return .string(text)
                }
            default:
                // "!" (non-specific tag on a quoted scalar) and unknown tags: the text as written.
                return .string(text)
            }
        }
        guard style == .plain else { return .string(text) }
        return resolvePlain(text)
    }

    var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    static func resolvePlain(_ text: String) -> ResolvedScalar {
        let utf8 = text.utf8
        guard let first = utf8.first else { return .null }
        // Fast exit: most scalars are words that cannot be null, bool or number.
        let mayBeSpecial =
            first == UInt8(ascii: "~") || first == UInt8(ascii: "n") || first == UInt8(ascii: "N")
            || first == UInt8(ascii: "t") || first == UInt8(ascii: "T") || first == UInt8(ascii: "f")
            || first == UInt8(ascii: "F") || first == UInt8(ascii: ".") || first == UInt8(ascii: "-")
            || first == UInt8(ascii: "+") || (first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9"))
        guard mayBeSpecial else { return .string(text) }
        switch text {
        case "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .float(.infinity)
        case "-.inf", "-.Inf", "-.INF": return .float(-.infinity)
        case ".nan", ".NaN", ".NAN": return .float(.nan)
        default: break
        }
        if let value = parseInteger(text) { return .int(value) }
        if isCoreFloat(text), let value = Double(text) { return .float(value) }
        return .string(text)
    }

    static func parseInteger(_ text: String) -> Int? {
        if text.hasPrefix("0x") || text.hasPrefix("0o") {
            let digits = text.dropFirst(2)
            let radix = text.hasPrefix("0x") ? 16 : 8
            // Int(_:radix:) would accept a sign after the prefix; YAML does not.
            guard !digits.isEmpty, digits.allSatisfy({ $0.isHexDigit && Int(String($0), radix: radix) != nil }) else {
                return nil
            }
            return Int(digits, radix: radix)
        }
        var digits = Substring(text)
        if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return Int(text)
    }

    /// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
    static func isCoreFloat(_ text: String) -> Bool {
        var bytes = Array(text.utf8)[...]
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
        func digitRun() -> Int {
            var count = 0
            while let byte = bytes.first, byte >= 48 && byte <= 57 {
                bytes = bytes.dropFirst()
                count += 1
            }
            return count
        }
        let whole = digitRun()
        var fraction = 0
        var hasDot = false
        if bytes.first == UInt8(ascii: ".") {
            hasDot = true
            bytes = bytes.dropFirst()
            fraction = digitRun()
        }
        if whole == 0 && fraction == 0 { return false }
        if whole == 0 && !hasDot { return false }
        if let exponent = bytes.first, exponent == UInt8(ascii: "e") || exponent == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
                bytes = bytes.dropFirst()
            }
            if digitRun() == 0 { return false }
        }
        return bytes.isEmpty
    }
}
