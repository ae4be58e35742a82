import Testing

@testable import AgentryGateway

/// The `model` a request names is found where a provider's parser finds it, however it is spelt,
/// and only there; pinning replaces every spelling of it.
@Suite struct ModelFieldTests {
    func models(_ json: String) -> [String] { ModelField.find(in: Array(json.utf8)).map(\.value) }

    @Test func onlyTopLevelMembersCount() {
        #expect(models(#"{"model": "a", "messages": [{"model": "b", "content": "\"model\": \"c\""}]}"#) == ["a"])
        #expect(models(#" { "x" : {"model": "n"} , "model" : "top" } "#) == ["top"])
        #expect(models(#"{"messages": [], "max_tokens": 5}"#) == [])
        #expect(models(#"["model", "a"]"#) == [] && models("not json") == [] && models("") == [])
        #expect(models(#"{"model": 5}"#) == [], "only a string names a model")
    }

    @Test func everySpellingIsFoundAndReplaced() {
        let tricky = #"{"model": "cheap", "mod\u0065l": "opus", "model": "x\"y"}"#
        #expect(models(tricky) == ["cheap", "opus", "x\"y"])
        let pinned = String(decoding: ModelField.replacing(Array(tricky.utf8), with: "pinned")!, as: UTF8.self)
        #expect(pinned == #"{"model": "pinned", "mod\u0065l": "pinned", "model": "pinned"}"#)
        #expect(ModelField.replacing(Array(#"{"a": 1}"#.utf8), with: "m") == nil)
    }

    @Test func hugeNestedBodiesAreScannedNotParsed() {
        let nested =
            "{\"messages\": " + String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
            + ", \"model\": \"deep\"}"
        #expect(models(nested) == ["deep"])
        #expect(models("{\"model\": \"m\", \"x\": " + String(repeating: "[", count: 100_000)) == ["m"], "unclosed")
    }
}
