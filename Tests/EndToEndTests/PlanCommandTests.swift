import Foundation
import TestSupport
import Testing

/// `agentry diff`, `plan` and `status` on the built binary, as CI runs them on a pull request.
@Suite struct PlanCommandTests {
    let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart")

    /// A repository with two commits: the quickstart, then a harness and model swap (triage from
    /// Claude Code on sonnet to Hermes on the local model) and a removal.
    func pullRequest() throws -> TemporaryDirectory {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let triage = directory.url.appendingPathComponent("agents/triage.yaml")
        try directory.write(
            "agents/triage.yaml",
            try String(contentsOf: triage, encoding: .utf8).replacingOccurrences(
                of: "  model: sonnet", with: "  model: local-llama"
            ).replacingOccurrences(of: "harness: claude-code", with: "harness: hermes")
                .replacingOccurrences(of: "  fallbackModels: [haiku]\n", with: ""))
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents/docs-writer.yaml"))
        try directory.commitAll("head")
        return directory
    }

    @Test func diffInAllThreeFormats() throws {
        let directory = try pullRequest()
        let text = try Agentry.run(["diff", "HEAD~1", "HEAD"], in: directory.url)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("1 to reinstall, 1 to delete, 1 unchanged"))
        #expect(text.stdout.contains("reinstall triage"))
        #expect(text.stdout.contains("harness: claude-code → hermes"), "\(text.stdout)")
        #expect(text.stdout.contains("model.credentials: ref anthropic/api-key → (removed)"))
        #expect(!text.stdout.contains("\u{1B}["), "no colour when not on a terminal")

        let markdown = try Agentry.run(["diff", "HEAD~1", "HEAD", "-o", "markdown"], in: directory.url)
        #expect(markdown.stdout.hasPrefix("### agentry diff: 1 to reinstall, 1 to delete, 1 unchanged"))
        #expect(markdown.stdout.contains("| `triage` | **reinstall** |"))
        #expect(markdown.stdout.contains("<details><summary>Details</summary>"))

