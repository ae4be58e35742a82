import Foundation
import TestSupport
import Testing

/// `agentry validate`, `schema` and `init` run as a user or CI runs them.
@Suite struct ValidateCommandTests {
    let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart")

    func brokenRepository() throws -> TemporaryDirectory {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write(
            "agents/broken.yaml",
            """
            apiVersion: agentry/v1
            kind: Agent
            metadata: {name: broken, owner: "a, b: c"}
            spec:
              harness: shel
              model: sonnet
              environment: minimal
              memory: {snapshot: on}

            """)
        try directory.commitAll()
        return directory
    }

    @Test func quickstartIsValidFromAFolderAndFromGit() throws {
        let fromFolder = try Agentry.run(["validate", "--dir", quickstart.path])
        #expect(fromFolder.status == 0, "\(fromFolder.stdout)\(fromFolder.stderr)")
        #expect(fromFolder.stdout.hasPrefix("valid"))

        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll()
        let fromGit = try Agentry.run(["validate"], in: directory.url)
        #expect(fromGit.status == 0, "\(fromGit.stdout)\(fromGit.stderr)")
        #expect(fromGit.stdout == fromFolder.stdout)
        #expect(!fromGit.stderr.contains("uncommitted"), "a clean work tree: \(fromGit.stderr)")

        // validate reads the commit: changes not committed yet are said not to have been checked.
        try directory.write("agents/new.yaml", "apiVersion: agentry/v1\nkind: Agent\n")
        let dirty = try Agentry.run(["validate"], in: directory.url)
        #expect(dirty.status == 0, "the commit is still valid: \(dirty.stdout)")
        #expect(
            dirty.stderr.contains("note: uncommitted changes to agents/new.yaml were not checked"), "\(dirty.stderr)")
        #expect(try Agentry.run(["validate", "--ref", "HEAD~0"], in: directory.url).stderr.isEmpty)
    }

    @Test func invalidRepositoryExitsOneWithCompilerStyleLines() throws {
        let directory = try brokenRepository()
        let result = try Agentry.run(["validate", "--repo", directory.path])
        #expect(result.status == 1)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("agents/broken.yaml:5:12: error[unresolved-reference]: spec.harness") })
        #expect(lines.contains { $0.hasPrefix("agents/broken.yaml:8:22: error[yaml11-boolean]") })
        #expect(lines.last?.hasPrefix("invalid: 2 errors") == true)
        #expect(result.stderr.isEmpty)
    }

    @Test func jsonOutputIsStableAndIdenticalFromGitAndFolder() throws {
        let directory = try brokenRepository()
        let fromGit = try decodeJSON(try Agentry.run(["validate", "--repo", directory.path, "-o", "json"]).stdout)
        let fromFolder = try decodeJSON(try Agentry.run(["validate", "--dir", directory.path, "-o", "json"]).stdout)
        #expect(fromGit["formatVersion"] as? Int == 1)
        #expect(fromGit["valid"] as? Bool == false)
        #expect((fromGit["source"] as? [String: Any])?["type"] as? String == "git")
        #expect(((fromGit["source"] as? [String: Any])?["commit"] as? String)?.count == 40)
        #expect(diagnosticPairs(fromGit) == diagnosticPairs(fromFolder))
        #expect(
            diagnosticPairs(fromGit) == [
                "agents/broken.yaml:5:unresolved-reference", "agents/broken.yaml:8:yaml11-boolean",
            ])
        let first = try #require((fromGit["diagnostics"] as? [[String: Any]])?.first)
        #expect(Set(first.keys) == ["file", "line", "column", "severity", "code", "category", "message"])
        #expect((fromGit["summary"] as? [String: Any])?["agents"] as? Int == 4)
    }

    @Test func githubOutputIsWorkflowAnnotations() throws {
        let directory = try brokenRepository()
        let result = try Agentry.run(["validate", "--repo", directory.path, "-o", "github"])
        #expect(result.status == 1)
        #expect(
            result.stdout.contains(
                "::error file=agents/broken.yaml,line=5,col=12,title=agentry unresolved-reference::spec.harness: no Harness named \"shel\"; did you mean \"shell\"?"
            ))
    }

    @Test func subfolderAndRefOptions() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart, to: "platform/agents")
        let good = try directory.commitAll("good")
        try directory.write("platform/agents/models/bad.yaml", "apiVersion: agentry/v1\nkind: Model\n")
        try directory.commitAll("bad")
        let atHead = try Agentry.run(["validate", "--repo", directory.path, "--path", "platform/agents"])
        #expect(atHead.status == 1)
        #expect(atHead.stdout.contains("platform/agents/models/bad.yaml:"))
        let atGood = try Agentry.run(["validate", "--repo", directory.path, "--path", "platform/agents", "--ref", good])
        #expect(atGood.status == 0, "\(atGood.stdout)")
        let previous = try Agentry.run([
            "validate", "--repo", directory.path, "--path", "platform/agents", "--ref", "HEAD~1",
        ])
        #expect(previous.status == 0)
    }

    @Test func warningsAsErrors() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write("agents/empty.yaml", "# nothing here yet\n")
        #expect(try Agentry.run(["validate", "--dir", directory.path]).status == 0)
        let strict = try Agentry.run(["validate", "--dir", directory.path, "--warnings-as-errors"])
        #expect(strict.status == 1)
        #expect(strict.stdout.contains("warning[empty-file]"))
        #expect(strict.stdout.contains("invalid: 0 errors, 1 warning (--warnings-as-errors)"), "\(strict.stdout)")
        let json = try Agentry.run(["validate", "--dir", directory.path, "--warnings-as-errors", "-o", "json"])
        #expect(json.status == 1)
        #expect(try decodeJSON(json.stdout)["valid"] as? Bool == false, "\(json.stdout)")
    }

    @Test(arguments: [
        (["validate", "--repo", "/nonexistent"], "no git repository"),
        (["validate", "--ref", "no-such-ref"], "no commit, branch or tag named \"no-such-ref\""),
        (["validate", "--dir", "/nonexistent"], "cannot read /nonexistent"),
        (["validate", "--dir", ".", "--repo", "."], "cannot be combined"),
        (["validate", "-o", "yaml"], "yaml"),
        (["validate", "--path", "missing"], "has no folder missing"),
        (["frobnicate"], "frobnicate"),
        (["schema", "agnet"], "did you mean \"agent\""),
    ])
    func cannotRunExitsTwoWithAMessage(arguments: [String], message: String) throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll()
        let result = try Agentry.run(arguments, in: directory.url)
        #expect(result.status == 2, "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"), "never a stack trace")
    }

    @Test func hostileFilesNeverCrashOrHang() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write(
            "bomb.yaml",
            (["a: &a [x, x, x, x, x, x, x, x, x]"]
                + (1...9).map { level in
                    "l\(level): &l\(level) ["
                        + Array(repeating: "*\(level == 1 ? "a" : "l\(level - 1)")", count: 9).joined(separator: ", ")
                        + "]"
                }).joined(separator: "\n") + "\n")
        try directory.write("deep.yaml", String(repeating: "[", count: 500_000))
        try directory.write("huge.yaml", String(repeating: "# padding\n", count: 200_000))
        try Data([0x6B, 0x3A, 0x20, 0xC3, 0x28, 0x0A]).write(to: directory.url.appendingPathComponent("latin1.yaml"))
        let result = try Agentry.run(["validate", "--dir", directory.path, "-o", "json"], timeout: 60)
        #expect(result.status == 1)
        let pairs = diagnosticPairs(try decodeJSON(result.stdout))
        #expect(
            pairs.contains("bomb.yaml:2:yaml-limit")
                || pairs.contains { $0.hasPrefix("bomb.yaml:") && $0.hasSuffix("yaml-limit") })
        #expect(pairs.contains { $0.hasPrefix("deep.yaml:1:yaml-limit") })
        #expect(pairs.contains("huge.yaml:1:file-too-large"))
        #expect(pairs.contains("latin1.yaml:1:not-utf8"))
    }

    @Test func schemaPrintsEachKind() throws {
        for name in ["agent", "harness", "model", "environment", "skill", "resource"] {
            let result = try Agentry.run(["schema", name])
            #expect(result.status == 0)
            let schema = try decodeJSON(result.stdout)
            #expect(schema["$schema"] as? String == "https://json-schema.org/draft/2020-12/schema")
        }
    }

    @Test func initCreatesARepositoryThatValidatesClean() throws {
        let directory = try TemporaryDirectory()
        let created = try Agentry.run(["init", "team-agents", "--owner", "ml-team"], in: directory.url)
        #expect(created.status == 0, "\(created.stderr)")
        let repository = directory.url.appendingPathComponent("team-agents")
        let result = try Agentry.run(["validate"], in: repository)
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout.contains("1 agent"))
        let head = try String(contentsOf: repository.appendingPathComponent("agents/hello.yaml"), encoding: .utf8)
        #expect(head.hasPrefix("# yaml-language-server: $schema=../.agentry/schemas/resource.schema.json"))
        #expect(
            FileManager.default.fileExists(
                atPath: repository.appendingPathComponent(".agentry/schemas/resource.schema.json").path))
        let again = try Agentry.run(["init", "team-agents"], in: directory.url)
        #expect(again.status == 2)
        #expect(again.stderr.contains("not empty"))

        // The first commit is the user's, as git knows them.
        let home = try TemporaryDirectory("agentry-home")
        try home.write(".gitconfig", "[user]\n\tname = Ana Lima\n\temail = ana@example.com\n")
        let mine = try Shell.run(
            Agentry.binary.path, ["init", "mine"], in: directory.url,
            environment: [
                "HOME": home.path, "XDG_CONFIG_HOME": "", "GIT_AUTHOR_NAME": "", "GIT_AUTHOR_EMAIL": "", "EMAIL": "",
            ])
        #expect(mine.status == 0, "\(mine.stderr)")
        let author = try Shell.run(
            "git", ["-C", directory.url.appendingPathComponent("mine").path, "log", "-1", "--format=%an <%ae>"])
        #expect(author.stdout == "Ana Lima <ana@example.com>\n", "\(author.stdout)\(author.stderr)")
    }

    @Test func preCommitHookRunsValidateOnTheWorkTree() throws {
        let hooks = try String(
            contentsOf: Agentry.packageRoot.appendingPathComponent(".pre-commit-hooks.yaml"), encoding: .utf8)
        #expect(hooks.contains("id: agentry-validate"))
        #expect(hooks.contains("entry: agentry validate --dir ."))
    }
}
