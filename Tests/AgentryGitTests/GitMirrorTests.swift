import AgentryGit
import CGit2
import Foundation
import TestSupport
import Testing

@Suite struct GitMirrorTests {
    /// A remote (a bare repository, as a server keeps it) with one commit on `main`, pushed from a
    /// clone that later commits go through.
    func remote() throws -> (clone: TemporaryDirectory, remote: TemporaryDirectory) {
        let clone = try TemporaryDirectory()
        try clone.write("agents/a.yaml", "a: 1\n")
        try clone.commitAll("first")
        let remote = try TemporaryDirectory()
        try Shell.git(["init", "-q", "--bare", remote.path], in: remote.url)
        try Shell.git(["push", "-q", remote.path, "HEAD:refs/heads/main"], in: clone.url)
        return (clone, remote)
    }

    func head(_ repository: String, _ revision: String = "HEAD") throws -> String {
        try Shell.git(["--git-dir", repository, "rev-parse", revision], in: URL(fileURLWithPath: repository))
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func followsTheBranchForcePushesIncluded() throws {
        let (clone, remote) = try remote()
        let state = try TemporaryDirectory()
        let mirror = state.path + "/mirror.git"
        let url = "file://" + remote.path
        let first = try GitMirror.fetch(url: url, branch: "main", into: mirror, credentials: GitCredentials())
        let remoteHead = try head(remote.path, "main")
        #expect("\(first)" == remoteHead)
        // A bare repository whose HEAD is the branch, so that plain git (and agentry) read it as is.
        #expect(try head(mirror) == "\(first)")
        #expect(try Shell.git(["--git-dir", mirror, "config", "remote.origin.url"], in: state.url) == url + "\n")
        #expect(try Shell.git(["--git-dir", mirror, "show", "HEAD:agents/a.yaml"], in: state.url) == "a: 1\n")

        try clone.write("agents/a.yaml", "a: 2\n")
        try clone.commitAll("second", initialize: false)
        try Shell.git(["push", "-q", remote.path, "HEAD:refs/heads/main"], in: clone.url)
        let second = try GitMirror.fetch(url: url, branch: "main", into: mirror, credentials: GitCredentials())
        let secondHead = try head(mirror)
        #expect(second != first && secondHead == "\(second)")

        // History rewritten upstream (a force-push back to the first commit): followed.
        try Shell.git(["push", "-q", "--force", remote.path, "\(first):refs/heads/main"], in: clone.url)
        let rewound = try GitMirror.fetch(url: url, branch: "main", into: mirror, credentials: GitCredentials())
        let rewoundHead = try head(mirror)
        #expect(rewound == first && rewoundHead == "\(first)")
        #expect(!FileManager.default.fileExists(atPath: mirror + ".new-\(getpid())"), "nothing left half made")
    }

    @Test func anotherBranchBecomesHead() throws {
        let (clone, remote) = try remote()
        try Shell.git(["push", "-q", remote.path, "HEAD:refs/heads/production"], in: clone.url)
        let state = try TemporaryDirectory()
        let mirror = state.path + "/mirror.git"
        let tip = try GitMirror.fetch(
            url: remote.path, branch: "production", into: mirror, credentials: GitCredentials())
        #expect(try head(mirror) == "\(tip)")
        #expect(
            try Shell.git(["--git-dir", mirror, "symbolic-ref", "HEAD"], in: state.url) == "refs/heads/production\n")
    }

