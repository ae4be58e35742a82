import AgentryModel
import AgentryRender
import Foundation
import Testing

/// Each harness's own output read into the neutral transcript. The Claude Code and Codex fixtures
/// are what the real binaries (claude 2.1.327, codex 0.163.0) printed against the test model stub;
/// the tool-use fixture follows Claude Code's stream-json format.
@Suite struct TranscriptTests {
    static func fixture(_ name: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/transcripts/\(name)")
        return Array(try Data(contentsOf: url))
    }

    @Test func claudeCodesStreamJSONBecomesMessagesAndUsage() throws {
        let transcript = try #require(Transcript.read(type: .claudeCode, stdout: try Self.fixture("claude-code.jsonl")))
        #expect(transcript.events.map(\.kind) == [.session, .message, .usage])
        #expect(transcript.events[0].model == "stub-model" && transcript.events[0].sessionID?.isEmpty == false)
        #expect(transcript.events[1].text == "answer from stub-model" && transcript.events[1].role == "assistant")
        #expect(transcript.events[2].inputTokens == 11 && transcript.events[2].outputTokens == 7)
        #expect(transcript.result == "answer from stub-model")
    }

    @Test func toolCallsArePairedWithTheirResults() throws {
        let transcript = try #require(
            Transcript.read(type: .claudeCode, stdout: try Self.fixture("claude-code-tools.jsonl")))
        #expect(transcript.events.map(\.kind) == [.session, .message, .toolCall, .toolResult, .message, .usage])
        let call = transcript.events[2]
        #expect(call.tool == "Bash" && call.callID == "toolu_1" && call.input == #"{"command":"ls out"}"#)
        #expect(transcript.events[3].callID == "toolu_1" && transcript.events[3].text == "greeting.txt")
        #expect(transcript.events[3].isError == false)
        #expect(transcript.result == "There is one file.")
        let lines = String(decoding: transcript.jsonLines(harness: "claude-code"), as: UTF8.self)
            .split(separator: "\n")
        #expect(lines.count == 6)
        #expect(
            lines[2]
                == #"{"seq":3,"type":"toolCall","harness":"claude-code","tool":"Bash","callId":"toolu_1","input":"{\"command\":\"ls out\"}"}"#
        )
    }

    @Test func codexJSONBecomesTheSameEvents() throws {
        let transcript = try #require(Transcript.read(type: .codex, stdout: try Self.fixture("codex.jsonl")))
        #expect(transcript.events.map(\.kind) == [.session, .error, .message, .usage])
        #expect(transcript.events[2].text == "answer from stub-model")
        #expect(transcript.events[3].inputTokens == 17 && transcript.events[3].outputTokens == 3)
        #expect(transcript.result == "answer from stub-model")
    }

    @Test func hermesFinalTextIsTheAnswer() {
        let transcript = Transcript.read(type: .hermes, stdout: Array("\n  answer from a model\n".utf8))
        #expect(transcript?.events.map(\.kind) == [.message])
        #expect(transcript?.result == "answer from a model")
        #expect(Transcript.read(type: .shell, stdout: Array("hello\n".utf8)) == nil, "a shell's output is its log")
    }

    /// The output is the guest's: hostile lines, huge texts and floods are bounded, never a crash.
    @Test func hostileOutputIsBounded() {
        var hostile = Array(#"{"type":"assistant","message":{"content":"not blocks"}}"#.utf8) + [0x0A]
        hostile += Array(#"{"type":"result","usage":{"input_tokens":"many"},"result":12}"#.utf8) + [0x0A]
        hostile += Array(#"{"type":"item.completed","item":{"type":"agent_message","text":""#.utf8)
        hostile += Array(repeating: UInt8(ascii: "x"), count: 200_000) + Array(#""}}"#.utf8) + [0x0A]
        let line = Array(#"{"type":"turn.completed","usage":{"input_tokens":1,"output_tokens":1}}"#.utf8) + [0x0A]
        for _ in 0..<(Transcript.eventLimit + 5) { hostile += line }
        let claude = Transcript.read(type: .claudeCode, stdout: hostile)
        #expect(claude?.events.map(\.kind) == [.usage] && claude?.result == nil)
        let codex = try? #require(Transcript.read(type: .codex, stdout: hostile))
        #expect(codex?.events.count == Transcript.eventLimit && codex?.omitted == 6)
        #expect((codex?.events.first?.text?.utf8.count ?? 0) <= Transcript.textLimit + 3)
    }
}
