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

    /// `-o json` on the commands that report: kill, unkill, secret list, show and logs.
    @Test func reportingCommandsSpeakJSON() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["spoken"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        let kill = try decodeJSON(
            try agentry(["kill", "spoken", "--reason", "testing", "--actor", "ana", "-o", "json"], in: repo).stdout)
        #expect(kill["kind"] as? String == "kill" && kill["changed"] as? Bool == true)
        #expect(
            kill["killed"] as? Bool == true && kill["reason"] as? String == "testing" && kill["by"] as? String == "ana")
        let again = try decodeJSON(try agentry(["kill", "spoken", "--reason", "other", "-o", "json"], in: repo).stdout)
        #expect(again["changed"] as? Bool == false && again["reason"] as? String == "testing")
        let unkill = try decodeJSON(try agentry(["unkill", "spoken", "-o", "json"], in: repo).stdout)
        #expect(unkill["changed"] as? Bool == true && unkill["killed"] as? Bool == false)

        let set = try Shell.run(
            Agentry.binary.path, ["secret", "set", "ci/token", "--allow-owner", "test", "--state-dir", state.path],
            input: "a-long-enough-value\n")
        #expect(set.status == 0, "\(set.stderr)")
        let secrets = try decodeJSON(
            try Shell.run(Agentry.binary.path, ["secret", "list", "--state-dir", state.path, "-o", "json"]).stdout)
        let entry = (secrets["secrets"] as? [[String: Any]])?.first
        #expect(entry?["key"] as? String == "ci/token")
        #expect((entry?["scope"] as? [String: Any])?["owners"] as? [String] == ["test"])
        #expect(
            !(try Shell.run(Agentry.binary.path, ["secret", "list", "--state-dir", state.path, "-o", "json"]).stdout
                .contains("a-long-enough-value")))

        #expect(try agentry(["apply"], in: repo).status == 0, "the unkilled agent starts again")
        #expect(try agentry(["run", "spoken", "--prompt", "said"], in: repo).status == 0)
        let logs = try decodeJSON(try agentry(["logs", "spoken", "-o", "json"], in: repo).stdout)
        #expect((logs["log"] as? String)?.contains("said") == true, "\(logs)")
        let run = try #require((logs["run"] as? [String: Any])?["runId"] as? String)
        let show = try decodeJSON(try agentry(["show", run, "-o", "json"], in: repo).stdout)
        #expect(show["kind"] as? String == "run" && (show["record"] as? String)?.contains(run) == true)
    }

    /// `exec -it` is a shell on a terminal in the machine, driven from a terminal on the host: the
    /// command's controlling terminal, the window's size, TERM, ^C reaching the foreground job, the
    /// exit status passed through; `-t` alone and `-it` from a pipe work too.
    /// Python for the drivers of terminal tests: `until(text)` reads the pseudo-terminal `fd` into
    /// `seen` until `text` shows (or `seconds` pass; a NUL never shows, so that reads to the end).
    static let terminalReader = #"""
        import os, select, time
        seen = b""
        def until(text, seconds=60):
            global seen
            deadline = time.time() + seconds
            while text.encode() not in seen and time.time() < deadline:
                if select.select([fd], [], [], 0.2)[0]:
                    try:
                        seen += os.read(fd, 65536)
                    except OSError:
                        break
            return text.encode() in seen

        """#

    @Test func execWithATerminalIsAnInteractiveShell() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["console"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        let driver =
            Self.terminalReader + #"""
                import fcntl, json, os, pty, select, struct, subprocess, sys, termios, time
                agentry, state = sys.argv[1], sys.argv[2]
                env = dict(os.environ, TERM="xterm-test", AGENTRY_ACCELERATOR="tcg")
                pid, fd = pty.fork()
                if pid == 0:
                    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
                    os.execve(agentry, [agentry, "exec", "--state-dir", state, "-it", "console", "--", "sh"], env)
                result = {}
                os.write(fd, b"tty; echo size=$(stty size) term=$TERM\r")
                result["terminal"] = until("term=xterm-test")
                os.write(fd, b"sleep 45\r")
                # ^C once the sleep runs (asked through another exec, not guessed).
                deadline = time.time() + 60
                while time.time() < deadline:
                    found = subprocess.run([agentry, "exec", "--state-dir", state, "console", "--", "pidof", "sleep"],
                                           env=env, capture_output=True)
                    if found.returncode == 0:
                        break
                os.write(fd, b"\x03")
                os.write(fd, b"echo back-$((40+2))\r")
                result["interrupted"] = until("back-42", 30)
                os.write(fd, b"exit 3\r")
                _, status = os.waitpid(pid, 0)
                result["status"] = os.waitstatus_to_exitcode(status)
                result["output"] = seen.decode(errors="replace")
                print(json.dumps(result))
                """#
        let driven = try Shell.run(
            "python3", ["-c", driver, Agentry.binary.path, state.path], in: repo.url, timeout: 240)
        let result = try decodeJSON(driven.stdout)
        let output = result["output"] as? String ?? ""
        #expect(result["terminal"] as? Bool == true, "\(output)\(driven.stderr)")
        #expect(output.contains("/dev/pts/"), "the command's standard input is a terminal: \(output)")
        #expect(output.contains("size=33 101"), "the guest's terminal has the window's size: \(output)")
        #expect(result["interrupted"] as? Bool == true, "^C reaches the foreground job: \(output)")
        #expect(result["status"] as? Int == 3, "\(output)")

        // -t alone: a terminal, nothing typed. -it with input that is not a terminal is refused, as
        // `docker exec` does (-i alone passes it).
        let alone = try agentry(["exec", "-t", "console", "--", "tty"], in: repo)
        #expect(alone.status == 0 && alone.stdout.hasPrefix("/dev/pts/"), "\(alone.stdout)\(alone.stderr)")
        let piped = try agentry(["exec", "-it", "console", "--", "sh"], in: repo)
        #expect(piped.status == 125 && piped.stderr.contains("not a terminal"), "\(piped.stderr)")
    }

    /// Binary data goes in and out byte for byte: `exec -i` passes standard input, `exec` returns
    /// output undecoded, `cp` copies files and folders both ways; names from the guest that could
    /// leave the destination are refused.
    @Test func bytesRoundTripThroughExecAndCp() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["carrier"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        let work = try TemporaryDirectory("agentry-cp")
        var generator = SystemRandomNumberGenerator()
        let payload = Data((0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try payload.write(to: work.url.appendingPathComponent("blob.bin"))
        let binary = Agentry.binary.path
        func shell(_ script: String) throws -> Agentry.Result {
            try Shell.run(
                "/bin/sh", ["-c", script], in: work.url,
                environment: ["AGENTRY": binary, "STATE": state.path, "AGENTRY_ACCELERATOR": "tcg"], timeout: 240)
        }
        // exec -i: 3 MiB of random bytes in, and back out through exec's output.
        let fed = try shell(#""$AGENTRY" exec --state-dir "$STATE" -i carrier -- sh -c 'cat > in.bin' < blob.bin"#)
        #expect(fed.status == 0, "\(fed.stderr)")
        let back = try shell(#""$AGENTRY" exec --state-dir "$STATE" carrier -- cat in.bin > out.bin"#)
        #expect(back.status == 0, "\(back.stderr)")
        #expect(try Data(contentsOf: work.url.appendingPathComponent("out.bin")) == payload)

        // cp a folder in (with a nested file), and back out under another name.
        try work.write("tree/a.txt", "first\n")
        try FileManager.default.createDirectory(
            at: work.url.appendingPathComponent("tree/deep"), withIntermediateDirectories: true)
        try payload.write(to: work.url.appendingPathComponent("tree/deep/b.bin"))
        try work.write("tree/run.sh", "#!/bin/sh\necho ran\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: work.path + "/tree/run.sh")
        #expect(try shell(#""$AGENTRY" cp --state-dir "$STATE" tree carrier:inbox/"#).status == 0)
        let listed = try agentry(
            ["exec", "carrier", "--", "sh", "-c", "cd inbox/tree && find . -type f | sort && ./run.sh"], in: repo)
        #expect(listed.stdout == "./a.txt\n./deep/b.bin\n./run.sh\nran\n", "\(listed.stdout)")
        let out = try shell(#""$AGENTRY" cp --state-dir "$STATE" carrier:inbox/tree copied"#)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try Data(contentsOf: work.url.appendingPathComponent("copied/deep/b.bin")) == payload)
        #expect(try String(contentsOf: work.url.appendingPathComponent("copied/a.txt"), encoding: .utf8) == "first\n")
        // The executable bit comes back with the file, alone or in a folder; nothing else gains it.
        let manager = FileManager.default
        #expect(manager.isExecutableFile(atPath: work.path + "/copied/run.sh"))
        #expect(!manager.isExecutableFile(atPath: work.path + "/copied/a.txt"))
        #expect(try shell(#""$AGENTRY" cp --state-dir "$STATE" carrier:inbox/tree/run.sh alone.sh"#).status == 0)
        #expect(try shell("./alone.sh").stdout == "ran\n")
        // One file out, into an existing folder.
        let one = try shell(#""$AGENTRY" cp --state-dir "$STATE" carrier:in.bin copied"#)
        #expect(one.status == 0, "\(one.stderr)")
        #expect(try Data(contentsOf: work.url.appendingPathComponent("copied/in.bin")) == payload)

        // A hostile name in the guest is refused and named; the rest is copied.
        let hostile = try agentry(
            [
                "exec", "carrier", "--", "sh", "-c",
                "mkdir -p bad/.git && echo ok > bad/fine.txt && printf x > \"bad/$(printf 'a\\nb')\" && echo '[core]' > bad/.git/config",
            ],
            in: repo)
        #expect(hostile.status == 0, "\(hostile.stderr)")
        let refused = try shell(#""$AGENTRY" cp --state-dir "$STATE" carrier:bad fromguest"#)
        #expect(refused.status == 1 && refused.stderr.contains("refused"), "\(refused.stderr)")
        #expect(FileManager.default.fileExists(atPath: work.path + "/fromguest/fine.txt"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: work.path + "/fromguest") == ["fine.txt"])
        #expect(refused.stderr.contains(".git/config"), "a guest's .git never reaches the host: \(refused.stderr)")
        // A folder from a guest goes into a new folder only: nothing there is written through.
        try FileManager.default.createDirectory(atPath: work.path + "/taken", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: work.path + "/taken/tree", withDestinationPath: "/tmp")
        let taken = try shell(#""$AGENTRY" cp --state-dir "$STATE" carrier:inbox/tree taken"#)
        #expect(taken.status == 2 && taken.stderr.contains("exists"), "\(taken.stderr)")
    }

    /// `logs -f` follows a run in progress to its end; `logs --run` shows one run's log; `history
    /// --kind` lists applies and kill events beside runs.
    @Test func logsFollowARunAndHistoryListsEveryKind() throws {
        defer { stopMachines() }
        let repo = try runRepository(
            script: "echo first line; while [ ! -f /agent/go ]; do sleep 0.2; done; rm -f /agent/go; echo second line")
        let run = try startAgentry(["run", "greeter", "--apply"], in: repo)
        try waitUntil(seconds: 180) { run.stdout.contains("first line") }
        let follow = try startAgentry(["logs", "greeter", "-f"], in: repo)
        try waitUntil(seconds: 60) { follow.stdout.contains("first line") }
        #expect(!follow.stdout.contains("second line"))
        #expect(try agentry(["exec", "greeter", "--", "touch", "/agent/go"], in: repo).status == 0)
        #expect(try run.wait(seconds: 120) == 0, "\(run.stderr)")
        #expect(try follow.wait(seconds: 60) == 0, "\(follow.stderr)")
        #expect(follow.stdout.contains("first line\nsecond line\n"), "\(follow.stdout)")
        #expect(follow.stderr.contains("the run ended: "), "\(follow.stderr)")
        // No run in progress: the latest run's log, said so.
        let idle = try agentry(["logs", "greeter", "-f"], in: repo)
        #expect(idle.status == 0 && idle.stderr.contains("no run of greeter in progress"), "\(idle.stderr)")
        #expect(idle.stdout.contains("second line"))

        let listing = try decodeJSON(try agentry(["history", "greeter", "-o", "json"], in: repo).stdout)
        let runID = try #require((listing["runs"] as? [[String: Any]])?.first?["runId"] as? String)
        let one = try agentry(["logs", "--run", String(runID.prefix(15))], in: repo)
        #expect(one.status == 0 && one.stdout.contains("first line\nsecond line"), "\(one.stderr)")

        #expect(
            try agentry(["kill", "greeter", "--reason", "checking history", "--actor", "ana"], in: repo).status == 0)
        let kinds = try agentry(["history", "--kind", "apply", "--kind", "kill"], in: repo)
        #expect(kinds.status == 0, "\(kinds.stderr)")
        #expect(kinds.stdout.contains("kill") && kinds.stdout.contains("checking history"), "\(kinds.stdout)")
        #expect(kinds.stdout.contains("apply") && kinds.stdout.contains("1 to create"), "\(kinds.stdout)")
        #expect(!kinds.stdout.contains(runID), "runs only when asked")
        let all = try decodeJSON(try agentry(["history", "greeter", "--kind", "all", "-o", "json"], in: repo).stdout)
        let events = all["events"] as? [[String: Any]] ?? []
        #expect(events.first?["kind"] as? String == "kill" && events.first?["by"] as? String == "ana", "\(events)")
        #expect((all["runs"] as? [[String: Any]])?.count == 1)
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

/// Installing as a release does, and a mistyped command.
@Suite struct InstallationTests {
    /// `reconciler/install.sh` puts both binaries side by side; the installed agentry finds its
    /// guest agent there, and says where it looked when it is not.
    @Test func anInstalledAgentryFindsItsGuestAgentBesideIt() throws {
        let prefix = try TemporaryDirectory("agentry-prefix")
        let built = Agentry.binary.deletingLastPathComponent().path
        let script = Agentry.packageRoot.appendingPathComponent("reconciler/install.sh").path
        let installed = try Shell.run(script, ["--prefix", prefix.path, "--from", built])
        #expect(installed.status == 0, "\(installed.stderr)")
        let agentry = prefix.path + "/bin/agentry"
        #expect(FileManager.default.isExecutableFile(atPath: prefix.path + "/bin/agentry-guest"))
        // The service's unit, pointing at the installed binary.
        let unit = try String(contentsOfFile: prefix.path + "/lib/systemd/system/agentry.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=\(prefix.path)/bin/agentry serve"), "\(unit)")
        #expect(!unit.contains("@BINDIR@"))
        for analyze in ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        where FileManager.default.isExecutableFile(atPath: analyze) {
            let verified = try Shell.run(analyze, ["verify", prefix.path + "/lib/systemd/system/agentry.service"])
            #expect(!verified.stderr.contains("Unknown key"), "\(verified.stderr)")
            break
        }
        let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart").path
        #expect(try Shell.run(agentry, ["validate", "--dir", quickstart]).status == 0)

        try FileManager.default.removeItem(atPath: prefix.path + "/bin/agentry-guest")
        let state = try TemporaryDirectory("agentry-prefix-state")
        let missing = try Shell.run(
            agentry, ["image", "build", "--state-dir", state.path], environment: ["AGENTRY_GUEST": ""])
        #expect(missing.status == 2)
        #expect(
            missing.stderr.contains("looked beside its own executable (\(prefix.path)/bin/agentry-guest)")
                && missing.stderr.contains("/usr/lib/agentry/agentry-guest"), "\(missing.stderr)")
    }

    /// A mistyped command gets a suggestion; a command's own mistakes point at its own help.
    @Test func mistakesPointAtTheRightHelp() throws {
        let typo = try Agentry.run(["aply"])
        #expect(typo.status == 2)
        #expect(typo.stderr.contains("unknown command \"aply\"; did you mean \"apply\"?"), "\(typo.stderr)")
        let nested = try Agentry.run(["secret", "lst"])
        #expect(nested.status == 2)
        #expect(
            nested.stderr.contains("unknown command \"lst\" of agentry secret; did you mean \"list\"?"),
            "\(nested.stderr)")
        let own = try Agentry.run(["secret", "set"])
        #expect(own.status == 2)
        #expect(own.stderr.contains("Run 'agentry secret set --help' for usage."), "\(own.stderr)")
        let bad = try Agentry.run(["apply", "--parallelism", "0"])
        #expect(bad.stderr.contains("Run 'agentry apply --help' for usage."), "\(bad.stderr)")
    }

    /// Changed instructions and skill files show as unified diffs, a shared skill once with the
    /// agents it affects, in text and in Markdown (backticks intact).
    @Test func changedTextsShowAsUnifiedDiffs() throws {
        let repo = try TemporaryDirectory("agentry-textdiff")
        try repo.copy(from: Agentry.packageRoot.appendingPathComponent("examples/quickstart"))
        let base = try repo.commitAll("base")
        let instructions = try String(
            contentsOf: repo.url.appendingPathComponent("agents/hello/INSTRUCTIONS.md"), encoding: .utf8)
        try repo.write("agents/hello/INSTRUCTIONS.md", instructions + "Say `hello` twice.\n")
        let skill = try String(contentsOf: repo.url.appendingPathComponent("skills/greeting/SKILL.md"), encoding: .utf8)
        try repo.write("skills/greeting/SKILL.md", skill + "\nMore steps.\n")
        let head = try repo.commitAll("head")
        let text = try Agentry.run(["diff", base, head], in: repo.url)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("    +++ b/agents/hello/INSTRUCTIONS.md\n"), "\(text.stdout)")
        #expect(text.stdout.contains("    +Say `hello` twice.\n"))
        let markdown = try Agentry.run(["diff", base, head, "-o", "markdown"], in: repo.url).stdout
        #expect(
            markdown.contains("```diff\n--- a/agents/hello/INSTRUCTIONS.md\n+++ b/agents/hello/INSTRUCTIONS.md\n@@ "))
        #expect(markdown.contains("\n+Say `hello` twice.\n```\n"), "\(markdown)")
        // The shared skill is shown once, naming the agents that use it.
        let skillHeadings = markdown.components(separatedBy: "#### `skills/greeting/SKILL.md`").count - 1
        #expect(skillHeadings == 1, "\(markdown)")
        #expect(markdown.contains("#### `skills/greeting/SKILL.md` (2 agents: docs-writer, hello)"), "\(markdown)")
        let json = try decodeJSON(try Agentry.run(["diff", base, head, "-o", "json"], in: repo.url).stdout)
        let changes = json["textChanges"] as? [[String: Any]] ?? []
        #expect(changes.contains { ($0["diff"] as? String)?.contains("+More steps.") == true }, "\(json)")

        // A multi-line value of a harness (a config file whose path starts with a dot), once triage
        // runs on Hermes.
        let triage = try String(contentsOf: repo.url.appendingPathComponent("agents/triage.yaml"), encoding: .utf8)
        try repo.write(
            "agents/triage.yaml",
            triage.replacingOccurrences(of: "harness: claude-code", with: "harness: hermes")
                .replacingOccurrences(of: "  model: sonnet", with: "  model: local-llama")
                .replacingOccurrences(of: "  fallbackModels: [haiku]\n", with: ""))
        let onHermes = try repo.commitAll("triage on hermes")
        let harness = try String(contentsOf: repo.url.appendingPathComponent("harnesses/hermes.yaml"), encoding: .utf8)
        try repo.write(
            "harnesses/hermes.yaml", harness.replacingOccurrences(of: "provider: custom", with: "provider: other"))
        let third = try repo.commitAll("config")
        let config = try Agentry.run(["diff", onHermes, third], in: repo.url).stdout
        #expect(config.contains("harness.configFiles[\".hermes/config.yaml\"]: "), "\(config)")
        #expect(config.contains("    -  provider: custom\n    +  provider: other\n"), "\(config)")
    }

    /// `plan` and `diff` of an invalid repository or a bad ref still print a JSON or Markdown
    /// document that says why (a pull-request comment is never empty).
    @Test func planAndDiffOfAnInvalidRepositorySaySoInEveryFormat() throws {
        let repo = try TemporaryDirectory("agentry-invalid")
        try repo.copy(from: Agentry.packageRoot.appendingPathComponent("examples/quickstart"))
        let base = try repo.commitAll("base")
        try repo.write("agents/broken.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: broken}\n")
        let head = try repo.commitAll("broken")
        let json = try Agentry.run(["diff", base, head, "-o", "json"], in: repo.url)
        #expect(json.status == 1, "\(json.stderr)")
        let document = try decodeJSON(json.stdout)
        #expect(document["kind"] as? String == "diff" && document["valid"] as? Bool == false)
        let diagnostics = document["diagnostics"] as? [[String: Any]] ?? []
        #expect(diagnostics.contains { $0["file"] as? String == "agents/broken.yaml" }, "\(document)")
        let markdown = try Agentry.run(["diff", base, head, "-o", "markdown"], in: repo.url)
        #expect(markdown.status == 1)
        #expect(markdown.stdout.hasPrefix("### agentry diff: the repository is invalid"), "\(markdown.stdout)")
        #expect(markdown.stdout.contains("- `agents/broken.yaml:"), "\(markdown.stdout)")
        let plan = try Agentry.run(["plan", "--empty-state", "-o", "json"], in: repo.url)
        let planDocument = try decodeJSON(plan.stdout)
        #expect(plan.status == 1 && planDocument["valid"] as? Bool == false)
        let badRef = try Agentry.run(["plan", "--empty-state", "--ref", "no-such-ref", "-o", "json"], in: repo.url)
        #expect(badRef.status == 2)
        let badRefDocument = try decodeJSON(badRef.stdout)
        #expect((badRefDocument["error"] as? String)?.contains("no-such-ref") == true, "\(badRef.stdout)")
        #expect(
            badRefDocument["valid"] is NSNull, "a ref that cannot be read is not known to be valid: \(badRef.stdout)")
    }
}

/// README's command table is checked against the commands themselves: every command is in it, and
/// every flag it names exists.
@Suite struct CommandTableTests {
    @Test func readmesCommandTableMatchesTheCommands() throws {
        let readme = try String(
            contentsOf: Agentry.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let rows = readme.split(separator: "\n").filter { $0.hasPrefix("| `agentry ") }
        #expect(!rows.isEmpty)
        let help = try Agentry.run(["--help"]).stdout
        let listed = help.components(separatedBy: "SUBCOMMANDS:").last ?? ""
        let commands = listed.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ")
            guard line.hasPrefix("  "), !line.hasPrefix("    "), let first = words.first,
                first.allSatisfy({ $0.isLowercase || $0 == "-" })
            else { return nil }
            return String(first)
        }
        #expect(commands.count >= 15, "\(commands)")
        for command in commands where command != "help" {
            #expect(
                rows.contains { $0.contains("`agentry \(command)") || $0.contains("/ `agentry \(command)") },
                "README's command table has no row for `agentry \(command)`")
        }
        // Each row's flags exist in that command's (or its subcommands') help.
        for row in rows {
            let cell = row.split(separator: "|", omittingEmptySubsequences: true).first.map(String.init) ?? ""
            for usage in cell.components(separatedBy: "` / `") {
                let words = usage.replacingOccurrences(of: "`", with: "").split(separator: " ").map(String.init)
                guard words.first == "agentry", words.count > 1 else { continue }
                let path = Array(words.dropFirst().prefix { !$0.hasPrefix("-") && !$0.hasPrefix("[") })
                    .filter { $0.allSatisfy { $0.isLowercase || $0 == "-" } }
                let flags = Set(
                    words.flatMap { word in
                        word.split(whereSeparator: { "[]|".contains($0) }).map(String.init).filter {
                            $0.hasPrefix("--")
                        }
                    })
                guard !flags.isEmpty else { continue }
                let text = try Agentry.run(path + ["--help"]).stdout
                for flag in flags {
                    #expect(text.contains(flag), "README names \(flag) for `agentry \(path.joined(separator: " "))`")
                }
            }
        }
    }

    /// Each option's help states its default once (ArgumentParser adds defaults it knows; the help
    /// text must not repeat them).
    @Test func helpStatesEachDefaultOnce() throws {
        let commands: [[String]] = [
            ["validate"], ["plan"], ["diff"], ["apply"], ["status"], ["run"], ["exec"], ["kill"], ["unkill"],
            ["secret", "set"], ["secret", "list"], ["disks", "list"], ["history"], ["show"], ["logs"],
            ["image", "build"], ["schema"], ["init"],
        ]
        for command in commands {
            let help = try Agentry.run(command + ["--help"]).stdout
            // An option's block: its line and the indented lines after it.
            var blocks: [String] = []
            for line in help.split(separator: "\n") {
                if line.hasPrefix("  -") {
                    blocks.append(String(line))
                } else if !blocks.isEmpty {
                    blocks[blocks.count - 1] += " " + line
                }
            }
            for block in blocks {
                let words = block.split(whereSeparator: \.isWhitespace).joined(separator: " ")
                #expect(
                    words.components(separatedBy: "default").count <= 2,
                    "agentry \(command.joined(separator: " ")): \(words)")
            }
        }
    }
}

/// The history branch goes to an authenticated remote: a local smart-HTTP server (git's own
/// http-backend) that takes only a token.
@Suite struct AuthenticatedPushTests {
    @Test func historyIsPushedWithATokenAndARefusalSaysWhatToDo() throws {
        let remotes = try TemporaryDirectory("agentry-remotes")
        #expect(try Shell.run("git", ["init", "-q", "--bare", remotes.path + "/agents.git"]).status == 0)
        let token = "t0ken-for-the-test-only"
        let server = try GitHTTPServer(root: remotes.path, token: token)
        let port = server.port
        let repo = try TemporaryDirectory("agentry-pushing")
        try repo.copy(from: Agentry.packageRoot.appendingPathComponent("examples/quickstart"))
        try repo.commitAll("agents")
        #expect(
            try Shell.run(
                "git", ["-C", repo.path, "remote", "add", "origin", "http://127.0.0.1:\(port)/agents.git"]
            ).status == 0)
        let state = try TemporaryDirectory("agentry-pushing-state")
        func kill(_ name: String, environment: [String: String]) throws -> Agentry.Result {
            try Shell.run(
                Agentry.binary.path,
                ["kill", name, "--force", "--reason", "testing", "--repo", repo.path, "--state-dir", state.path],
                in: repo.url, environment: environment)
        }

        let refused = try kill("first", environment: ["AGENTRY_GIT_TOKEN": "wrong-token-value"])
        #expect(refused.status == 0, "the kill itself stands: \(refused.stderr)")
        #expect(
            refused.stderr.contains("origin (http://127.0.0.1:\(port)/agents.git) refused agentry's credentials")
                && refused.stderr.contains("AGENTRY_GIT_TOKEN"), "\(refused.stderr)")

        let pushed = try kill("second", environment: ["AGENTRY_GIT_TOKEN": token])
        #expect(pushed.status == 0 && !pushed.stderr.contains("not pushed"), "\(pushed.stderr)")
        let remote = try Shell.run(
            "git", ["--git-dir", remotes.path + "/agents.git", "ls-tree", "-r", "--name-only", "agentry/history"])
        #expect(remote.stdout.contains("-second-kill-"), "both records reached the remote: \(remote.stdout)")
        #expect(remote.stdout.contains("-first-kill-"), "the earlier record went with the next push")

        // Without $AGENTRY_GIT_TOKEN, git's credential helper (here the repository's own `store`).
        let store = remotes.path + "/credentials"
        try "http://x-access-token:\(token)@127.0.0.1:\(port)\n".write(
            toFile: store, atomically: true, encoding: .utf8)
        try Shell.git(["config", "credential.helper", "store --file=\(store)"], in: repo.url)
        let helped = try kill("third", environment: ["AGENTRY_GIT_TOKEN": ""])
        #expect(helped.status == 0 && !helped.stderr.contains("not pushed"), "\(helped.stderr)")
        let after = try Shell.run(
            "git", ["--git-dir", remotes.path + "/agents.git", "ls-tree", "-r", "--name-only", "agentry/history"])
        #expect(after.stdout.contains("-third-kill-"), "\(after.stdout)")
        // The token is in no file agentry wrote.
        let grep = try Shell.run("grep", ["-rl", token, repo.path + "/.git", state.path])
        #expect(grep.stdout.isEmpty, "\(grep.stdout)")
        withExtendedLifetime(server) {}
    }
}

extension ApplyCommandTests {
    /// At a terminal `apply` shows the plan and asks; anything but `yes` changes nothing and exits
    /// 1 (as Terraform), `yes` applies; without a terminal it never asks.
    @Test func applyAsksAtATerminalAndOnlyYesGoesOn() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["asked"])
        let driver =
            Self.terminalReader + #"""
                import os, pty, select, sys, time
                agentry, state, repo, answer = sys.argv[1:5]
                env = dict(os.environ, AGENTRY_ACCELERATOR="tcg")
                pid, fd = pty.fork()
                if pid == 0:
                    os.chdir(repo)
                    os.execve(agentry, [agentry, "apply", "--state-dir", state], env)
                asked = until("Only 'yes' is accepted", 120)
                os.write(fd, answer.encode() + b"\r")
                until("\0", 240)  # everything until agentry exits
                _, status = os.waitpid(pid, 0)
                print(f"asked={asked} exit={os.waitstatus_to_exitcode(status)}")
                print(seen.decode(errors="replace"))
                """#
        func apply(answering answer: String) throws -> Agentry.Result {
            try Shell.run(
                "python3", ["-c", driver, Agentry.binary.path, state.path, repo.path, answer], timeout: 300)
        }
        let declined = try apply(answering: "no")
        #expect(declined.stdout.hasPrefix("asked=True exit=1\n"), "\(declined.stdout)")
        #expect(declined.stdout.contains("Apply cancelled: nothing was changed."), "\(declined.stdout)")
        #expect(!FileManager.default.fileExists(atPath: state.path + "/agents/asked"), "no machine was made")
        let approved = try apply(answering: "yes")
        #expect(approved.stdout.hasPrefix("asked=True exit=0\n"), "\(approved.stdout)")
        #expect(FileManager.default.fileExists(atPath: state.path + "/agents/asked"), "the machine was made")
    }
}
