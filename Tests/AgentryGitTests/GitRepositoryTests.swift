import AgentryGit
import Foundation
import TestSupport
import Testing

@Suite struct GitRepositoryTests {
    /// A repository with a folder, an executable, a symlink and two commits (tagged first).
    func fixture() throws -> (TemporaryDirectory, first: String, second: String) {
        let directory = try TemporaryDirectory()
        try directory.write("agents/a.yaml", "a: 1\n")
        try directory.write("run.sh", "#!/bin/sh\n")
        try Shell.run("chmod", ["+x", directory.url.appendingPathComponent("run.sh").path])
        try directory.symlink("agents/link.md", to: "../README.md")
        let first = try directory.commitAll("first")
        try Shell.git(["tag", "v1"], in: directory.url)
        try directory.write("agents/b.yaml", "b: 2\n")
        let second = try directory.commitAll("second")
        return (directory, first, second)
    }

    @Test func resolvesRefsToCommits() throws {
        let (directory, first, second) = try fixture()
        let repository = try GitRepository.open(directory.path)
        #expect(try repository.commit(for: "HEAD").description == second)
        #expect(try repository.commit(for: "main").description == second)
        #expect(try repository.commit(for: "v1").description == first)
        #expect(try repository.commit(for: String(first.prefix(10))).description == first)
        #expect(try repository.commit(for: "HEAD~1").description == first)
    }

    @Test func unknownRefsAndMissingRepositoriesAreClearErrors() throws {
        let (directory, _, _) = try fixture()
        let repository = try GitRepository.open(directory.path)
        #expect { try repository.commit(for: "nope") } throws: { error in
            (error as? GitError)?.message.contains("no commit, branch or tag named \"nope\"") == true
        }
        let empty = try TemporaryDirectory()
        #expect { try GitRepository.open(empty.path) } throws: { error in
            (error as? GitError)?.code == .notFound
        }
    }

    @Test func listsTreesRecursivelyWithKinds() throws {
        let (directory, first, _) = try fixture()
        let repository = try GitRepository.open(directory.path)
        let commit = try #require(ObjectID(hex: first))
        let entries = try repository.listTree(commit: commit)
        let kinds = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0.kind) })
        #expect(kinds["agents"] == .directory)
        #expect(kinds["agents/a.yaml"] == .file(executable: false))
        #expect(kinds["agents/link.md"] == .symlink)
        #expect(kinds["run.sh"] == .file(executable: true))
        #expect(kinds["agents/b.yaml"] == nil, "the older commit's tree, not the work tree")

        let sub = try repository.listTree(commit: commit, subpath: "agents")
        #expect(Set(sub.map(\.path)) == ["a.yaml", "link.md"])
        #expect(throws: GitError.self) { try repository.listTree(commit: commit, subpath: "nowhere") }
        #expect(throws: GitError.self) { try repository.listTree(commit: commit, subpath: "run.sh") }
    }

    @Test func readsBlobsWithASizeLimit() throws {
        let (directory, _, second) = try fixture()
        let repository = try GitRepository.open(directory.path)
        let entries = try repository.listTree(commit: try #require(ObjectID(hex: second)))
        let ids = entries.filter { $0.path.hasSuffix(".yaml") }.map(\.id)
        let blobs = try repository.blobs(ids, limit: 4)
        #expect(blobs.map(\.size) == [5, 5])
        #expect(blobs.allSatisfy { $0.content == nil }, "over the limit: not read")
        let read = try repository.blobs(ids, limit: 1024)
        #expect(read.map { String(decoding: $0.content ?? [], as: UTF8.self) } == ["a: 1\n", "b: 2\n"])
        let link = try #require(entries.first { $0.kind == .symlink })
        #expect(String(decoding: try repository.blob(link.id), as: UTF8.self) == "../README.md")
    }

    @Test func bareRepositoriesNeedNoWorkTree() throws {
        let (directory, _, second) = try fixture()
        let bare = try TemporaryDirectory()
        try Shell.git(
            ["clone", "-q", "--bare", directory.path, bare.url.appendingPathComponent("r.git").path], in: bare.url)
        let repository = try GitRepository.open(bare.url.appendingPathComponent("r.git").path)
        #expect(repository.workdir == nil)
        #expect(try repository.commit(for: "HEAD").description == second)
        #expect(
            try repository.listTree(commit: try repository.commit(for: "HEAD")).contains { $0.path == "agents/b.yaml" })
    }

    @Test func createsAndCommitsAWorkTree() throws {
        let directory = try TemporaryDirectory()
        let path = directory.url.appendingPathComponent("new").path
        let repository = try GitRepository.create(at: path)
        try Data("x\n".utf8).write(to: URL(fileURLWithPath: path + "/file.txt"))
        let commit = try repository.commitWorkTree(
            message: "first", author: Signature(name: "Test", email: "test@localhost"))
        let log = try Shell.git(["log", "--format=%H %s", "main"], in: URL(fileURLWithPath: path))
        #expect(log.trimmingCharacters(in: .whitespacesAndNewlines) == "\(commit) first")
        let fsck = try Shell.run("git", ["fsck", "--strict"], in: URL(fileURLWithPath: path))
        #expect(fsck.status == 0, "\(fsck.stderr)")
    }
}

@Suite struct TreeChangeTests {
    @Test func changesMatchGitDiffTree() throws {
        let directory = try TemporaryDirectory()
        try directory.write("a/one.yaml", "1\n")
        try directory.write("a/two.yaml", "2\n")
        try directory.write("b/deep/three.md", "3\n")
        try directory.write("c", "file that becomes a folder\n")
        try directory.write("z.txt", "z\n")
        let first = try directory.commitAll("first")
        try directory.write("a/one.yaml", "1 changed\n")
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("a/two.yaml"))
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("b"))
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("c"))
        try directory.write("c/inside.yaml", "now a folder\n")
        try directory.write("new/file.md", "new\n")
        try Shell.run("chmod", ["+x", directory.url.appendingPathComponent("z.txt").path])
        let second = try directory.commitAll("second")

        let repository = try GitRepository.open(directory.path)
        let changes = try repository.changes(
            from: try #require(ObjectID(hex: first)), to: try #require(ObjectID(hex: second)))
        let ours = changes.map { change in
            "\(change.oldID == nil ? "A" : change.id == nil ? "D" : "M") \(change.path)"
        }.sorted()
        let git = try Shell.git(["diff-tree", "-r", "--no-renames", "--name-status", first, second], in: directory.url)
            .split(separator: "\n").map { line in
                let parts = line.split(separator: "\t")
                return "\(parts[0]) \(parts[1])"
            }.sorted()
        #expect(ours == git)
        #expect(changes.first { $0.path == "z.txt" }?.kind == .file(executable: true))
        #expect(
            try repository.changes(from: try #require(ObjectID(hex: second)), to: try #require(ObjectID(hex: second)))
                .isEmpty)
    }
}
