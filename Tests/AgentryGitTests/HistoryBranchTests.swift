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

/// The history writer packs what it writes, as `git gc --auto` would: loose objects into a pack
/// once there are enough, all packs into one once there are too many; git reads the result, and a
/// reader that opened the repository before sees every record all the same.
@Suite struct HistoryPackingTests {
    let author = Signature(name: "tester", email: "tester@localhost")

    func objects(_ directory: TemporaryDirectory) throws -> (loose: Int, packs: Int) {
        let counted = try Shell.git(["count-objects", "-v"], in: directory.url)
        var values: [String: Int] = [:]
        for line in counted.split(separator: "\n") {
            let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { values[parts[0]] = Int(parts[1]) }
        }
        return (values["count"] ?? -1, values["packs"] ?? -1)
    }

    @Test func recordsArePackedAndPacksMadeOne() throws {
        let directory = try TemporaryDirectory()
        try directory.write("agents/a.yaml", "a: 1\n")
        try directory.commitAll("desired state")
        // A reader from before any packing, which has read the first record.
        let writer = HistoryBranch(repository: try GitRepository.open(directory.path))
        try writer.append(
            [RecordFile(path: "runs/a/0/log.txt", bytes: Array("run 0\n".utf8))], message: "run 0\n", author: author)
        let reader = HistoryBranch(repository: try GitRepository.open(directory.path))
        #expect(try reader.read("runs/a/0/log.txt") == Array("run 0\n".utf8))

        // Not due: the loose objects stay (git's own threshold is thousands).
        #expect(try objects(directory).loose > 0)

        // Loose objects packed after every record; packs made one only when asked (the service does,
        // in the background), past three and once they have settled.
        writer.packing = GitRepository.PackingLimits(looseInSample: -1, packs: 3, settledPack: 0)
        for index in 1...12 {
            try writer.append(
                [
                    RecordFile(path: "runs/a/\(index)/record.yaml", bytes: Array("runId: \(index)\n".utf8)),
                    RecordFile(path: "runs/a/\(index)/log.txt", bytes: Array("run \(index)\n".utf8)),
                ], message: "run \(index)\n", author: author)
        }
        let packed = try objects(directory)
        #expect(packed.loose == 0, "every loose object was packed")
        #expect(packed.packs >= 12, "one pack a record: \(packed.packs)")
        let young = GitRepository.PackingLimits(looseInSample: -1, packs: 3, settledPack: 3600)
        #expect(try writer.repository.packIfDue(young, consolidating: true)?.packsRemoved == 0, "no pack settled yet")
        let made = try writer.repository.packIfDue(writer.packing, consolidating: true)
        #expect(made?.packsRemoved == packed.packs)
        let after = try objects(directory)
        #expect(after.loose == 0 && after.packs == 1, "packs were made one: \(after)")
        #expect(
            try Shell.git(["count-objects", "-v"], in: directory.url).contains("garbage: 0"),
            "nothing else left in objects/")
        _ = try Shell.git(["fsck", "--strict", "--no-dangling"], in: directory.url)
        #expect(try Shell.git(["rev-list", "--count", "agentry/history"], in: directory.url) == "13\n")
        for index in [0, 1, 7, 12] {
            #expect(try reader.read("runs/a/\(index)/log.txt") == Array("run \(index)\n".utf8), "record \(index)")
        }
        #expect(try reader.files(under: "runs/a")?.filter { $0.path.hasSuffix("/log.txt") }.count == 13)

        // A repository whose owner turned git's automatic packing off is left as it is.
        _ = try Shell.git(["config", "gc.auto", "0"], in: directory.url)
        try writer.append([RecordFile(path: "runs/a/13/log.txt", bytes: [0x31])], message: "run 13\n", author: author)
        #expect(try objects(directory).loose > 0)
    }
}
