import AgentryGit
import Foundation
import Synchronization
import TestSupport
import Testing

@Suite struct HistoryBranchTests {
    let author = Signature(name: "tester", email: "tester@localhost")

    /// A repository with one commit on main, and a bare clone of it as `origin`.
    func withRemote() throws -> (local: TemporaryDirectory, remote: TemporaryDirectory) {
        let local = try TemporaryDirectory()
        try local.write("agents/a.yaml", "a: 1\n")
        try local.commitAll("desired state")
        let remote = try TemporaryDirectory()
        try Shell.git(["init", "-q", "--bare", remote.path], in: remote.url)
        try Shell.git(["remote", "add", "origin", remote.path], in: local.url)
        return (local, remote)
    }

    @Test func recordsWithoutTouchingTheWorkTreeOrMain() throws {
        let directory = try TemporaryDirectory()
        try directory.write("agents/a.yaml", "a: 1\n")
        let main = try directory.commitAll("desired state")
        let history = HistoryBranch(repository: try GitRepository.open(directory.path))
        #expect(try history.tip() == nil)
        let first = try history.append(
            [
                RecordFile(path: "runs/a/1/record.yaml", bytes: Array("runId: 1\n".utf8)),
                RecordFile(path: "runs/a/1/log.txt", bytes: Array("hello\n".utf8)),
            ],
            message: "run a 1\n\ndetails\n", author: author)
        try history.append(
            [RecordFile(path: "runs/a/2/record.yaml", bytes: Array("runId: 2\n".utf8))], message: "run a 2\n",
            author: author)
        #expect(try history.tip() != first)

        // Plain git reads it: a line of two commits, both files of the first record, a clean fsck.
        #expect(try Shell.git(["log", "--format=%s", "agentry/history"], in: directory.url) == "run a 2\nrun a 1\n")
        #expect(try Shell.git(["show", "agentry/history:runs/a/1/log.txt"], in: directory.url) == "hello\n")
        #expect(
            try Shell.git(["log", "-1", "--format=%an <%ae>", "agentry/history"], in: directory.url)
                == "tester <tester@localhost>\n")
        _ = try Shell.git(["fsck", "--strict", "--no-dangling"], in: directory.url)
        #expect(try Shell.git(["rev-parse", "HEAD"], in: directory.url).hasPrefix(main))
        #expect(try Shell.git(["status", "--porcelain"], in: directory.url) == "")
        #expect(try history.files(under: "runs/a")?.filter { $0.path.hasSuffix("record.yaml") }.count == 2)
    }

    @Test func pushesToOrigin() throws {
        let (local, remote) = try withRemote()
        let history = HistoryBranch(repository: try GitRepository.open(local.path))
        #expect(history.hasOrigin)
        try history.append(
            [RecordFile(path: "runs/a/1/record.yaml", bytes: [0x31])], message: "run a 1\n", author: author)
        #expect(try history.push() == 1)
        #expect(try Shell.git(["log", "--format=%s", "agentry/history"], in: remote.url) == "run a 1\n")
    }

    /// Two hosts recording to one bare remote at once: every record arrives, none twice.
    @Test func twoConcurrentWritersLoseNothing() throws {
        let (first, remote) = try withRemote()
        let second = try TemporaryDirectory()
        try Shell.git(["clone", "-q", remote.path, second.path], in: remote.url)
        // The second host starts with the branch the first pushed, as a real second host would.
        let seed = HistoryBranch(repository: try GitRepository.open(first.path))
        try seed.append([RecordFile(path: "runs/seed/0/record.yaml", bytes: [0x30])], message: "seed\n", author: author)
        try seed.push()
        try Shell.git(["fetch", "-q", "origin", "agentry/history:agentry/history"], in: second.url)

        let perWriter = 15
        let errors = ErrorBox()
        DispatchQueue.concurrentPerform(iterations: 2) { writer in
            do {
                let path = writer == 0 ? first.path : second.path
                let history = HistoryBranch(repository: try GitRepository.open(path))
                for index in 0..<perWriter {
                    try history.append(
                        [
                            RecordFile(
                                path: "runs/host\(writer)/\(index)/record.yaml",
                                bytes: Array("host \(writer) run \(index)\n".utf8))
                        ],
                        message: "run host\(writer) \(index)\n", author: author)
                    try history.push()
                }
            } catch {
                errors.add("\(error)")
            }
        }
        #expect(errors.all.isEmpty, "\(errors.all)")
        let files = try Shell.git(["ls-tree", "-r", "--name-only", "agentry/history"], in: remote.url)
            .split(separator: "\n").filter { $0.hasSuffix("record.yaml") }
        #expect(files.count == 2 * perWriter + 1)
        let subjects = try Shell.git(["log", "--format=%s", "agentry/history"], in: remote.url).split(separator: "\n")
        #expect(subjects.count == 2 * perWriter + 1, "one commit per record, none replayed twice")
        #expect(Set(subjects).count == subjects.count)
        _ = try Shell.git(["fsck", "--strict", "--no-dangling"], in: remote.url)
    }

    /// A ref lock left by a writer that died mid-update does not wedge later records, and a lock
    /// held a moment by another git is waited for rather than taken as a lost race.
    @Test func aStaleRefLockIsClearedAndAFreshOneWaitedFor() throws {
        let directory = try TemporaryDirectory()
        try directory.write("a.txt", "a\n")
        try directory.commitAll("base")
        let history = HistoryBranch(repository: try GitRepository.open(directory.path))
        try history.append([RecordFile(path: "runs/a/1/record.yaml", bytes: [1])], message: "one\n", author: author)
        let lock = directory.path + "/.git/refs/heads/agentry/history.lock"
        FileManager.default.createFile(atPath: lock, contents: Data("0000\n".utf8))
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-60)], ofItemAtPath: lock)
        try history.append([RecordFile(path: "runs/a/2/record.yaml", bytes: [2])], message: "two\n", author: author)
        #expect(!FileManager.default.fileExists(atPath: lock), "the stale lock was cleared")

        FileManager.default.createFile(atPath: lock, contents: Data("0000\n".utf8))
        let release = Thread {
            usleep(600_000)
            unlink(lock)
        }
        release.start()
        let started = Date()
        try history.append([RecordFile(path: "runs/a/3/record.yaml", bytes: [3])], message: "three\n", author: author)
        #expect(Date().timeIntervalSince(started) >= 0.5, "it waited for the other git")
        #expect(try Shell.git(["log", "--format=%s", "agentry/history"], in: directory.url) == "three\ntwo\none\n")
    }
}

final class ErrorBox: Sendable {
    private let errors = Mutex<[String]>([])
    func add(_ error: String) { errors.withLock { $0.append(error) } }
    var all: [String] { errors.withLock { $0 } }
}
