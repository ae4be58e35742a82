import Testing

@testable import AgentryGateway

/// The usage read off an answer does not depend on how the answer was cut into chunks.
@Suite struct UsageMeterTests {
    let stream = """
        event: message_start\r
        data: {"type": "message_start", "message": {"usage": {"input_tokens": 21, "output_tokens": 1}}}\r
        \r
        data: {"type": "content_block_delta", "delta": {"text": "a \\"usage\\" word, not the field"}}

        data: {"type":"message_delta","usage":{"output_tokens":9}}

        data: [DONE]
        """

    func meter(_ text: String, chunks size: Int, contentType: String = "text/event-stream") -> UsageMeter {
        var meter = UsageMeter(contentType: contentType)
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            meter.feed(bytes[start..<min(start + size, bytes.count)])
            start += size
        }
        meter.finish()
        return meter
    }

    @Test(arguments: [1, 2, 7, 64, 100_000])
    func eventsSplitAnywhereAreCounted(size: Int) {
        let counted = meter(stream, chunks: size)
        #expect(counted.inputTokens == 21 && counted.outputTokens == 9, "chunks of \(size)")
    }

    @Test func aJSONAnswerIsReadWhole() {
        let counted = meter(
            #"{"id": "c1", "usage": {"prompt_tokens": 13, "completion_tokens": 5}}"#, chunks: 3,
            contentType: "application/json")
        #expect(counted.inputTokens == 13 && counted.outputTokens == 5)
    }

    @Test func anOverlongLineIsSkippedAndTheNextOneRead() {
        let long =
            "data: {\"usage\": {\"input_tokens\": 99, \"pad\": \"" + String(repeating: "x", count: 1 << 20) + "\"}}\n\n"
        let counted = meter(long + "data: {\"usage\": {\"output_tokens\": 4}}\n\n", chunks: 4096)
        #expect(counted.inputTokens == 0 && counted.outputTokens == 4)
    }
}