        let json = try decodeJSON(try Agentry.run(["diff", "HEAD~1", "HEAD", "-o", "json"], in: directory.url).stdout)
        #expect(json["formatVersion"] as? Int == 1)
        #expect(json["kind"] as? String == "diff")
        let actions = try #require(json["actions"] as? [[String: Any]])
        #expect(actions.map { $0["action"] as? String } == ["delete", "noop", "reinstall"])
        let reasons = try #require(actions[2]["reasons"] as? [[String: Any]])
        #expect(
            reasons.contains {
                $0["field"] as? String == "model" && $0["old"] as? String == "sonnet"
                    && $0["new"] as? String == "local-llama"
            })
    }

    /// A pull request's checks (validate, diff, plan) parse the repository once between them,
    /// through the parse cache in the user's cache folder; a broken cache costs nothing but time.
    @Test func aPullRequestsChecksParseTheRepositoryOnce() throws {
        let directory = try pullRequest()
        let cache = try TemporaryDirectory("agentry-cache")
        let folder = cache.path + "/agentry"
        func agentry(_ arguments: [String]) throws -> Agentry.Result {
            try Shell.run(
                Agentry.binary.path, arguments + ["--log-level", "debug"], in: directory.url,
                environment: ["AGENTRY_CACHE_DIR": folder])
        }
        let validate = try agentry(["validate"])
        #expect(validate.status == 0 && validate.stderr.contains("full load"), "\(validate.stderr)")
        let diff = try agentry(["diff", "HEAD~1", "HEAD"])
        #expect(diff.status == 0 && diff.stdout.contains("1 to reinstall, 1 to delete"), "\(diff.stderr)")
        #expect(!diff.stderr.contains("full load"), "the base is read from the validated head: \(diff.stderr)")
        #expect(diff.stderr.contains("incremental load"), "\(diff.stderr)")
        let plan = try agentry(["plan", "--empty-state"])
        #expect(plan.status == 0 && plan.stdout.contains("2 to create"), "\(plan.stderr)")
        #expect(!plan.stderr.contains("full load") && !plan.stderr.contains("incremental load"), "\(plan.stderr)")

        // --no-cache parses everything afresh and leaves the cache as it was.
        let database = folder + "/parse-cache.sqlite"
        let before = try FileManager.default.attributesOfItem(atPath: database)[.modificationDate] as? Date
        let fresh = try agentry(["diff", "HEAD~1", "HEAD", "--no-cache"])
        #expect(fresh.status == 0 && fresh.stderr.contains("full load"), "\(fresh.stderr)")
        #expect(try FileManager.default.attributesOfItem(atPath: database)[.modificationDate] as? Date == before)

        // A cache that is not a database (or cannot be written) is worked without.
        try FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try "not a database".write(toFile: database, atomically: true, encoding: .utf8)
        let broken = try agentry(["validate"])
        #expect(
            broken.status == 0 && broken.stdout.split(separator: "\n").contains { $0.hasPrefix("valid") },
            "\(broken.stdout)\(broken.stderr)")
        let unwritable = try Shell.run(
            Agentry.binary.path, ["diff", "HEAD~1", "HEAD"], in: directory.url,
            environment: ["AGENTRY_CACHE_DIR": database + "/inside-a-file"])
        #expect(unwritable.status == 0 && unwritable.stderr.isEmpty, "\(unwritable.stderr)")
    }

    @Test func detailedExitCodes() throws {
        let directory = try pullRequest()
        #expect(try Agentry.run(["diff", "HEAD~1", "HEAD", "--detailed-exitcode"], in: directory.url).status == 2)
        #expect(try Agentry.run(["diff", "HEAD", "HEAD", "--detailed-exitcode"], in: directory.url).status == 0)
        #expect(try Agentry.run(["diff", "HEAD", "nope", "--detailed-exitcode"], in: directory.url).status == 1)
        #expect(try Agentry.run(["diff", "HEAD", "nope"], in: directory.url).status == 2)
    }

    @Test func planSavesAPlanAndStatusShowsAgents() throws {
        let directory = try pullRequest()
        let state = try TemporaryDirectory("agentry-state")
        let planFile = state.url.appendingPathComponent("plan.json").path
        // No state yet: plan and status say so (exit 2) and create nothing; --empty-state
        // plans a first deployment.
        let absent = state.path + "/absent"
        for command in [["plan"], ["status"]] {
            let refused = try Agentry.run(command + ["--state-dir", absent], in: directory.url)
            #expect(refused.status == 2 && refused.stderr.contains("no agentry state"), "\(command): \(refused.stderr)")
        }
        try "a file\n".write(toFile: state.path + "/file", atomically: true, encoding: .utf8)
        let file = try Agentry.run(["plan", "--state-dir", state.path + "/file"], in: directory.url)
        #expect(file.status == 2 && file.stderr.contains("is a file"), "\(file.stderr)")
        #expect(!FileManager.default.fileExists(atPath: absent), "read-only commands create no state directory")
        let plan = try Agentry.run(
            ["plan", "--state-dir", state.path, "--empty-state", "--out", planFile, "--detailed-exitcode"],
            in: directory.url)
        #expect(plan.status == 2, "\(plan.stderr)")
        #expect(plan.stdout.contains("2 to create"))
        let saved = try decodeJSON(try String(contentsOfFile: planFile, encoding: .utf8))
        #expect(
            saved["commit"] as? String
                == (try Shell.git(["rev-parse", "HEAD"], in: directory.url)).trimmingCharacters(
                    in: .whitespacesAndNewlines))
        #expect((saved["actualDigest"] as? String)?.count == 64)

        // A folder with no database in it is no state either.
        let status = try Agentry.run(["status", "--state-dir", state.path], in: directory.url)
        #expect(status.status == 2 && status.stderr.contains("holds no agentry state database"), "\(status.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state.path + "/state.sqlite"))
    }

    @Test func invalidRepositoriesAreNotPlanned() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write("agents/bad.yaml", "apiVersion: agentry/v1\nkind: Agent\n")
        try directory.commitAll()
        let state = try TemporaryDirectory("agentry-state")
        let result = try Agentry.run(["plan", "--state-dir", state.path, "--empty-state"], in: directory.url)
        #expect(result.status == 1)
        #expect(result.stderr.contains("agents/bad.yaml:"))
        #expect(result.stderr.contains("nothing was planned"))
        #expect(result.stdout.isEmpty)
    }
}
