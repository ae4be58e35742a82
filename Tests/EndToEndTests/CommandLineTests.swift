import Foundation
import TestSupport
import Testing

/// What every command has in common, and what `apply` says as it goes, on the built binary.
extension ApplyCommandTests {
    /// `apply` prints the plan, each step as it starts and ends with its time, and a summary;
    /// `-o json` says what it did in a document CI can read.
    @Test func applySaysWhatItDoesAndReportsItInJSON() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["first", "second"])
        let applied = try agentry(["apply"], in: repo)
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(
            applied.stdout.contains("first") && applied.stdout.contains("create"), "the plan first: \(applied.stdout)")
        #expect(applied.stderr.contains("agentry: create first: started"), "\(applied.stderr)")
        let ended = try #require(
            applied.stderr.split(separator: "\n").first { $0.hasPrefix("done   create first: running") })
        #expect(ended.range(of: #"\(\d+\.\ds\)$"#, options: .regularExpression) != nil, "its time: \(ended)")
        let summary = try #require(applied.stderr.split(separator: "\n").last)
        #expect(
            summary.range(of: #"^Apply complete: 2 created, 0 failed in \d+\.\ds$"#, options: .regularExpression)
                != nil,
            "\(summary)")

        try setLifecycle(repo, "second", "paused")
        let commit = try repo.commitAll("pause second")
        let json = try agentry(["apply", "-o", "json"], in: repo)
        #expect(json.status == 0, "\(json.stderr)")
        let document = try decodeJSON(json.stdout)
        #expect(document["formatVersion"] as? Int == 1 && document["kind"] as? String == "apply")
        #expect(document["commit"] as? String == commit)
        let results = try #require(document["results"] as? [[String: Any]])
        #expect(results.count == 1, "only what changed: \(results)")
        #expect(results.first?["agent"] as? String == "second" && results.first?["action"] as? String == "pause")
        #expect(results.first?["outcome"] as? String == "done")
        #expect((results.first?["durationMs"] as? Int).map { $0 >= 0 } == true)
        let totals = try #require(document["summary"] as? [String: Any])
        #expect(totals["paused"] as? Int == 1 && totals["failed"] as? Int == 0, "\(totals)")
        #expect(!json.stdout.contains("Apply complete"), "standard output is the document alone")

        // An invalid repository: a document that says so, exit 1.
        try repo.write("agents/broken.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: broken}\n")
        try repo.commitAll("broken")
        let invalid = try agentry(["apply", "-o", "json"], in: repo)
        #expect(invalid.status == 1)
        #expect(try decodeJSON(invalid.stdout)["valid"] as? Bool == false)
    }

    /// Every command finds the agent repository the same way: the flag, `$AGENTRY_REPO`, the
    /// repository the state applied, then the current folder; so `status` and `history` work from
    /// any folder.
    @Test func theRepositoryIsFoundTheSameWayFromAnyFolder() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["found"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        let elsewhere = try TemporaryDirectory("agentry-elsewhere")
        let status = try agentry(["status", "-o", "json"], in: elsewhere)
        #expect(status.status == 0, "\(status.stderr)")
        let report = try decodeJSON(status.stdout)
        #expect(report["repository"] as? String == repo.url.resolvingSymlinksInPath().path, "\(report)")
        let rows = report["agents"] as? [[String: Any]] ?? []
        #expect(rows.first?["sync"] as? String == "inSync", "compared with the applied repository: \(rows)")
        // The variable wins over the state: another repository, whose agents are not applied.
        let other = try repository(agents: ["other"])
        let named = try agentry(["status", "-o", "json"], in: elsewhere, environment: ["AGENTRY_REPO": other.path])
        let namedRows = (try decodeJSON(named.stdout)["agents"] as? [[String: Any]]) ?? []
        #expect(namedRows.contains { $0["name"] as? String == "other" && $0["sync"] as? String == "notApplied" })
        // And the flag over the variable.
        let flagged = try agentry(
            ["status", "--repo", repo.path, "-o", "json"], in: elsewhere, environment: ["AGENTRY_REPO": other.path])
        #expect((try decodeJSON(flagged.stdout)["repository"] as? String) == repo.url.resolvingSymlinksInPath().path)
        // History from elsewhere reads the applied repository's branch.
        let history = try agentry(["history", "found", "-o", "json"], in: elsewhere)
        #expect(history.status == 0, "\(history.stderr)")
    }

    /// `--log-level` is taken by every command, and checked.
    @Test func everyCommandTakesALogLevel() throws {
        let repo = try repository(agents: ["quiet"])
        for command in [
            ["validate"], ["plan", "--empty-state"], ["diff", "HEAD", "HEAD"], ["status"], ["apply"], ["run", "quiet"],
            ["exec", "quiet", "--", "true"], ["kill", "quiet", "--reason", "x"], ["unkill", "quiet"],
            ["secret", "list"], ["disks", "list"], ["history"], ["show", "x"], ["logs", "quiet"], ["schema", "agent"],
            ["image", "build"],
        ] {
            let arguments =
                Array(command.prefix { $0 != "--" }) + ["--log-level", "loud"]
                + (command.contains("--") ? Array(command.drop { $0 != "--" }) : [])
            let result = try Shell.run(Agentry.binary.path, arguments, in: repo.url)
            #expect(result.status == 2, "\(command): \(result.stderr)")
            #expect(
                result.stderr.contains("--log-level loud: expected one of trace, debug"), "\(command): \(result.stderr)"
            )
        }
    }
}
