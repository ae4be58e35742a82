import Foundation
import TestSupport
import Testing

/// `agentry apply`, `exec`, `kill`, `unkill` and `status` on real microVMs (TCG in CI).
@Suite(.serialized) struct ApplyCommandTests {
    /// Images are built once for the suite; each test has its own state directory sharing them.
    static let images = try! TemporaryDirectory("agentry-apply-images")
    let state: TemporaryDirectory

    init() throws {
        state = try TemporaryDirectory("agentry-apply")
        try FileManager.default.createSymbolicLink(
            atPath: state.path + "/images", withDestinationPath: Self.images.path)
    }

    /// A repository of `agents` agents on the minimal image (no network, small machines).
    func repository(agents names: [String], cpus: Int = 1, memory: String = "192Mi", deletionPolicy: String = "delete")
        throws -> TemporaryDirectory
    {
        let directory = try TemporaryDirectory("agentry-apply-repo")
        try directory.write(
            "harnesses/shell.yaml",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata: {name: shell}
            spec:
              type: shell
              command: ["/bin/sh", "-c", "echo {{prompt}}"]
              supports: {apis: [chat-completions]}

            """)
        try directory.write(
            "models/local.yaml",
            "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: local}\nspec: {provider: local, name: m, api: chat-completions, baseUrl: 'http://127.0.0.1:8080/v1'}\n"
        )
        try environment(directory, cpus: cpus, memory: memory)
        for name in names {
            try directory.write(
                "agents/\(name).yaml",
                """
                apiVersion: agentry/v1
                kind: Agent
                metadata: {name: \(name), owner: test}
                spec:
                  harness: shell
                  model: local
                  environment: tiny
                  deletionPolicy: \(deletionPolicy)

                """)
        }
        try directory.commitAll("agents")
        return directory
    }

    func environment(_ directory: TemporaryDirectory, cpus: Int, memory: String) throws {
        try directory.write(
            "environments/tiny.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: tiny}\nspec: {base: minimal, resources: {cpus: \(cpus), memory: \(memory), disk: 256Mi}}\n"
        )
    }

    /// Stops every machine of the suite's state directory (tests end with their machines stopped).
    func stopMachines() {
        _ = try? Shell.run("pkill", ["-9", "-f", state.path + "/agents/"])
    }

    func agentry(
        _ arguments: [String], in directory: TemporaryDirectory, timeout: TimeInterval = 240,
        environment: [String: String] = [:]
    ) throws -> Agentry.Result {
        // Options go before any `--`, after which everything is the command to run.
        let withState = [arguments[0], "--state-dir", state.path] + arguments.dropFirst()
        return try Shell.run(
            Agentry.binary.path, withState, in: directory.url,
            environment: environment.merging(["AGENTRY_ACCELERATOR": "tcg"]) { own, _ in own }, timeout: timeout)
    }

    func setLifecycle(_ directory: TemporaryDirectory, _ agent: String, _ lifecycle: String) throws {
        let file = directory.url.appendingPathComponent("agents/\(agent).yaml")
        let text = try String(contentsOf: file, encoding: .utf8)
        try directory.write("agents/\(agent).yaml", text + "  lifecycle: \(lifecycle)\n")
    }

    @Test func aKilledMachineIsRestartedWithItsDiskIntact() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["keeper"])
        let applied = try agentry(["apply"], in: repo)
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        #expect(applied.stderr.contains("done   create keeper: running"))

        let write = try agentry(
            ["exec", "keeper", "--", "sh", "-c", "echo remembered > /agent/note.txt; echo wrote"], in: repo)
        #expect(write.status == 0)
        #expect(write.stdout == "wrote\n")

        // The guest runs below agentry's own work: nice 10 unless AGENTRY_MACHINE_NICE says. Where
        // the kernel shares CPU time out by session first (sched_autogroup), a nice counts only
        // within the session, so the guest's session has it too; the caller's keeps its own.
        let autogroups =
            (try? String(contentsOfFile: "/proc/sys/kernel/sched_autogroup_enabled", encoding: .utf8))?.hasPrefix("1")
            == true
        func sessionNice(_ pid: String) throws -> String {
            // "/autogroup-42 nice 10"
            let line = try String(contentsOfFile: "/proc/\(pid)/autogroup", encoding: .utf8)
            return String(line.split(separator: " ").last ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let ownSession = autogroups ? try sessionNice("self") : ""
        func niceness() throws -> String {
            let pid = try String(contentsOfFile: state.path + "/agents/keeper/vm.pid", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
            // Fields after the command's closing parenthesis: state is the first, nice the 17th.
            let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
            return autogroups ? "\(fields[16]), session \(try sessionNice(pid))" : String(fields[16])
        }
        func expected(_ nice: Int) -> String { autogroups ? "\(nice), session \(nice)" : "\(nice)" }
        #expect(try niceness() == expected(10))
        if autogroups { #expect(try sessionNice("self") == ownSession) }

        // Kill QEMU the hard way; status notices, apply restarts it, the file is still there.
        let pid = try String(contentsOfFile: state.path + "/agents/keeper/vm.pid", encoding: .utf8)
        try Shell.run("kill", ["-9", pid.trimmingCharacters(in: .whitespacesAndNewlines)])
        try waitUntil { try agentry(["status"], in: repo).stdout.contains("died") }
        let again = try agentry(["apply"], in: repo, environment: ["AGENTRY_MACHINE_NICE": "15"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("restart keeper: running"))
        #expect(try niceness() == expected(15))
        let read = try agentry(["exec", "keeper", "--", "cat", "/agent/note.txt"], in: repo)
        #expect(read.stdout == "remembered\n")

        // A second apply is a no-op and starts no second machine.
        #expect(try agentry(["apply"], in: repo).stdout.contains("no changes"))
        let machines = try Shell.run(
            "pgrep", ["-f", "^[^ ]*qemu-system-x86_64 .*" + state.path + "/agents/keeper/ctl.sock"])
        #expect(machines.stdout.split(separator: "\n").count == 1)
    }

    /// `debian-12`: debootstrap'd root filesystem with the Environment's packages, the agent's disk a
    /// copy-on-write overlay grown to `resources.disk`; what an agent installs or writes survives a
    /// hard kill of its machine.
    @Test func aDebianAgentGetsItsPackagesAndKeepsItsRootAcrossRestarts() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["workbench"])
        try repo.write(
            "environments/tiny.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: tiny}\nspec: {base: debian-12, packages: {apt: [jq]}, resources: {cpus: 1, memory: 256Mi, disk: 3Gi}}\n"
        )
        try repo.commitAll("debian")
        let applied = try agentry(["apply"], in: repo, timeout: 900)
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        #expect(applied.stderr.contains("done   create workbench: running"), "\(applied.stderr)")
        let probe = try agentry(
            [
                "exec", "workbench", "--", "sh", "-c",
                "cat /etc/debian_version; echo '{\"a\":1}' | jq .a; df -B1G --output=size / | tail -1 | tr -d ' '; echo kept > /usr/local/kept; echo home > /agent/h",
            ],
            in: repo)
        #expect(probe.status == 0, "\(probe.stderr)")
        let lines = probe.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("12.") == true, "\(probe.stdout)")
        #expect(lines.dropFirst().first == "1")
        // Grown from the image's 1 GiB to the Environment's 3 GiB.
        #expect(Int(lines.dropFirst(2).first ?? "") ?? 0 >= 2, "\(probe.stdout)")

        let pid = try String(contentsOfFile: state.path + "/agents/workbench/vm.pid", encoding: .utf8)
        try Shell.run("kill", ["-9", pid.trimmingCharacters(in: .whitespacesAndNewlines)])
        try waitUntil { try agentry(["status"], in: repo).stdout.contains("died") }
        #expect(try agentry(["apply"], in: repo).status == 0)
        let read = try agentry(["exec", "workbench", "--", "cat", "/usr/local/kept", "/agent/h"], in: repo)
        #expect(read.stdout == "kept\nhome\n", "\(read.stderr)")
    }

    /// An update (instructions, skills) is pushed into the running machine without a reboot, and
    /// what the previous revision put there and this one dropped is gone.
    @Test func anUpdatePushesConfigurationWithoutARestart() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["scribe"])
        func declare(instructions: String, skills: [String]) throws {
            try repo.write(
                "agents/scribe.yaml",
                """
                apiVersion: agentry/v1
                kind: Agent
                metadata: {name: scribe, owner: test}
                spec:
                  instructions: "\(instructions)"
                  harness: shell
                  model: local
                  environment: tiny
                  skills: [\(skills.joined(separator: ", "))]

                """)
        }
        for skill in ["notes", "tidy"] {
            try repo.write(
                "skills/\(skill)/SKILL.md", "---\nname: \(skill)\ndescription: The \(skill) skill.\n---\nDo \(skill).\n"
            )
        }
        try declare(instructions: "Write notes.", skills: ["notes", "tidy"])
        try repo.commitAll("scribe with two skills")
        #expect(try agentry(["apply"], in: repo).status == 0)
        let listing = ["exec", "scribe", "--", "sh", "-c", "cat AGENTS.md; echo; ls skills"]
        #expect(try agentry(listing, in: repo).stdout == "Write notes.\nnotes\ntidy\n")
        let pid = try String(contentsOfFile: state.path + "/agents/scribe/vm.pid", encoding: .utf8)

        try declare(instructions: "Write shorter notes.", skills: ["notes"])
        try repo.commitAll("one skill, new instructions")
        let updated = try agentry(["apply"], in: repo)
        #expect(updated.status == 0, "\(updated.stderr)")
        #expect(updated.stdout.contains("update    scribe"), "\(updated.stdout)")
        #expect(updated.stderr.contains("configuration pushed"), "\(updated.stderr)")
        #expect(try agentry(listing, in: repo).stdout == "Write shorter notes.\nnotes\n")
        #expect(try String(contentsOfFile: state.path + "/agents/scribe/vm.pid", encoding: .utf8) == pid)
    }

    @Test func execPassesStatusOutputAndTimeouts() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["runner"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        let failing = try agentry(["exec", "runner", "--", "sh", "-c", "echo to-err >&2; exit 7"], in: repo)
        #expect(failing.status == 7)
        #expect(failing.stderr == "to-err\n")
        let slow = try agentry(["exec", "runner", "--timeout", "1s", "--", "sleep", "30"], in: repo)
        #expect(slow.status == 137)
        #expect(slow.stderr.contains("agentry: timed out after 1s; the command was killed"), "\(slow.stderr)")
        let bare = try agentry(["exec", "runner", "--timeout", "1", "--", "true"], in: repo)
        #expect(bare.status == 2 && bare.stderr.contains("1: expected a duration such as 90s"), "\(bare.stderr)")
        // As `docker exec`: 125 agentry could not run it, 126 not executable, 127 not found.
        let missing = try agentry(["exec", "nobody", "--", "true"], in: repo)
        #expect(missing.status == 125)
        #expect(missing.stderr.contains("no agent nobody has been applied"))
        let notFound = try agentry(["exec", "runner", "--", "no-such-command"], in: repo)
        #expect(notFound.status == 127, "\(notFound.stderr)")
        #expect(notFound.stderr.contains("cannot run no-such-command: No such file or directory"))
        let notExecutable = try agentry(["exec", "runner", "--", "/proc/version"], in: repo)
        #expect(notExecutable.status == 126, "\(notExecutable.stderr)")
    }

    @Test func killSwitchBlocksApplyAndExecUntilLifted() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["rogue"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        let killed = try agentry(["kill", "rogue", "--reason", "leaking tokens", "--actor", "ana"], in: repo)
        #expect(killed.status == 0)
        let status = try agentry(["status"], in: repo).stdout
        #expect(status.contains("killed") && status.contains("leaking tokens, by ana"), "\(status)")
        // Idempotent: killing again changes nothing and says who did it first.
        let again = try agentry(["kill", "rogue", "--reason", "another reason", "--actor", "bo"], in: repo)
        #expect(again.status == 0 && again.stdout.contains("already killed (leaking tokens, by ana"), "\(again.stdout)")
        let blocked = try agentry(["apply"], in: repo)
        #expect(blocked.stderr.contains("blocked by the kill switch"))
        let exec = try agentry(["exec", "rogue", "--", "true"], in: repo)
        #expect(exec.status == 125)
        #expect(exec.stderr.contains("leaking tokens, by ana"))
        #expect(try agentry(["unkill", "rogue", "--actor", "ana"], in: repo).status == 0)
        let lifted = try agentry(["status"], in: repo).stdout
        #expect(!lifted.contains("leaking tokens"), "the switch is gone from status at once: \(lifted)")
        let unkillAgain = try agentry(["unkill", "rogue"], in: repo)
        #expect(unkillAgain.status == 0 && unkillAgain.stdout.contains("rogue is not killed; nothing changed"))
        #expect(try agentry(["apply"], in: repo).stderr.contains("rogue: running"))

        // A name that is neither applied nor in the repository is a typo until --force says not.
        let typo = try agentry(["kill", "rouge", "--reason", "x"], in: repo)
        #expect(typo.status == 2 && typo.stderr.contains("no agent rouge in the state or the repository"))
        #expect(typo.stderr.contains("agentry kill --force rouge"), "\(typo.stderr)")
        let future = try agentry(["kill", "future", "--reason", "not yet", "--force"], in: repo)
        #expect(future.status == 0, "\(future.stderr)")
        #expect(try agentry(["unkill", "future"], in: repo).status == 0)
        #expect(try agentry(["exec", "rogue", "--", "true"], in: repo).status == 0)
    }

    @Test func lifecycleResourcesAndDeletion() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["alpha", "beta"], deletionPolicy: "retain")
        #expect(try agentry(["apply"], in: repo).status == 0)

        // More CPUs: a restart, visible inside the machine.
        try environment(repo, cpus: 2, memory: "192Mi")
        try repo.commitAll("two cpus")
        let restart = try agentry(["apply"], in: repo)
        #expect(restart.stdout.contains("2 to restart"), "\(restart.stdout)")
        #expect(try agentry(["exec", "alpha", "--", "nproc"], in: repo).stdout == "2\n")

        // A configuration change is an update: the machine keeps running, the same process.
        let pidBefore = try String(contentsOfFile: state.path + "/agents/alpha/vm.pid", encoding: .utf8)
        try setLifecycle(repo, "alpha", "active")
        let alpha = repo.url.appendingPathComponent("agents/alpha.yaml")
        try repo.write(
            "agents/alpha.yaml",
            try String(contentsOf: alpha, encoding: .utf8).replacingOccurrences(
                of: "owner: test", with: "owner: other-team"))
        try repo.commitAll("new owner")
        let update = try agentry(["apply"], in: repo)
        #expect(update.status == 0, "\(update.stderr)")
        #expect(update.stdout.contains("1 to update"))
        #expect(try String(contentsOfFile: state.path + "/agents/alpha/vm.pid", encoding: .utf8) == pidBefore)

        // Pause stops the machine and keeps everything; resume starts it again.
        try setLifecycle(repo, "beta", "paused")
        try repo.commitAll("pause")
        #expect(try agentry(["apply"], in: repo).stdout.contains("1 to pause"))
        #expect(try agentry(["exec", "beta", "--", "true"], in: repo).stderr.contains("paused"))
        let status = try agentry(["status", "-o", "json"], in: repo).stdout
        #expect(status.contains("\"machineState\": \"stopped\""))

        // Deleting an agent with deletionPolicy: retain keeps its disk.
        try FileManager.default.removeItem(at: repo.url.appendingPathComponent("agents/beta.yaml"))
        try repo.commitAll("beta leaves")
        #expect(try agentry(["apply"], in: repo).stdout.contains("1 to delete"))
        #expect(FileManager.default.fileExists(atPath: state.path + "/agents/beta/env.qcow2"))
    }

    @Test func brokenMachinesFailAloneWithAClearError() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["healthy", "corrupt", "unlucky"])
        #expect(try agentry(["apply"], in: repo).status == 0)
        for agent in ["corrupt", "unlucky"] {
            let pid = try String(contentsOfFile: state.path + "/agents/\(agent)/vm.pid", encoding: .utf8)
            try Shell.run("kill", ["-9", pid.trimmingCharacters(in: .whitespacesAndNewlines)])
        }
        try Data(String(repeating: "garbage ", count: 4096).utf8)
            .write(to: URL(fileURLWithPath: state.path + "/agents/corrupt/env.qcow2"))
        try FileManager.default.removeItem(atPath: state.path + "/agents/unlucky/env.qcow2")
        let result = try agentry(["apply"], in: repo)
        #expect(result.status == 1)
        #expect(result.stderr.contains("FAILED restart corrupt: the environment disk"))
        #expect(result.stderr.contains("is corrupt"))
        #expect(result.stderr.contains("FAILED restart unlucky: the environment disk"))
        #expect(result.stderr.contains("is missing"))
        #expect(try agentry(["exec", "healthy", "--", "true"], in: repo).status == 0, "the others are untouched")
        let recreated = try agentry(["apply", "--recreate-missing-disks"], in: repo)
        #expect(recreated.stderr.contains("restart unlucky: running"))
    }

    /// A full host disk fails the agent with the system's own words and leaves nothing half-made:
    /// once there is room, the same apply converges. (Needs root to mount a small tmpfs.)
    @Test(.enabled(if: getuid() == 0)) func aFullHostDiskFailsClearlyAndRecovers() throws {
        let agents = state.path + "/agents"
        try FileManager.default.createDirectory(atPath: agents, withIntermediateDirectories: true)
        try Shell.run("mount", ["-t", "tmpfs", "-o", "size=4m", "agentry-test-full", agents])
        defer {
            stopMachines()
            _ = try? Shell.run("umount", ["-l", agents])
        }
        let repo = try repository(agents: ["cramped"])
        let filler = agents + "/filler"
        _ = try Shell.run("dd", ["if=/dev/zero", "of=" + filler, "bs=64k"])  // until the tmpfs is full
        let full = try agentry(["apply"], in: repo)
        #expect(full.status == 1, "\(full.stderr)")
        #expect(
            full.stderr.contains("FAILED create cramped: cannot create the environment disk")
                && full.stderr.contains("no space left on the host's disk"), "\(full.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: agents + "/cramped")
        #expect(!left.contains("env.qcow2") && !left.contains("env.qcow2.new"), "no half-made disk: \(left)")

        try FileManager.default.removeItem(atPath: filler)
        let roomy = try agentry(["apply"], in: repo)
        #expect(roomy.status == 0, "\(roomy.stderr)")
        #expect(try agentry(["exec", "cramped", "--", "true"], in: repo).status == 0)
    }

    @Test func aMachineThatNeverReportsInIsMarkedFailedQuotingItsSerialLog() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["slowpoke"])
        let result = try agentry(["apply", "--boot-timeout", "0"], in: repo)
        #expect(result.status == 1)
        #expect(result.stderr.contains("did not report in"))
        #expect(result.stderr.contains("  | "), "quotes the serial log")
        #expect(try agentry(["status"], in: repo).stdout.contains("failed"))
    }

    @Test func aSecondApplyIsRefusedNamingTheHolder() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["solo"])
        try FileManager.default.createDirectory(atPath: state.path, withIntermediateDirectories: true)
        let holder = try BackgroundProcess(
            "python3",
            [
                "-c",
                "import fcntl, os, signal, sys, time\nf = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\nf.truncate(0); f.write(str(os.getpid()) + '\\n'); f.flush()\nprint('locked', flush=True); time.sleep(60)",
                state.path + "/state.lock",
            ])
        defer { withExtendedLifetime(holder) {} }
        #expect(holder.firstLine() == "locked")
        let result = try agentry(["apply"], in: repo)
        #expect(result.status == 2)
        #expect(result.stderr.contains("locked by process \(holder.pid)"))
    }

    @Test func aSavedPlanIsRefusedOnceStale() throws {
        defer { stopMachines() }
        let repo = try repository(agents: ["planned"])
        let planFile = repo.url.appendingPathComponent("plan.json").path
        // Nothing applied yet: plan says so, unless asked to plan against an empty state.
        let noState = try agentry(["plan"], in: repo)
        #expect(noState.status == 2 && noState.stderr.contains("no agentry state"), "\(noState.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state.path + "/state.sqlite"), "plan created no state")
        #expect(try agentry(["plan", "--empty-state", "--out", planFile], in: repo).status == 0)
        try setLifecycle(repo, "planned", "paused")
        try repo.commitAll("moved on")
        let stale = try agentry(["apply", planFile], in: repo)
        #expect(stale.status == 1, "a refused saved plan is invalid input")
        #expect(stale.stderr.contains("plan again"))

        // A plan whose actions were edited is refused, naming what differs; so are other refs.
        #expect(try agentry(["plan", "--out", planFile], in: repo).status == 0)
        let saved = try String(contentsOfFile: planFile, encoding: .utf8)
        try saved.replacingOccurrences(of: "\"action\": \"create\"", with: "\"action\": \"noop\"")
            .write(toFile: planFile, atomically: true, encoding: .utf8)
        let tampered = try agentry(["apply", planFile], in: repo)
        #expect(tampered.status == 1)
        #expect(tampered.stderr.contains("planned: noop in the saved plan, create now"), "\(tampered.stderr)")
        let otherRef = try agentry(["apply", planFile, "--ref", "HEAD~1"], in: repo)
        #expect(otherRef.status == 2 && otherRef.stderr.contains("drop --repo, --ref and --path"), "\(otherRef.stderr)")
    }

    /// Polls `condition` until it holds, failing after `seconds`.
    func waitUntil(seconds: Double = 20, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        Issue.record("condition not met within \(seconds)s")
    }
}
