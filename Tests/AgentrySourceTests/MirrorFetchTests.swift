import AgentryCore
import AgentrySource
import Foundation
import Logging
import TestSupport
import Testing

/// The service's fetches run as `agentry mirror-fetch` processes: one that hangs on a remote that
/// stopped answering is killed at its deadline, and one that works brings the branch's commit.
@Suite struct MirrorFetchTests {
    func source(limit: Duration) -> GitRepositorySource {
        GitRepositorySource(
            logger: Logger(label: "test"),
            fetcher: .init(
                executable: Agentry.binary.path,
                environment: ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }, limit: limit))
    }

    @Test func aHungFetchIsKilledAtItsDeadlineAndAGoodOneWorks() throws {
        let silent = try BackgroundProcess.silentServer()
        let port = silent.firstLine()
        let state = try TemporaryDirectory("agentry-mirror-fetch")
        let began = ContinuousClock.now
        do {
            _ = try source(limit: .seconds(2)).fetch(
                Upstream(url: "http://127.0.0.1:\(port)/agents.git", branch: "main"), into: state.path + "/mirror.git")
            Issue.record("a remote that never answers gave a commit")
        } catch {
            #expect("\(error)".contains("took longer than 2s and was stopped"), "\(error)")
        }
        #expect(ContinuousClock.now - began < .seconds(30))
        #expect(!FileManager.default.fileExists(atPath: state.path + "/mirror.git"))
        withExtendedLifetime(silent) {}

        let clone = try TemporaryDirectory()
        try clone.write("agents/a.yaml", "a: 1\n")
        let commit = try clone.commitAll("first")
        let remote = try TemporaryDirectory()
        try Shell.git(["init", "-q", "--bare", remote.path], in: remote.url)
        try Shell.git(["push", "-q", remote.path, "HEAD:refs/heads/main"], in: clone.url)
        let fetched = try source(limit: .seconds(60)).fetch(
            Upstream(url: "file://" + remote.path, branch: "main"), into: state.path + "/mirror.git")
        #expect(fetched == commit)
        // A refusal comes back as the child said it.
        do {
            _ = try source(limit: .seconds(60)).fetch(
                Upstream(url: "file://" + remote.path, branch: "nope"), into: state.path + "/other.git")
            Issue.record("a missing branch gave a commit")
        } catch {
            #expect("\(error)".contains("has no branch nope"), "\(error)")
        }
    }
}
