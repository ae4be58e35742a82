import AgentryYAML
import Testing

@Suite struct YAMLComposerTests {
    func single(_ text: String) throws -> YAMLNode {
        let documents = try YAMLComposer.compose(text).get()
        return try #require(documents.first?.root)
    }

    @Test func keepsPositionsOfKeysAndValues() throws {
        let root = try single("a: 1\nb:\n  c: [x, y]\n")
        let pair = try #require(root.pair("b"))
        #expect(pair.key.mark == SourceMark(line: 2, column: 1))
        let c = try #require(pair.value["c"])
        #expect(c.mark == SourceMark(line: 3, column: 6))
        #expect(c.sequence?.map(\.mark.column) == [7, 10])
    }

    @Test func resolvesScalarsByYAML12CoreSchema() throws {
        let root = try single(
            "a: yes\nb: true\nc: 'true'\nd: 12\ne: 1.5\nf: ~\ng:\nh: 0x1F\ni: on\nj: 1e3\nk: \"12\"\nl: .5\nm: 1.2.3\n")
        #expect(root["a"]?.resolved == .string("yes"))
        #expect(root["b"]?.resolved == .bool(true))
        #expect(root["c"]?.resolved == .string("true"))
        #expect(root["d"]?.resolved == .int(12))
        #expect(root["e"]?.resolved == .float(1.5))
        #expect(root["f"]?.resolved == .null)
        #expect(root["g"]?.resolved == .null)
        #expect(root["h"]?.resolved == .int(31))
        #expect(root["i"]?.resolved == .string("on"))
        #expect(root["j"]?.resolved == .float(1000))
        #expect(root["k"]?.resolved == .string("12"))
        #expect(root["l"]?.resolved == .float(0.5))
        #expect(root["m"]?.resolved == .string("1.2.3"))
    }

    @Test func explicitTagsWin() throws {
        let root = try single("a: !!str 12\nb: !!int \"7\"\n")
        #expect(root["a"]?.resolved == .string("12"))
        #expect(root["b"]?.resolved == .int(7))
    }

    @Test func composesEveryDocumentOfAStream() throws {
        let documents = try YAMLComposer.compose("a: 1\n---\nb: 2\n---\n").get()
        #expect(documents.count == 3)
        #expect(documents[1].root?["b"]?.resolved == .int(2))
        #expect(documents[2].root?.resolved == .null)
    }

    @Test func rejectsDuplicateKeysWithBothPositions() throws {
        let result = YAMLComposer.compose("a: 1\nb: 2\na: 3\n")
        guard case .failure(let error) = result else {
            Issue.record("duplicate key accepted")
            return
        }
        #expect(error.kind == .duplicateKey)
        #expect(error.mark == SourceMark(line: 3, column: 1))
        #expect(error.message.contains("line 1"))
    }

    @Test func expandsAliasesWithinBudget() throws {
        let root = try single("base: &b {x: 1}\ncopy: *b\n")
        #expect(root["copy"]?["x"]?.resolved == .int(1))
    }

    @Test func stopsAliasBombsAtTheNodeBudget() {
        var text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        var previous = "a"
        for name in ["b", "c", "d", "e", "f", "g", "h", "i"] {
            text += "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 10).joined(separator: ", ") + "]\n"
            previous = name
        }
        let result = YAMLComposer.compose(text, limits: YAMLLimits(maxDepth: 64, maxNodes: 100_000))
        guard case .failure(let error) = result else {
            Issue.record("alias bomb composed")
            return
        }
        #expect(error.kind == .limit)
    }

    @Test func stopsDeepNestingWithoutRecursingIntoIt() {
        let text = String(repeating: "[", count: 50_000) + String(repeating: "]", count: 50_000)
        guard case .failure(let error) = YAMLComposer.compose(text) else {
            Issue.record("deep nesting composed")
            return
        }
        #expect(error.kind == .limit)
    }

    @Test func reportsSyntaxErrorsWithAPosition() {
        guard case .failure(let error) = YAMLComposer.compose("a: [1, 2\nb: 3\n") else {
            Issue.record("broken flow sequence accepted")
            return
        }
        #expect(error.kind == .syntax)
        #expect(error.mark.line >= 1)
    }

    @Test func undefinedAliasIsAnError() {
        guard case .failure(let error) = YAMLComposer.compose("a: *nowhere\n") else {
            Issue.record("undefined alias accepted")
            return
        }
        #expect(error.kind == .undefinedAlias || error.kind == .syntax)
    }
}
