import AgentryYAML

/// Checks composed YAML nodes against a `Shape`, collecting every problem in one pass.
struct ShapeChecker {
    let file: String
    /// Unknown keys are errors in resources; in SKILL.md front matter they are warnings.
    var unknownField: (severity: Diagnostic.Severity, code: Diagnostic.Code) = (.error, .unknownField)
    var diagnostics: [Diagnostic] = []

    init(file: String) {
        self.file = file
    }

    mutating func report(
        _ code: Diagnostic.Code, _ mark: SourceMark, _ message: String, severity: Diagnostic.Severity = .error
    ) {
        diagnostics.append(Diagnostic(severity, code, file: file, at: mark, message))
    }

    static func join(_ path: String, _ key: String) -> String {
        path.isEmpty ? key : path + "." + key
    }

    mutating func check(_ node: YAMLNode, _ shape: Shape, path: String, invalidCode: Diagnostic.Code? = nil) {
        if let tag = node.tag, !Self.coreTags.contains(tag) {
            report(
                .unsupportedYAML, node.mark,
                "\(path): the tag \(Self.shortTag(tag)) is not supported; write plain YAML values")
            return
        }
        switch shape {
        case .string(let format):
            checkString(node, format, path: path, invalidCode: invalidCode)
        case .integer(let min, let max):
            guard case .int(let value) = node.resolved else {
                var message = "\(path): expected an integer, got \(Self.describe(node))"
                if case .string(let text) = node.resolved, Int(text) != nil { message += "; remove the quotes" }
                report(.wrongType, node.mark, message)
                return
            }
            if value < min || value > max {
                report(.invalidValue, node.mark, "\(path): expected an integer from \(min) to \(max), got \(value)")
            }
        case .boolean:
            if case .bool = node.resolved { return }
            if case .scalar(let text, .plain) = node.content, node.tag == nil,
                Self.yaml11Booleans.contains(text.lowercased())
            {
                let meant = Self.yaml11True.contains(text.lowercased()) ? "true" : "false"
                report(
                    .yaml11Boolean, node.mark,
                    "\(path): expected true or false, got \(text); agentry reads YAML 1.2, where `\(text)` is a string, not a boolean: write \(meant)"
                )
            } else {
                report(.wrongType, node.mark, "\(path): expected true or false, got \(Self.describe(node))")
            }
        case .list(let item, let minItems, let unique):
            guard let items = node.sequence else {
                report(.wrongType, node.mark, "\(path): expected a list, got \(Self.describe(node))")
                return
            }
            if items.count < minItems {
                report(
                    .invalidValue, node.mark,
                    "\(path): expected at least \(minItems) item\(minItems == 1 ? "" : "s"), got \(items.count)")
            }
            var seen: [String: Int] = [:]
            for (index, element) in items.enumerated() {
                check(element, item, path: "\(path)[\(index)]")
                if unique, let text = element.scalarText, element.resolved != nil {
                    if let first = seen[text] {
                        report(
                            .invalidValue, element.mark,
                            "\(path)[\(index)]: \"\(text)\" is already listed at \(path)[\(first)]; items must be unique"
                        )
                    } else {
                        seen[text] = index
                    }
                }
            }
        case .object(let object):
            checkObject(node, object, path: path)
        case .map(let keyFormat, let value):
            guard let pairs = node.pairs else {
                report(.wrongType, node.mark, "\(path): expected a mapping, got \(Self.describe(node))")
                return
            }
            for pair in pairs {
                guard let key = checkedKey(pair.key, path: path) else { continue }
                if !(keyFormat.accepts(key) && Self.withinLength(key, keyFormat)) {
                    report(
                        keyFormat.code == .invalidName ? .invalidName : .invalidValue, pair.key.mark,
                        "\(path): key \"\(key)\" is not valid; expected \(keyFormat.expected)")
                }
                check(pair.value, value, path: Self.join(path, key))
            }
        case .choice(let alternatives):
            let picked = alternatives.first { Self.matchesType(node, $0) }
            guard let picked else {
                let expected = alternatives.map(Self.typeName).joined(separator: " or ")
                report(.wrongType, node.mark, "\(path): expected \(expected), got \(Self.describe(node))")
                return
            }
            check(node, picked, path: path, invalidCode: invalidCode)
        }
    }

    mutating func checkString(_ node: YAMLNode, _ format: StringFormat, path: String, invalidCode: Diagnostic.Code?) {
        guard case .string(let text) = node.resolved else {
            var message = "\(path): expected \(format.expected), got \(Self.describe(node))"
            if case .scalar(let raw, .plain) = node.content, node.tag == nil {
                message += "; quote it (\"\(raw)\") if you mean the text"
            }
            report(.wrongType, node.mark, message)
            return
        }
        let code = invalidCode ?? format.code
        switch format {
        case .oneOf(let values):
            if !values.contains(text) {
                report(
                    code, node.mark,
                    "\(path): expected \(format.expected), got \"\(text)\"" + Suggest.hint(text, values))
            }
        case .constant(let value):
            if text != value {
                report(code, node.mark, "\(path): expected \"\(value)\", got \"\(text)\"")
            }
        case .text(let minLength, _):
            if !format.accepts(text) {
                let count = text.unicodeScalars.count
                if count < minLength {
                    report(.invalidValue, node.mark, "\(path): expected \(format.expected), got an empty string")
                } else {
                    report(
                        .invalidValue, node.mark,
                        "\(path): expected \(format.expected), got \(count) characters")
                }
            }
        default:
            if !(format.accepts(text) && Self.withinLength(text, format)) {
                report(code, node.mark, "\(path): expected \(format.expected), got \"\(Self.clip(text))\"")
            }
        }
    }