    @Test func refusalsSayWhatIsWrong() throws {
        let (_, remote) = try remote()
        let state = try TemporaryDirectory()
        let mirror = state.path + "/mirror.git"
        func failure(url: String, branch: String = "main", into path: String? = nil) -> String {
            do {
                _ = try GitMirror.fetch(
                    url: url, branch: branch, into: path ?? mirror, credentials: GitCredentials())
                return "(no failure)"
            } catch { return "\(error)" }
        }
        let missing = failure(url: remote.path, branch: "nope")
        #expect(missing.contains("has no branch nope"), "\(missing)")
        let password = failure(url: "https://bot:s3cret@git.example.com/agents.git")
        #expect(password.contains("password") && password.contains("AGENTRY_GIT_TOKEN"), "\(password)")
        #expect(!password.contains("s3cret"))
        let user = failure(url: "https://ghp_tokenAsUser@git.example.com/agents.git")
        #expect(user.contains("user") && !user.contains("ghp_tokenAsUser"), "\(user)")
        #expect(failure(url: remote.path, branch: "two..dots").contains("not a valid branch name"))
        #expect(GitMirror.problem(url: remote.path, branch: "agentry", historyBranch: "agentry/history") != nil)
        #expect(
            GitMirror.problem(url: "ssh://git@host/agents.git", branch: "main", historyBranch: "agentry/history") == nil
        )
        // A failed first fetch leaves nothing behind (a mistyped URL binds nothing).
        #expect(!FileManager.default.fileExists(atPath: mirror))
        // The mirror follows the URL it was made for; another is refused, not followed.
        _ = try GitMirror.fetch(url: remote.path, branch: "main", into: mirror, credentials: GitCredentials())
        let other = try TemporaryDirectory()
        let moved = failure(url: other.path)
        #expect(moved.contains("follows \(remote.path), not \(other.path)"), "\(moved)")
        #expect(moved.contains("git --git-dir \(mirror) remote set-url origin NEW-URL"), "\(moved)")
        // Nothing listens: the error names the remote.
        let closed = failure(url: "http://127.0.0.1:9/agents.git", into: state.path + "/other.git")
        #expect(closed.contains("fetch main from http://127.0.0.1:9/agents.git"), "\(closed)")
        // A folder that is not a mirror is left alone.
        try state.write("plain/file.txt", "keep me\n")
        let plain = failure(url: remote.path, into: state.path + "/plain")
        #expect(plain.contains("is not agentry's mirror"), "\(plain)")
    }

    /// What the remote's branch turns into is checked before the mirror's branch moves: a branch
    /// deleted upstream, or pointing at a tree, leaves the mirror at its last commit and says why.
    @Test func onlyACommitMovesTheBranch() throws {
        let (clone, remote) = try remote()
        let state = try TemporaryDirectory()
        let mirror = state.path + "/mirror.git"
        let good = try GitMirror.fetch(url: remote.path, branch: "main", into: mirror, credentials: GitCredentials())
        let tree = try Shell.git(["rev-parse", "HEAD^{tree}"], in: clone.url).trimmingCharacters(in: .newlines)
        // (git itself refuses to point a branch at a tree; a hostile server need not.)
        try (tree + "\n").write(toFile: remote.path + "/refs/heads/main", atomically: true, encoding: .utf8)
        #expect(throws: GitError.self) {
            try GitMirror.fetch(url: remote.path, branch: "main", into: mirror, credentials: GitCredentials())
        }
        let stayed = try head(mirror)
        #expect(stayed == "\(good)", "the mirror stays at its commit")
        try Shell.git(["--git-dir", remote.path, "update-ref", "-d", "refs/heads/main"], in: remote.url)
        do {
            _ = try GitMirror.fetch(url: remote.path, branch: "main", into: mirror, credentials: GitCredentials())
            Issue.record("a branch deleted upstream is not a fetch that worked")
        } catch {
            #expect("\(error)".contains("has no branch main"), "\(error)")
        }
        #expect(try head(mirror) == "\(good)")
    }

    /// A state directory reached through a symbolic link, or inside a git work tree, is used as it is.
    @Test func aLinkedStateDirectoryInsideAWorkTreeWorks() throws {
        let (_, remote) = try remote()
        let outer = try TemporaryDirectory()
        try Shell.git(["init", "-q", outer.path], in: outer.url)
        try FileManager.default.createDirectory(atPath: outer.path + "/state", withIntermediateDirectories: true)
        try outer.symlink("link", to: outer.path + "/state")
        let mirror = outer.path + "/link/mirror.git"
        let first = try GitMirror.fetch(url: remote.path, branch: "main", into: mirror, credentials: GitCredentials())
        let again = try GitMirror.fetch(url: remote.path, branch: "main", into: mirror, credentials: GitCredentials())
        #expect(first == again)
    }

    /// The token goes in clear only to this machine: the URL's host, not a prefix of its text.
    @Test func plainHTTPCountsAsLocalOnlyForALoopbackHost() {
        for url in ["http://127.0.0.1:8080/a.git", "http://localhost/a.git", "http://[::1]:9/a", "http://localhost"] {
            #expect(agentry_url_is_loopback_http(url) == 1, "\(url)")
        }
        for url in [
            "http://localhost@192.0.2.2/a.git", "http://localhost.evil.example/a.git", "http://127.0.0.1.nip.io/a",
            "https://localhost/a", "http://192.0.2.2/?localhost",
        ] {
            #expect(agentry_url_is_loopback_http(url) == 0, "\(url)")
        }
    }

    @Test(arguments: [
        ("https://github.com/acme/agents.git", true), ("ssh://git@github.com/acme/agents.git", true),
        ("git@github.com:acme/agents.git", true), ("file:///srv/git/agents.git", true),
        ("/srv/git/agents", false), ("./agents", false), ("agents", false), ("../a:b/c", false),
        ("C", false), ("git+ssh://host/x", true), ("1x://host/x", true), ("host:foo://bar", true),
    ])
    func remotesAreToldFromFolders(location: String, remote: Bool) {
        #expect(GitMirror.isRemote(location) == remote)
    }
}
