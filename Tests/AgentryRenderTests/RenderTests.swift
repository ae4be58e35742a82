import AgentryBasics
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
        var bad = TarWriter()
        #expect(throws: RenderError.self) {
            try bad.add(BundleFile(path: String(repeating: "x/", count: 2100), bytes: []))
        }
    }

    /// Paths past ustar's 255 bytes (and names past its 100) travel in pax headers, which GNU tar
    /// and busybox tar (the guests' tars) both extract, and which the reader reads back.
    @Test func longPathsTravelInPaxHeaders() throws {
        let deep =
            (0..<30).map { "folder-\($0)-" + String(repeating: "n", count: 40) }.joined(separator: "/") + "/note.md"
        let longName = String(repeating: "w", count: 180) + ".txt"
        let target = String(repeating: "t", count: 150)
        var writer = TarWriter()
        try writer.add(BundleFile(path: deep, bytes: Array("deep\n".utf8)))
        try writer.add(BundleFile(path: longName, bytes: Array("long\n".utf8)))
        try writer.add(BundleFile(path: "short.txt", bytes: Array("short\n".utf8)))
        try writer.add(BundleFile(path: "link", mode: 0o777, bytes: [], linkTarget: target))
        let archive = writer.finish()
        let read = TarReader.files(archive)
        #expect(read.map(\.path) == [deep, longName, "short.txt"])
        #expect(read.map { String(decoding: $0.bytes, as: UTF8.self) } == ["deep\n", "long\n", "short\n"])
        for tar in [["tar"], ["busybox", "tar"]] {
            let folder = try TemporaryDirectory()
            try Data(archive).write(to: folder.url.appendingPathComponent("a.tar"))
            try FileManager.default.createDirectory(atPath: folder.path + "/out", withIntermediateDirectories: true)
            let result = try Shell.run(
                tar[0], Array(tar.dropFirst()) + ["-xf", folder.path + "/a.tar", "-C", folder.path + "/out"])
            #expect(result.status == 0, "\(tar): \(result.stderr)")
            #expect(try String(contentsOfFile: folder.path + "/out/" + deep, encoding: .utf8) == "deep\n", "\(tar)")
            #expect(try String(contentsOfFile: folder.path + "/out/" + longName, encoding: .utf8) == "long\n", "\(tar)")
            #expect(
                try FileManager.default.destinationOfSymbolicLink(atPath: folder.path + "/out/link") == target, "\(tar)"
            )
        }
    }

    /// A pax record's length counts its own digits, also where that adds a digit.
    @Test func paxRecordLengthsCountThemselves() {
        for size in [1, 80, 88, 89, 90, 91, 95, 990, 993, 994, 995, 996, 1000] {
            let record = TarWriter.paxRecord("path", Array(repeating: UInt8(ascii: "a"), count: size))
            let length = Int(String(decoding: record.prefix { $0 != 0x20 }, as: UTF8.self))
            #expect(length == record.count, "value of \(size) bytes")
        }
    }

    /// Whatever a run's strings hold, its record reads back exactly as it was written.
    @Test func runRecordsReadBackWhatWasWritten() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000.25)
        let awkward =
            "a \"quote\"\nline\ttab\r\u{0}\u{1B}[31m\u{7F}\u{85}\u{9F}\u{2028}\u{2029}\u{FEFF}\u{FFFE}\u{FFFF}é😀: - [x] {y} # z"
        var record = RunRecord(
            runID: "20270115-080000-0a1b2c3d", agent: "triage", owner: "team-a",
            desiredCommit: String(repeating: "a", count: 40),
            agentRevision: String(repeating: "b", count: 64), trigger: "ci", triggeredBy: awkward, host: "h1",
            outcome: .interrupted, startedAt: start, endedAt: start.addingTimeInterval(1.5))
        record.harnessName = "hermes"
        record.harnessVersion = "0.19.0"
        record.model = awkward
        record.prompt = RunRecord.Prompt(awkward, isDefault: false)
        record.phase = .harness
        record.reason = awkward
        record.artifacts = [
            .init(
                path: awkward, size: 3, sha256: String(repeating: "c", count: 64), stored: true,
                storedAs: "_/" + String(repeating: "c", count: 64))
        ]
        record.artifactsOmitted = 12
        record.memoryFiles = 2
        record.memoryStored = true
        record.memoryRenamed = [.init(path: ".gitmodules", storedAs: "_/abc")]
        record.memoryExcluded = [awkward]
        let parsed = try RunRecord.parse(record.yaml).get()
        #expect(parsed.model == awkward)
        #expect(parsed.triggeredBy == awkward)
        #expect(parsed.reason == awkward)
        #expect(parsed.prompt == record.prompt)
        #expect(parsed.artifacts == record.artifacts)
        #expect(parsed.memoryRenamed == record.memoryRenamed && parsed.memoryExcluded == [awkward])
        #expect(parsed.outcome == .interrupted && parsed.phase == .harness && parsed.exitStatus == nil)
        #expect(parsed.artifactsOmitted == 12 && parsed.memoryStored && parsed.owner == "team-a")
        #expect(parsed.durationMilliseconds == 1500)
        #expect(record.commitMessage.hasPrefix("run triage 20270115-080000-0a1b2c3d: interrupted after 1.5s\n\n"))
        // A long prompt is kept by digest and length only.
        let long = RunRecord.Prompt(String(repeating: "p", count: 5000), isDefault: true)
        #expect(long.text == nil && long.bytes == 5000 && long.sha256.count == 64)
    }

    /// Records written before outcomes existed still read, their outcome derived.
    @Test func formatOneRecordsStillRead() throws {
        let text = """
            formatVersion: 1
            runId: "20260101-000000-00000000"
            agent: "hello"
            desiredCommit: "abc"
            agentRevision: "def"
            startedAt: "2026-01-01T00:00:00.000Z"
            endedAt: "2026-01-01T00:00:02.000Z"
            exitStatus: 3
            timedOut: false
            artifacts: []
            memory:
              files: 2
            """
        let record = try RunRecord.parse(text).get()
        #expect(record.outcome == .failed && record.exitStatus == 3 && record.memoryStored)
        #expect(throws: RunRecord.Unreadable.self) { try RunRecord.parse("formatVersion: 9\n").get() }
        #expect(throws: RunRecord.Unreadable.self) { try RunRecord.parse("runId: [unclosed\n").get() }
    }

    /// Names git refuses or treats specially are stored by digest; ordinary ones as they are.
    @Test func historyNamesThatGitWouldRefuseAreStoredByDigest() {
        for name in [
            "report.md", "a/b/c.txt", "naïve/é.txt", "git/x", "x.git/y", ".github/workflows/ci.yml", "..a", "a..",
        ] {
            #expect(HistoryName.isStorable(name), "\(name)")
        }
        for name in [
            ".git/config", "a/.GIT/hooks/x", ".gitmodules", "sub/.gitattributes", ".Git.", ".git ", "GIT~1/x",
            "gitmod~1", "a/../b", "./a", "a//b", "", "tab\there", "bell\u{7}", "c1\u{85}", "back\\slash", "co:lon",
            ".g\u{200C}it/x", String(repeating: "n", count: 256), String(repeating: "a/", count: 600),
        ] {
            #expect(!HistoryName.isStorable(name), "\(name.debugDescription)")
            #expect(HistoryName.stored(name, sha256: "ab") == "_/ab")
        }
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

    /// Output that cannot be the start of a secret is passed on at once (a run's progress shows as
    /// it comes); only a tail that might be one waits.
    @Test func onlyWhatMightBeASecretIsHeldBack() {
        var stream = StreamRedactor(Redactor([Array("tok-interrupt".utf8)]))
        #expect(stream.feed(Array("started\n".utf8)) == Array("started\n".utf8))
        #expect(stream.feed(Array("token tok-in".utf8)) == Array("token ".utf8))
        #expect(stream.feed(Array("terrupt done".utf8)) == Array("*** done".utf8))
        #expect(stream.feed(Array(" tok".utf8)) == Array(" ".utf8))
        #expect(stream.finish() == Array("tok".utf8))
    }
}

