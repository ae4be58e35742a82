import CYaml

/// Bounds that keep hostile documents from costing more than a normal one.
public struct YAMLLimits: Sendable {
    /// Deepest nesting of sequences and mappings.
    public var maxDepth: Int
    /// Most nodes a file may produce, counting every node an alias expands to.
    public var maxNodes: Int

    public init(maxDepth: Int = 64, maxNodes: Int = 200_000) {
        self.maxDepth = maxDepth
        self.maxNodes = maxNodes
    }

    public static let `default` = YAMLLimits()
}

/// Why a file could not be composed into nodes.
public struct YAMLError: Error, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// libyaml rejected the text.
        case syntax
        /// Nesting, node count or alias expansion went past `YAMLLimits`.
        case limit
        /// A key appears twice in one mapping.
        case duplicateKey
        /// An alias names an anchor that was never defined.
        case undefinedAlias
    }

    public var kind: Kind
    public var message: String
    public var mark: SourceMark

    public init(kind: Kind, message: String, mark: SourceMark) {
        self.kind = kind
        self.message = message
        self.mark = mark
    }
}

/// One document of a YAML stream. `root` is nil for an empty document (`---` with nothing after).
public struct YAMLDocument: Sendable {
    public var root: YAMLNode?
    public var mark: SourceMark
}

/// Composes YAML text into nodes straight from libyaml's event stream.
///
/// Unlike a recursive composer this one bounds nesting depth and the total node count (aliases
/// count as the nodes they expand to, so an alias bomb stops at the budget instead of filling
/// memory), rejects duplicate keys, and keeps each scalar's style so strict typing can tell `yes`
/// from `"yes"`.
public enum YAMLComposer {
    /// Composes every document in `bytes` (UTF-8).
    public static func compose(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: YAMLLimits = .default
    ) -> Result<[YAMLDocument], YAMLError> {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            return .failure(YAMLError(kind: .syntax, message: "could not initialise the YAML parser", mark: .start))
        }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        yaml_parser_set_input_string(&parser, bytes.baseAddress, bytes.count)
        var state = ComposerState(limits: limits)
        do {
            var documents: [YAMLDocument] = []
            while true {
                var event = try state.next(&parser)
                defer { yaml_event_delete(&event) }
                switch event.type {
                case YAML_STREAM_START_EVENT, YAML_DOCUMENT_END_EVENT:
                    continue
                case YAML_STREAM_END_EVENT:
                    return .success(documents)
                case YAML_DOCUMENT_START_EVENT:
                    let mark = SourceMark(event.start_mark)
                    state.anchors.removeAll(keepingCapacity: true)
                    let root = try state.composeNode(&parser, depth: 0)
                    documents.append(YAMLDocument(root: root, mark: mark))
                default:
                    continue
                }
            }
        } catch let error as YAMLError {
            return .failure(error)
        } catch {
            return .failure(YAMLError(kind: .syntax, message: "\(error)", mark: .start))
        }
    }

    /// Convenience for tests and small inputs.
    public static func compose(_ text: String, limits: YAMLLimits = .default) -> Result<[YAMLDocument], YAMLError> {
        var copy = text
        return copy.withUTF8 { compose($0, limits: limits) }
    }
}

extension SourceMark {
    init(_ mark: yaml_mark_t) {
        self.init(line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }
}

private struct ComposerState {
    let limits: YAMLLimits
    var nodeCount = 0
    /// Anchored nodes with the number of nodes each expands to.
    var anchors: [String: (node: YAMLNode, size: Int)] = [:]

    init(limits: YAMLLimits) {
        self.limits = limits
    }

    mutating func next(_ parser: inout yaml_parser_t) throws -> yaml_event_t {
        var event = yaml_event_t()
        guard yaml_parser_parse(&parser, &event) == 1 else {
            throw Self.syntaxError(parser)
        }
        return event
    }

    static func syntaxError(_ parser: yaml_parser_t) -> YAMLError {
        let problem = parser.problem.map { String(cString: $0) } ?? "invalid YAML"
        var message = problem
        if let context = parser.context.map({ String(cString: $0) }) {
            message = "\(problem) \(context)"
        }
        // libyaml's own nesting guard (yaml_set_max_nest_level) is a limit, not a syntax error.
        let kind: YAMLError.Kind = problem.contains("nesting level") ? .limit : .syntax
        return YAMLError(kind: kind, message: message, mark: SourceMark(parser.problem_mark))
    }

