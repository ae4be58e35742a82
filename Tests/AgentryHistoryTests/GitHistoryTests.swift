import AgentryCore
import Foundation
import TestSupport
import Testing

@testable import AgentryHistory

@Suite struct GitHistoryTests {
    @Test func actorsGitRefusesAreCleanedNotFatal() {
        let history = GitHistory(hostName: "h1")
        #expect(history.signature("Jane <jane@example.com>").name == "Jane jane@example.com")
        #expect(history.signature("<>").name == "agentry")
        #expect(history.signature("ana").email == "agentry@h1")
    }

    /// Records go in as one commit on the branch and read back by path, with plain git agreeing.
    @Test func recordsCommitAndReadBack() throws {
        let directory = try TemporaryDirectory()
        try directory.write("README.md", "agents\n")
        try directory.commitAll("base")
        let history = GitHistory(hostName: "h1")
        let location = HistoryLocation(repository: directory.path, branch: "agentry/history")
        #expect(try history.paths(under: "runs", in: location) == nil, "no branch yet")
        let committed = try history.record(
            [
                HistoryFile(path: "runs/a/1/record.yaml", bytes: Array("one\n".utf8)),
                HistoryFile(path: "runs/a/1/log.txt", bytes: Array("log\n".utf8)),
            ], message: "run a 1\n", actor: "ci <bot>", at: Date(timeIntervalSince1970: 1_800_000_000), in: location)
        #expect(committed.pushWarning == nil)
        #expect(
            try history.paths(under: "runs/a", in: location)?.sorted() == ["runs/a/1/log.txt", "runs/a/1/record.yaml"])
        #expect(try history.read("runs/a/1/log.txt", in: location) == Array("log\n".utf8))
        #expect(
            try history.files(under: "runs/a/1", in: location)?.map(\.path).sorted() == [
                "runs/a/1/log.txt", "runs/a/1/record.yaml",
            ])
        let tip = try Shell.git(["rev-parse", "agentry/history"], in: directory.url).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(tip == committed.commit)
        #expect(try Shell.git(["log", "-1", "--format=%an", "agentry/history"], in: directory.url) == "ci bot\n")
    }
}
