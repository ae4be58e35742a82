import Foundation
import TestSupport
import Testing

@testable import AgentryRender

@Suite struct RenderTests {
    @Test func redactsEveryOccurrenceLongestFirst() {
        let redactor = Redactor([Array("abc".utf8), Array("abcdef".utf8), []])
        let text = "x abcdef y abc z abab"
        #expect(String(decoding: redactor.redact(Array(text.utf8)), as: UTF8.self) == "x *** y *** z abab")
        #expect(Redactor([]).redact(Array("same".utf8)) == Array("same".utf8))
    }

    @Test func rendersTemplates() {
        let values = ["prompt": "hi", "model.name": "m1"]
        #expect(Rendering.render("say {{prompt}} with {{ model.name }} {{unknown}}!", values) == "say hi with m1 !")
        #expect(Rendering.render("unclosed {{prompt", values) == "unclosed {{prompt")
        #expect(Rendering.uses("Bearer {{ model.apiKey }}", "model.apiKey"))
        #expect(!Rendering.uses("{{model.name}}", "model.apiKey"))
    }

    /// The archive the configuration travels in unpacks with a real tar: modes, long paths, links.
    @Test func tarArchivesUnpackWithTar() throws {
        let folder = try TemporaryDirectory()
        let long = String(repeating: "d", count: 60) + "/" + String(repeating: "e", count: 60) + "/file.md"
        var writer = TarWriter()
        try writer.add(BundleFile(path: "AGENTS.md", bytes: Array("instructions\n".utf8)))
        try writer.add(BundleFile(path: "skills/x/run.sh", mode: 0o755, bytes: Array("#!/bin/sh\n".utf8)))
        try writer.add(BundleFile(path: long, bytes: Array(repeating: 0x41, count: 1000)))
        try writer.add(BundleFile(path: "skills/x/link", mode: 0o777, bytes: [], linkTarget: "run.sh"))
        try Data(writer.finish()).write(to: folder.url.appendingPathComponent("a.tar"))
        try FileManager.default.createDirectory(atPath: folder.path + "/out", withIntermediateDirectories: true)
        let result = try Shell.run("tar", ["-xf", folder.path + "/a.tar", "-C", folder.path + "/out"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try String(contentsOfFile: folder.path + "/out/AGENTS.md", encoding: .utf8) == "instructions\n")
        #expect(FileManager.default.isExecutableFile(atPath: folder.path + "/out/skills/x/run.sh"))
        #expect(try Data(contentsOf: folder.url.appendingPathComponent("out/" + long)).count == 1000)
        #expect(
            try FileManager.default.destinationOfSymbolicLink(atPath: folder.path + "/out/skills/x/link") == "run.sh")
        var tooLong = TarWriter()
        #expect(throws: RenderError.self) {
            try tooLong.add(BundleFile(path: String(repeating: "x", count: 300), bytes: []))
        }
    }

    @Test func runRecordsReadBackWhatWasWritten() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000.25)
        let record = RunRecord(
            runID: "20270115-080000-0a1b2c3d", agent: "triage", desiredCommit: String(repeating: "a", count: 40),
            agentRevision: String(repeating: "b", count: 64), harnessName: "hermes", harnessType: "hermes",
            harnessVersion: "0.19.0", modelName: "sonnet", modelProvider: "anthropic", model: "claude \"quoted\"\nname",
            trigger: "ci", triggeredBy: "bot", host: "h1", startedAt: start, endedAt: start.addingTimeInterval(1.5),
            exitStatus: 0, timedOut: false,
            artifacts: [.init(path: "out/a b.txt", size: 3, sha256: String(repeating: "c", count: 64), stored: true)],
            logBytes: 10, logSHA256: String(repeating: "d", count: 64), logTruncated: false, memoryFiles: 2)
        let parsed = try #require(RunRecord.parse(record.yaml))
        #expect(parsed.model == "claude \"quoted\"\nname")
        #expect(parsed.durationMilliseconds == 1500)
        #expect(parsed.artifacts.first?.path == "out/a b.txt")
        #expect(parsed.memoryFiles == 2 && parsed.harnessVersion == "0.19.0" && parsed.trigger == "ci")
        #expect(record.commitMessage.hasPrefix("run triage 20270115-080000-0a1b2c3d: exit 0 in 1.5s\n\n"))
    }
}

@Suite struct EgressAllowlistTests {
    @Test func matchesHostsPortsAndSubdomains() {
        let list = EgressAllowlist(["api.example.com", "*.github.com", "127.0.0.1:8080", "API.Upper.com"])
        #expect(list.allows(host: "api.example.com", port: 443))
        #expect(list.allows(host: "api.example.com", port: 80))
        #expect(!list.allows(host: "api.example.com", port: 22), "no port given: 443 and 80 only")
        #expect(!list.allows(host: "evil-api.example.com", port: 443))
        #expect(list.allows(host: "raw.github.com", port: 443))
        #expect(!list.allows(host: "github.com", port: 443), "*.domain is its subdomains only")
        #expect(!list.allows(host: "github.com.evil.net", port: 443))
        #expect(list.allows(host: "127.0.0.1", port: 8080))
        #expect(!list.allows(host: "127.0.0.1", port: 8081))
        #expect(list.allows(host: "api.upper.com", port: 443))
    }
}

@Suite struct StreamRedactionTests {
    /// However the output is cut into chunks, what comes out is what redacting it whole gives.
    @Test func secretsSplitAcrossChunksAreStillRedacted() {
        let secrets = [Array("hunter2-token".utf8), Array("abc".utf8)]
        let redactor = Redactor(secrets)
        let text = Array("start hunter2-token mid abcabc hunter2-tok end hunter2-token".utf8)
        let whole = redactor.redact(text)
        for size in 1...text.count {
            var stream = StreamRedactor(redactor)
            var output: [UInt8] = []
            var index = 0
            while index < text.count {
                output += stream.feed(Array(text[index..<min(text.count, index + size)]))
                index += size
            }
            output += stream.finish()
            #expect(output == whole, "chunks of \(size)")
            #expect(!String(decoding: output, as: UTF8.self).contains("hunter2-token"))
        }
    }
}
