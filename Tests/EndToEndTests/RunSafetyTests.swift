import Foundation
import TestSupport
import Testing

/// Runs that do not end well, on real microVMs: interrupted by Ctrl-C or SIGTERM, their agentry
/// killed, side by side with other runs, applies and commands; and what they leave in history.
/// (Part of the apply suite: it shares its images.)
extension ApplyCommandTests {
    /// `agentry` started in the background, its output in files the test reads as it grows.
    func startAgentry(_ arguments: [String], in directory: TemporaryDirectory) throws -> RunningCommand {
        let withState = [arguments[0], "--state-dir", state.path] + arguments.dropFirst()
        return try RunningCommand(
            Agentry.binary.path, withState, in: directory.url, environment: ["AGENTRY_ACCELERATOR": "tcg"])
    }

    /// The newest run record on the history branch, as text.
    func latestRecord(_ repo: TemporaryDirectory) throws -> String {
        try git(["show", "agentry/history:" + (try latestRunFolder(repo)) + "/record.yaml"], in: repo)
    }

    /// Checks a record against the published schema with Python's jsonschema.
    func expectValidRecord(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let check = try Shell.run(
            "python3",
            [
                "-c",
                "import sys, json, yaml, jsonschema; jsonschema.validate(yaml.safe_load(sys.stdin), json.load(open(sys.argv[1])), format_checker=jsonschema.FormatChecker()); print('valid')",
                Agentry.packageRoot.appendingPathComponent("schemas/run-record.schema.json").path,
            ],
            input: text)
        #expect(check.stdout == "valid\n", "\(check.stderr)\n\(text)", sourceLocation: sourceLocation)
    }