    mutating func count(_ added: Int, at mark: SourceMark) throws {
        nodeCount += added
        if nodeCount > limits.maxNodes {
            throw YAMLError(
                kind: .limit,
                message: "the document expands to more than \(limits.maxNodes) nodes (an alias bomb?)",
                mark: mark)
        }
    }

    static func text(_ pointer: UnsafeMutablePointer<yaml_char_t>?, _ length: Int) -> String {
        guard let pointer else { return "" }
        return String(decoding: UnsafeBufferPointer(start: pointer, count: length), as: UTF8.self)
    }

    static func cString(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        guard let pointer else { return nil }
        return String(cString: pointer)
    }

    /// Parses the next event and composes the node it starts; returns nil at a document end.
    mutating func composeNode(_ parser: inout yaml_parser_t, depth: Int) throws -> YAMLNode? {
        var event = try next(&parser)
        defer { yaml_event_delete(&event) }
        return try composeNode(&parser, from: &event, depth: depth)
    }

    mutating func composeNode(
        _ parser: inout yaml_parser_t, from event: inout yaml_event_t, depth: Int
    ) throws -> YAMLNode? {
        let mark = SourceMark(event.start_mark)
        switch event.type {
        case YAML_DOCUMENT_END_EVENT, YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            return nil
        case YAML_ALIAS_EVENT:
            let name = Self.cString(event.data.alias.anchor) ?? ""
            guard let anchored = anchors[name] else {
                throw YAMLError(
                    kind: .undefinedAlias, message: "alias *\(name) names no anchor defined before it", mark: mark)
            }
            try count(anchored.size, at: mark)
            return anchored.node
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let style: ScalarStyle
            switch scalar.style {
            case YAML_SINGLE_QUOTED_SCALAR_STYLE: style = .singleQuoted
            case YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = .doubleQuoted
            case YAML_LITERAL_SCALAR_STYLE: style = .literal
            case YAML_FOLDED_SCALAR_STYLE: style = .folded
            default: style = .plain
            }
            var tag = Self.cString(scalar.tag)
            if tag == "!" { tag = nil }
            try count(1, at: mark)
            let node = YAMLNode(.scalar(Self.text(scalar.value, scalar.length), style), mark: mark, tag: tag)
            if let anchor = Self.cString(scalar.anchor) { anchors[anchor] = (node, 1) }
            return node
        case YAML_SEQUENCE_START_EVENT:
            try enter(depth: depth, at: mark)
            let anchor = Self.cString(event.data.sequence_start.anchor)
            let tag = Self.cString(event.data.sequence_start.tag)
            let before = nodeCount
            try count(1, at: mark)
            var items: [YAMLNode] = []
            while let item = try composeNode(&parser, depth: depth + 1) {
                items.append(item)
            }
            let node = YAMLNode(.sequence(items), mark: mark, tag: tag)
            if let anchor { anchors[anchor] = (node, nodeCount - before) }
            return node
        case YAML_MAPPING_START_EVENT:
            try enter(depth: depth, at: mark)
            let anchor = Self.cString(event.data.mapping_start.anchor)
            let tag = Self.cString(event.data.mapping_start.tag)
            let before = nodeCount
            try count(1, at: mark)
            var pairs: [YAMLPair] = []
            var seen: [String: SourceMark] = [:]
            while let key = try composeNode(&parser, depth: depth + 1) {
                guard let value = try composeNode(&parser, depth: depth + 1) else { break }
                if case .scalar(let text, _) = key.content {
                    if let first = seen[text] {
                        throw YAMLError(
                            kind: .duplicateKey,
                            message: "duplicate key \"\(text)\" (first at line \(first.line), column \(first.column))",
                            mark: key.mark)
                    }
                    seen[text] = key.mark
                }
                pairs.append(YAMLPair(key: key, value: value))
            }
            let node = YAMLNode(.mapping(pairs), mark: mark, tag: tag)
            if let anchor { anchors[anchor] = (node, nodeCount - before) }
            return node
        default:
            return nil
        }
    }

    func enter(depth: Int, at mark: SourceMark) throws {
        if depth >= limits.maxDepth {
            throw YAMLError(kind: .limit, message: "nesting is deeper than \(limits.maxDepth) levels", mark: mark)
        }
    }
}