@Suite struct HostileOutputTests {
    /// A secret is redacted also where it appears base64-, hex- or percent-encoded.
    @Test func encodedSecretsAreRedactedToo() {
        let secret = "s3cr3t/value+42?"
        let redactor = Redactor([Array(secret.utf8)])
        let encoded = [
            Base64.encode(Array(secret.utf8)), "czNjcjN0L3ZhbHVlKzQyPw", "czNjcjN0L3ZhbHVlKzQyPw",
            Hex.string(Array(secret.utf8)), Hex.string(Array(secret.utf8)).uppercased(), "s3cr3t%2Fvalue%2B42%3F",
            "czNjcjN0L3ZhbHVlKzQyPw".replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "+", with: "-"),
        ]
        for form in encoded {
            let text = "before \(form) after"
            #expect(redactor.text(text) == "before *** after", "\(form)")
        }
        #expect(redactor.text("an ordinary line of text") == "an ordinary line of text")
    }

    /// What a guest prints reaches a terminal with its control sequences shown, not obeyed; colour
    /// passes; a sequence split across chunks is caught.
    @Test func terminalControlSequencesAreNeutralised() {
        let cases: [(String, String)] = [
            ("plain text\n", "plain text\n"),
            ("\u{1B}[31mred\u{1B}[0m", "\u{1B}[31mred\u{1B}[0m"),
            ("\u{1B}]0;owned title\u{07}", "^[]0;owned title^G"),
            ("\u{1B}]52;c;Y2xpcGJvYXJk\u{1B}\\", "^[]52;c;Y2xpcGJvYXJk^[\\"),
            ("\u{1B}[2J\u{1B}[H", "^[[2J^[[H"),
            ("bell\u{07} null\u{00} del\u{7F}", "bell^G null^@ del^?"),
            ("c1 \u{9B}31m", "c1 ^[[31m"),
            ("tab\tcr\r\n", "tab\tcr\r\n"),
        ]
        for (input, expected) in cases {
            let whole = String(decoding: TerminalFilter.filter(Array(input.utf8)), as: UTF8.self)
            #expect(whole == expected, "\(input.debugDescription) → \(whole.debugDescription)")
            // Byte by byte, the same.
            var filter = TerminalFilter()
            var output: [UInt8] = []
            for byte in Array(input.utf8) { output += filter.feed([byte]) }
            output += filter.finish()
            #expect(String(decoding: output, as: UTF8.self) == expected, "\(input.debugDescription) in single bytes")
        }
    }
}