    /// How many processes in the guest have `pattern` (a grep regular expression) in their command line.
    func guestProcesses(_ pattern: String, _ repo: TemporaryDirectory) throws -> Int {
        let listed = try agentry(
            [
                "exec", "greeter", "--", "sh", "-c",
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c -e '\(pattern)' || true",
            ], in: repo)
        #expect(listed.status == 0, "exec failed: \(listed.stderr)")
        return Int(listed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Ctrl-C ends the run and all it started (a daemon that double-forked out of the harness's
    /// session too),
    /// removes its secrets and records it as interrupted (exit 130); a run whose agentry was
    /// killed leaves processes and secrets behind, which the next run ends and removes before it
    /// starts, recording the lost run; SIGTERM exits 143.
    @Test func interruptedRunsAreRecordedAndLeaveNothingBehind() throws {
        defer { stopMachines() }
        let repo = try runRepository(
            script: """
                if [ "$PROMPT" = look ]; then mkdir -p out; ls /run/secrets | wc -l > out/secret-folders; \
                for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c -e '^sh -c exec' > out/daemons; exit 0; fi; \
                mkdir -p out; (setsid sh -c 'exec >/dev/null 2>&1 </dev/null; while true; do date >> /agent/out/daemon.log; sleep 0.2; done' &); \
                while [ ! -s out/daemon.log ]; do sleep 0.1; done; echo started; sleep 600
                """,
            secrets: [("API_TOKEN", "ci/api-token")])
        let set = try Shell.run(
            Agentry.binary.path, ["secret", "set", "ci/api-token", "--state-dir", state.path], input: "tok-interrupt\n")
        #expect(set.status == 0, "\(set.stderr)")

        // Ctrl-C.
        let first = try startAgentry(["run", "greeter", "--apply"], in: repo)
        try waitUntil(seconds: 180) { first.stdout.contains("started") }
        first.signal(SIGINT)
        #expect(try first.wait() == 130, "\(first.stderr)")
        #expect(first.stderr.contains("interrupted"), "\(first.stderr)")
        let interrupted = try latestRecord(repo)
        #expect(interrupted.contains("outcome: \"interrupted\"") && interrupted.contains("phase: \"harness\""))
        #expect(interrupted.contains("SIGINT") && interrupted.contains("exitStatus: null"), "\(interrupted)")
        try expectValidRecord(interrupted)
        let log = try git(["show", "agentry/history:" + (try latestRunFolder(repo)) + "/log.txt"], in: repo)
        #expect(log.hasPrefix("started\n"), "what was streamed is kept: \(log)")
        #expect(try guestProcesses("daemon[.]log", repo) == 0, "the daemon went with the run")
        #expect(try guestProcesses("^sleep 600", repo) == 0)
        #expect(try agentry(["exec", "greeter", "--", "ls", "/run/secrets"], in: repo).stdout == "")

        // agentry killed outright: the run's processes and secrets stay behind in the guest...
        let second = try startAgentry(["run", "greeter"], in: repo)
        try waitUntil(seconds: 120) { second.stdout.contains("started") }
        second.signal(SIGKILL)
        _ = try second.wait()
        // (The harness says "started" once the daemon let go of its output: a daemon still holding
        // the harness's pipes is part of the command and goes with it.) At least one: a fork of the
        // daemon's loop not yet exec'd into `sleep` counts as well.
        #expect(try guestProcesses("daemon[.]log", repo) >= 1)
        #expect(try agentry(["exec", "greeter", "--", "ls", "/run/secrets"], in: repo).stdout != "")
        // ...until the next run: it records the lost one, then ends and removes what it left.
        let third = try agentry(["run", "greeter", "--prompt", "look"], in: repo)
        #expect(third.status == 0, "\(third.stderr)")
        #expect(third.stderr.contains("as interrupted (its agentry stopped before it ended)"), "\(third.stderr)")
        let folder = try latestRunFolder(repo)
        #expect(try git(["show", "agentry/history:\(folder)/artifacts/daemons"], in: repo) == "0\n")
        #expect(try git(["show", "agentry/history:\(folder)/artifacts/secret-folders"], in: repo) == "1\n")
        let records = try git(["ls-tree", "-r", "--name-only", "agentry/history", "runs/greeter"], in: repo)
            .split(separator: "\n").filter { $0.hasSuffix("/record.yaml") }
        #expect(records.count == 3, "every run is recorded: \(records)")
        let lost = try records.map { try git(["show", "agentry/history:\($0)"], in: repo) }
            .filter { $0.contains("its agentry stopped") || $0.contains("stopped before the run ended") }
        #expect(lost.count == 1 && lost[0].contains("outcome: \"interrupted\""), "\(lost)")
        try expectValidRecord(lost.first ?? "")

        // SIGTERM.
        let fourth = try startAgentry(["run", "greeter"], in: repo)
        try waitUntil(seconds: 120) { fourth.stdout.contains("started") }
        fourth.signal(SIGTERM)
        #expect(try fourth.wait() == 143, "\(fourth.stderr)")
        #expect(try latestRecord(repo).contains("SIGTERM"))
        #expect(try guestProcesses("daemon[.]log", repo) == 0)
    }

    /// A run and everything else on its agent at once: `exec` works during the run, a second run
    /// waits for the first (saying so), an apply that must restart the machine waits for the run
    /// instead of killing it, and all of them finish.
    @Test func runsAppliesAndCommandsSideBySide() throws {
        defer { stopMachines() }
        let repo = try runRepository(
            script:
                "mkdir -p out; echo waiting; while [ ! -f /agent/go ]; do sleep 0.2; done; rm -f /agent/go; echo \"$PROMPT\" > out/prompt"
        )
        let first = try startAgentry(["run", "greeter", "--apply", "--prompt", "one"], in: repo)
        try waitUntil(seconds: 180) { first.stdout.contains("waiting") }
        let during = try agentry(["exec", "greeter", "--", "echo", "beside the run"], in: repo)
        #expect(during.status == 0 && during.stdout == "beside the run\n", "\(during.stderr)")
        let second = try startAgentry(["run", "greeter", "--prompt", "two"], in: repo)
        try second.waitForError("busy with a run (process", seconds: 60)
        #expect(second.stderr.contains("waiting"), "\(second.stderr)")
        // A change that restarts the machine, applied while the run goes on.
        try environment(repo, cpus: 1, memory: "256Mi")
        try repo.commitAll("more memory")
        let apply = try startAgentry(["apply"], in: repo)
        try apply.waitForError("waiting", seconds: 60)
        // A second apply is not locked out while the first waits (nobody holds the state's writer
        // lock while waiting on a machine): it plans, and waits for the agent too.
        let another = try startAgentry(["apply"], in: repo)
        try another.waitForError("busy with", seconds: 60)
        // Let the first run go; then the second (the machine may be restarting meanwhile: the file
        // waits on the environment disk).
        let release = ["exec", "greeter", "--", "touch", "/agent/go"]
        #expect(try agentry(release, in: repo).status == 0)
        #expect(try first.wait(seconds: 240) == 0, "\(first.stderr)")
        try waitUntil(seconds: 240) { try agentry(release, in: repo).status == 0 }
        #expect(try apply.wait(seconds: 240) == 0, "\(apply.stderr)")
        #expect(try another.wait(seconds: 240) == 0, "\(another.stderr)")
        #expect(try second.wait(seconds: 240) == 0, "\(second.stderr)")
        // One of the two applies restarted the machine; the other found it done and left it.
        let applies = [apply.stderr, another.stderr]
        #expect(applies.filter { $0.contains("done   restart greeter") }.count == 1, "\(applies)")
        #expect(applies.filter { $0.contains("skipped restart greeter") }.count == 1, "\(applies)")
        let records = try git(["ls-tree", "-r", "--name-only", "agentry/history", "runs/greeter"], in: repo)
            .split(separator: "\n").filter { $0.hasSuffix("/record.yaml") }
        let texts = try records.map { try git(["show", "agentry/history:\($0)"], in: repo) }
        #expect(texts.count == 2 && texts.allSatisfy { $0.contains("outcome: \"succeeded\"") }, "\(texts)")
        #expect(try agentry(["plan", "--detailed-exitcode"], in: repo).status == 0, "the apply converged")
    }

    /// `run` runs the applied revision: a repository that moved on is mentioned, `--ref` of another
    /// revision refused, `--apply` applies first.
    @Test func aRunIsOfTheAppliedRevision() throws {
        defer { stopMachines() }
        let repo = try runRepository(script: "cat AGENTS.md")
        let first = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(first.status == 0 && first.stdout.contains("Greet people."), "\(first.stderr)")
        let applied = try git(["rev-parse", "HEAD"], in: repo).trimmingCharacters(in: .whitespacesAndNewlines)
        let file = repo.url.appendingPathComponent("agents/greeter.yaml")
        try repo.write(
            "agents/greeter.yaml",
            try String(contentsOf: file, encoding: .utf8).replacingOccurrences(
                of: "Greet people.", with: "Wave at people."))
        let moved = try repo.commitAll("new instructions").prefix(12)
        let plain = try agentry(["run", "greeter"], in: repo)
        #expect(plain.status == 0 && plain.stdout.contains("Greet people."), "the applied revision ran")
        #expect(
            plain.stderr.contains(
                "greeter is applied at \(applied.prefix(12)); the repository is at \(moved): apply first"),
            "\(plain.stderr)")
        #expect(try latestRecord(repo).contains("desiredCommit: \"\(applied)\""))
        let refused = try agentry(["run", "greeter", "--ref", "HEAD"], in: repo)
        #expect(refused.status == 2 && refused.stderr.contains("Only apply changes what runs"), "\(refused.stderr)")
        let deployed = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(deployed.status == 0 && deployed.stdout.contains("Wave at people."), "\(deployed.stderr)")
    }

    /// Whatever names a run gives its files, the history branch passes `git fsck --strict` and
    /// pushes to a remote that checks objects; the awkward names are kept in the record, and a
    /// memory snapshot with paths past tar's old limits comes back whole onto a new disk.
    @Test func awkwardNamesAreStoredSafelyAndRestored() throws {
        defer { stopMachines() }
        // A remote that checks what it receives, served by git daemon on loopback (libgit2's
        // local transport would skip the check).
        let served = try TemporaryDirectory("agentry-remote")
        _ = try Shell.run("git", ["init", "-q", "--bare", served.path + "/remote.git"])
        _ = try Shell.run("git", ["-C", served.path + "/remote.git", "config", "receive.fsckObjects", "true"])
        let port = try Shell.run(
            "python3",
            ["-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"]
        ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let daemon = try RunningCommand(
            "git",
            [
                "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", "--informative-errors",
                "--base-path=" + served.path, "--listen=127.0.0.1", "--port=" + port, served.path,
            ])
        defer { withExtendedLifetime(daemon) {} }
        let url = "git://127.0.0.1:\(port)/remote.git"
        try waitUntil { (try? Shell.run("git", ["ls-remote", url]))?.status == 0 }

        let deep = (1...24).map { "folder-number-\($0)-abcdefghij" }.joined(separator: "/")
        let repo = try runRepository(
            script: """
                mkdir -p out/sub/.GIT out/Clone/.git "memory/\(deep)"; \
                printf '[submodule "x"]\\n\\tpath = x\\n\\turl = --upload-pack=touch /tmp/pwned\\n' > out/.gitmodules; \
                cp out/.gitmodules memory/.gitmodules; echo '* filter=evil' > out/.gitattributes; \
                echo config > out/sub/.GIT/config; echo ref > out/Clone/.git/HEAD; echo tilde > out/GIT~1; \
                echo ctl > "out/ctl$(printf '\\001')name"; echo deep > "memory/\(deep)/note.md"; echo fine > out/fine.txt
                """)
        _ = try git(["remote", "add", "origin", url], in: repo)
        let run = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(!run.stderr.contains("warning"), "pushed without a warning: \(run.stderr)")
        let fsck = try Shell.run("git", ["-C", repo.path, "fsck", "--strict", "--no-dangling"])
        #expect(fsck.status == 0 && fsck.stdout.isEmpty, "\(fsck.stdout)\(fsck.stderr)")
        let local = try git(["rev-parse", "agentry/history"], in: repo)
        let remote = try Shell.run("git", ["-C", served.path + "/remote.git", "rev-parse", "agentry/history"])
        #expect(remote.stdout == local, "the history branch reached the checking remote: \(remote.stderr)")
        #expect(try Shell.run("git", ["-C", served.path + "/remote.git", "fsck", "--strict"]).status == 0)

        let record = try latestRecord(repo)
        try expectValidRecord(record)
        for name in [".gitmodules", ".gitattributes", "sub/.GIT/config", "Clone/.git/HEAD", "GIT~1", "ctl\\u0001name"] {
            #expect(record.contains("path: \"out/\(name)\""), "\(name) is listed under its own name")
        }
        #expect(record.contains("path: \"out/fine.txt\"\n    size: 5"))
        let folder = try latestRunFolder(repo)
        let stored = try git(["ls-tree", "-r", "--name-only", "agentry/history", folder], in: repo)
        #expect(stored.contains("\(folder)/artifacts/fine.txt"))
        #expect(!stored.lowercased().contains(".git") && !stored.contains("~"), "\(stored)")
        #expect(record.contains("renamed:\n    - path: \".gitmodules\""), "\(record)")

        // A new disk: the memory comes back under its own names, the deep path included.
        stopMachines()
        try FileManager.default.removeItem(atPath: state.path + "/agents/greeter/env.qcow2")
        let recreated = try agentry(["apply", "--recreate-missing-disks"], in: repo)
        #expect(recreated.stderr.contains("memory restored from run"), "\(recreated.stderr)")
        let restored = try agentry(
            ["exec", "greeter", "--", "sh", "-c", "cat \"/agent/memory/\(deep)/note.md\" /agent/memory/.gitmodules"],
            in: repo)
        #expect(restored.stdout.hasPrefix("deep\n[submodule"), "\(restored.stdout)\(restored.stderr)")
    }

    /// Records that cannot be read are reported by `history` and `show`, never skipped.
    @Test func unreadableRecordsAreReported() throws {
        defer { stopMachines() }
        let repo = try runRepository(script: "echo fine")
        #expect(try agentry(["run", "greeter", "--apply"], in: repo).status == 0)
        let broken = "runs/greeter/20270101-000000-0badc0de/record.yaml"
        try addToHistory(repo, broken, "formatVersion: 2\nrunId: [this is not\n")
        let history = try agentry(["history"], in: repo)
        #expect(history.status == 1, "\(history.stderr)")
        #expect(history.stderr.contains("\(broken) in agentry/history cannot be read"), "\(history.stderr)")
        #expect(history.stdout.contains("exit 0"), "the readable run is still listed")
        let json = try decodeJSON(try agentry(["history", "-o", "json"], in: repo).stdout)
        #expect((json["unreadable"] as? [[String: Any]])?.first?["path"] as? String == broken)
        let shown = try agentry(["show", "20270101-000000-0badc0de"], in: repo)
        #expect(shown.status == 0 && shown.stderr.contains("cannot be read"), "\(shown.stderr)")
        #expect(shown.stdout.contains("runId: [this is not"))
    }

    /// Adds one file to the history branch as another writer would.
    func addToHistory(_ repo: TemporaryDirectory, _ path: String, _ text: String) throws {
        let index = repo.path + "/.git/agentry-test-index"
        defer { try? FileManager.default.removeItem(atPath: index) }
        let environment = [
            "GIT_INDEX_FILE": index, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        ]
        func run(_ arguments: [String], input: String? = nil) throws -> String {
            let result = try Shell.run(
                "git", ["-C", repo.path] + arguments, input: input, environment: environment)
            guard result.status == 0 else { throw Shell.Failure(description: result.stderr) }
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        _ = try run(["read-tree", "agentry/history"])
        let blob = try run(["hash-object", "-w", "--stdin"], input: text)
        _ = try run(["update-index", "--add", "--cacheinfo", "100644,\(blob),\(path)"])
        let tree = try run(["write-tree"])
        let commit = try run(["commit-tree", tree, "-p", "agentry/history", "-m", "another writer"])
        _ = try run(["update-ref", "refs/heads/agentry/history", commit])
    }

    /// The state directory belongs to the repository that applied it: another is refused, naming
    /// both, until `--adopt`.
    @Test func aStateDirectoryBelongsToOneRepository() throws {
        defer { stopMachines() }
        let first = try repository(agents: ["owned"])
        try setLifecycle(first, "owned", "paused")
        try first.commitAll("paused")
        #expect(try agentry(["apply"], in: first).status == 0)
        let second = try repository(agents: ["owned"])
        try setLifecycle(second, "owned", "paused")
        try second.commitAll("paused")
        // Named explicitly: without --repo, agentry reads the repository the state applied.
        let refused = try agentry(["plan", "--repo", second.path], in: second)
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(
            refused.stderr.contains("belongs to the agent repository \(first.path)")
                && refused.stderr.contains("not \(second.path)"), "\(refused.stderr)")
        #expect(try agentry(["apply"], in: second, environment: ["AGENTRY_REPO": second.path]).status == 2)
        #expect(try agentry(["plan", "--adopt", "--repo", second.path], in: second).status == 0)
        #expect(try agentry(["apply", "--adopt", "--repo", second.path], in: second).status == 0)
        let back = try agentry(["plan", "--repo", first.path], in: first)
        #expect(back.status == 2 && back.stderr.contains("belongs to the agent repository \(second.path)"))
    }
}
