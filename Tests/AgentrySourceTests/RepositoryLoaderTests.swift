import AgentryCore
import AgentryModel
import AgentrySource
import Foundation
import Logging
import TestSupport
import Testing

@Suite struct RepositoryLoaderTests {
    let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart")

    func report(_ location: RepositoryLocation) throws -> ValidationReport {
        let logger = Logger(label: "test")
        let loaded: LoadedRepository
        switch location {
        case .git(let repository, let ref, let path):
            loaded = try CommitReader(repository: repository, path: path, cache: nil, logger: logger).tree(ref)
        case .directory(let path):
            loaded = try FolderReader.read(path, logger: logger)
        }
        return RepositoryValidator.validate(loaded.tree, displayPrefix: loaded.displayPrefix)
    }

    func summary(_ report: ValidationReport) -> [String] {
        report.diagnostics.map { "\($0.file):\($0.mark):\($0.code.rawValue):\($0.message)" }
    }

    @Test func quickstartValidatesFromAFolderAndFromGit() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll()
        let fromFolder = try report(.directory(directory.path))
        let fromGit = try report(.git(repository: directory.path, ref: "HEAD", path: ""))
        #expect(fromFolder.isValid, "\(summary(fromFolder))")
        #expect(fromGit.isValid, "\(summary(fromGit))")
        #expect(fromGit.catalog.agents.count == 3)
        #expect(fromFolder.filesChecked == fromGit.filesChecked)
    }

    @Test func sameContentSameDiagnosticsBothWays() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write(
            "agents/broken.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: Broken}\nspec: {harness: x}\n")
        try directory.write("models/tab.yaml", "a:\n\tb: 1\n")
        try directory.symlink("agents/escape.md", to: "../../../../etc/passwd")
        try directory.symlink("agents/inside.md", to: "hello/INSTRUCTIONS.md")
        try directory.commitAll()
        let fromFolder = try report(.directory(directory.path))
        let fromGit = try report(.git(repository: directory.path, ref: "HEAD", path: ""))
        #expect(!fromGit.isValid)
        #expect(summary(fromFolder) == summary(fromGit))
        #expect(fromGit.diagnostics.contains { $0.code == .pathEscape && $0.file == "agents/escape.md" })
    }

    @Test func readsTheCommitNotTheWorkTree() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll()
        try directory.write("agents/hello.yaml", "broken: [\n")
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("models"))
        #expect(try report(.git(repository: directory.path, ref: "HEAD", path: "")).isValid)
        #expect(!(try report(.directory(directory.path)).isValid))
    }

    @Test func agentRepositoryInASubfolderReportsRepositoryRootPaths() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart, to: "deploy/agents")
        try directory.write("deploy/agents/agents/bad.yaml", "apiVersion: agentry/v1\nkind: Agent\n")
        try directory.write("other/not-ours.yaml", "- a list that is not a resource\n")
        try directory.commitAll()
        let result = try report(.git(repository: directory.path, ref: "HEAD", path: "deploy/agents"))
        #expect(result.diagnostics.allSatisfy { $0.file == "deploy/agents/agents/bad.yaml" }, "\(summary(result))")
        #expect(!result.diagnostics.isEmpty)
        #expect(throws: SourceError.self) { try report(.git(repository: directory.path, ref: "HEAD", path: "missing")) }
        #expect(throws: SourceError.self) { try report(.git(repository: directory.path, ref: "HEAD", path: "../x")) }
    }

    @Test func bareRepositoriesWork() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll()
        let bare = directory.url.deletingLastPathComponent().appendingPathComponent("bare-\(UUID().uuidString).git")
        defer { try? FileManager.default.removeItem(at: bare) }
        try Shell.git(["clone", "-q", "--bare", directory.path, bare.path], in: directory.url)
        #expect(try report(.git(repository: bare.path, ref: "main", path: "")).isValid)
    }

    @Test func missingRepositoriesRefsAndFoldersCannotRun() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll()
        #expect(throws: SourceError.self) {
            try report(.git(repository: directory.path, ref: "no-such-branch", path: ""))
        }
        #expect(throws: SourceError.self) { try report(.git(repository: "/nonexistent/repo", ref: "HEAD", path: "")) }
        #expect(throws: SourceError.self) { try report(.directory("/nonexistent/folder")) }
    }

    @Test func initScaffoldValidatesClean() throws {
        let directory = try TemporaryDirectory()
        let target = directory.url.appendingPathComponent("agents-repo").path
        try Scaffold.create(at: target, owner: "ml-team")
        let fromGit = try report(.git(repository: target, ref: "HEAD", path: ""))
        #expect(fromGit.diagnostics.isEmpty, "\(summary(fromGit))")
        #expect(fromGit.catalog.agents.first?.metadata.owner == "ml-team")
        #expect(try report(.directory(target)).diagnostics.isEmpty)
        let status = try Shell.git(["status", "--porcelain"], in: URL(fileURLWithPath: target))
        #expect(status.isEmpty, "everything is committed")
        #expect(throws: SourceError.self) { try Scaffold.create(at: target) }
        #expect(fromGit.catalog.harnesses.map(\.metadata.name).sorted() == ["claude-code", "codex", "hermes", "shell"])
    }

    /// `agentry init` writes the bundled harnesses exactly as the tested examples have them.
    @Test func initWritesTheBundledHarnessesAsTheExamplesHaveThem() throws {
        let examples = Agentry.packageRoot.appendingPathComponent("examples/quickstart/harnesses")
        for harness in Scaffold.bundledHarnesses {
            let example = try String(
                contentsOf: examples.appendingPathComponent("\(harness.name).yaml"), encoding: .utf8)
            let body = example.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).last.map(
                String.init)
            #expect(body == harness.body, "examples/quickstart/harnesses/\(harness.name).yaml and Scaffold differ")
        }
    }

    /// Real-world skills (Apache-licensed, unmodified) are accepted as written when an agent uses them.
    @Test func realWorldSkillsAreAccepted() throws {
        let skills = Agentry.packageRoot.deletingLastPathComponent().appendingPathComponent(
            "shared/testdata/agent-skills")
        let manager = FileManager.default
        guard
            let names = try? manager.contentsOfDirectory(atPath: skills.path)
                .filter({ manager.fileExists(atPath: skills.appendingPathComponent("\($0)/SKILL.md").path) }).sorted(),
            !names.isEmpty
        else {
            print("skipping: \(skills.path) is not present")
            return
        }
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        for name in names {
            try directory.copy(from: skills.appendingPathComponent(name), to: "skills/\(name)")
        }
        let agent = try String(contentsOf: quickstart.appendingPathComponent("agents/hello.yaml"), encoding: .utf8)
            .replacingOccurrences(
                of: "skills: [greeting]", with: "skills: [\((names + ["greeting"]).joined(separator: ", "))]")
        try directory.write("agents/hello.yaml", agent)
        try directory.commitAll()
        let result = try report(.git(repository: directory.path, ref: "HEAD", path: ""))
        let valid = result.isValid
        #expect(valid, "\(summary(result))")
        #expect(result.catalog.skills.count == names.count + 2)
        // Where the specification and real skills disagree, a warning says so.
        #expect(result.diagnostics.allSatisfy { $0.severity == .warning && $0.code == .skillSpec })
    }
}
