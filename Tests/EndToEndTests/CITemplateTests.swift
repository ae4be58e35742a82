import Foundation
import TestSupport
import Testing

/// The CI templates in reconciler/ci/ run as written against a real repository and the built binary.
@Suite struct CITemplateTests {
    @Test func pullRequestCheckWritesTheComment() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: Agentry.packageRoot.appendingPathComponent("examples/quickstart"))
        let base = try directory.commitAll("base")
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents/docs-writer.yaml"))
        let head = try directory.commitAll("head")
        let script = Agentry.packageRoot.appendingPathComponent("reconciler/ci/pr-check.sh").path
        let result = try Shell.run(
            script, [base, head, "comment.md"], in: directory.url,
            environment: ["AGENTRY": Agentry.binary.path, "VALIDATE_FORMAT": "github", "AGENTRY_STATE_DIR": ""])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let comment = try String(contentsOf: directory.url.appendingPathComponent("comment.md"), encoding: .utf8)
        #expect(comment.hasPrefix("### agentry diff: 1 to delete, 2 unchanged"))
        #expect(comment.contains("| `docs-writer` | **delete** |"))
    }

    @Test func workflowsAreValidYAMLNamingRealCommands() throws {
        for name in ["agentry-pull-request.yml", "agentry-apply.yml"] {
            let path = Agentry.packageRoot.appendingPathComponent("reconciler/ci/github/\(name)").path
            let parsed = try Shell.run(
                "python3",
                ["-c", "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(sorted(d['jobs']))", path])
            #expect(parsed.status == 0, "\(parsed.stderr)")
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.contains("agentry validate"))
            #expect(text.contains("AGENTRY_REPO: ${{ github.workspace }}"), "\(name) reads its checkout")
            if name == "agentry-apply.yml" {
                #expect(text.contains("contents: write") && text.contains("AGENTRY_GIT_TOKEN"), "it may push history")
            }
        }
    }
}