    mutating func checkObject(_ node: YAMLNode, _ object: ObjectShape, path: String) {
        guard let pairs = node.pairs else {
            report(
                .wrongType, node.mark,
                "\(path.isEmpty ? "document" : path): expected a mapping, got \(Self.describe(node))")
            return
        }
        var present = Set<String>()
        var likelyTypos = Set<String>()
        for pair in pairs {
            guard let key = checkedKey(pair.key, path: path) else { continue }
            present.insert(key)
            let place = Self.join(path, key)
            if let refused = object.refusedKeys[key] {
                report(refused.code, pair.key.mark, "\(place): \(refused.message)")
                continue
            }
            guard let field = object.field(key) else {
                let names = object.fields.map(\.name)
                if let meant = Suggest.closest(key, names) { likelyTypos.insert(meant) }
                report(
                    unknownField.code, pair.key.mark,
                    "\(place): unknown field \"\(key)\" in \(object.title)" + Suggest.hint(key, names)
                        + (Suggest.closest(key, names) == nil
                            ? "; expected one of " + names.joined(separator: ", ") : ""),
                    severity: unknownField.severity)
                continue
            }
            check(pair.value, field.shape, path: place, invalidCode: field.invalidCode)
        }
        // A misspelt required key is reported once, as the unknown field with its suggestion.
        for field in object.fields
        where field.required && !present.contains(field.name) && !likelyTypos.contains(field.name) {
            report(
                field.missingCode, node.mark,
                "\(path.isEmpty ? "document" : path): missing required field \"\(field.name)\": \(field.doc)")
        }
    }

    /// A mapping key as text, or nil after reporting why it cannot be one.
    mutating func checkedKey(_ key: YAMLNode, path: String) -> String? {
        guard case .scalar(let text, let style) = key.content else {
            report(.unsupportedYAML, key.mark, "\(path): mapping keys must be strings, not \(Self.describe(key))")
            return nil
        }
        if text == "<<" && style == .plain {
            report(
                .unsupportedYAML, key.mark,
                "\(path): YAML merge keys (<<) are not supported; write the fields out, or use an anchor for a whole value"
            )
            return nil
        }
        guard case .string = key.resolved else {
            report(.wrongType, key.mark, "\(path): mapping keys must be strings, got \(Self.describe(key)); quote it")
            return nil
        }
        return text
    }

    // MARK: - Descriptions

    static let coreTags: Set<String> = [
        "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:float", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq",
    ]

    static let yaml11True: Set<String> = ["yes", "y", "on"]
    static let yaml11Booleans: Set<String> = ["yes", "no", "y", "n", "on", "off"]

    static func shortTag(_ tag: String) -> String {
        tag.hasPrefix("tag:yaml.org,2002:") ? "!!" + tag.dropFirst("tag:yaml.org,2002:".count) : tag
    }

    static func withinLength(_ text: String, _ format: StringFormat) -> Bool {
        guard let maxLength = format.maxLength else { return true }
        return text.unicodeScalars.count <= maxLength
    }

    static func clip(_ text: String) -> String {
        text.count > 80 ? String(text.prefix(77)) + "..." : text
    }

    static func describe(_ node: YAMLNode) -> String {
        switch node.content {
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        case .scalar:
            switch node.resolved {
            case .null, nil: return "null (an empty value)"
            case .bool(let value): return "the boolean \(value)"
            case .int(let value): return "the integer \(value)"
            case .float: return "the number \(node.scalarText ?? "")"
            case .string(let text): return "the string \"\(clip(text))\""
            }
        }
    }

    static func typeName(_ shape: Shape) -> String {
        switch shape {
        case .string: return "a string"
        case .integer: return "an integer"
        case .boolean: return "true or false"
        case .list: return "a list"
        case .object, .map: return "a mapping"
        case .choice(let alternatives): return alternatives.map(typeName).joined(separator: " or ")
        }
    }

    static func matchesType(_ node: YAMLNode, _ shape: Shape) -> Bool {
        switch (node.content, shape) {
        case (.sequence, .list), (.mapping, .object), (.mapping, .map): return true
        case (.scalar, .string):
            if case .string = node.resolved { return true }
            return false
        case (.scalar, .integer):
            if case .int = node.resolved { return true }
            return false
        case (.scalar, .boolean):
            if case .bool = node.resolved { return true }
            return false
        default: return false
        }
    }
}

/// "Did you mean" suggestions by edit distance.
public enum Suggest {
    /// The candidate closest to `word`, if it is close enough to be a likely typo.
    public static func closest(_ word: String, _ candidates: [String]) -> String? {
        let lowered = word.lowercased()
        if let sameIgnoringCase = candidates.first(where: { $0.lowercased() == lowered }) { return sameIgnoringCase }
        let limit = word.count <= 3 ? 1 : (word.count <= 6 ? 2 : 3)
        var best: (String, Int)?
        for candidate in candidates {
            let distance = editDistance(lowered, candidate.lowercased(), limit: limit)
            if distance <= limit, distance < (best?.1 ?? .max) { best = (candidate, distance) }
        }
        return best?.0
    }

    static func hint(_ word: String, _ candidates: [String]) -> String {
        closest(word, candidates).map { "; did you mean \"\($0)\"?" } ?? ""
    }

    /// Levenshtein distance, giving up early past `limit`.
    static func editDistance(_ a: String, _ b: String, limit: Int) -> Int {
        let a = Array(a.unicodeScalars)
        let b = Array(b.unicodeScalars)
        if abs(a.count - b.count) > limit { return limit + 1 }
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            var rowMinimum = current[0]
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                rowMinimum = min(rowMinimum, current[j])
            }
            if rowMinimum > limit { return limit + 1 }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
