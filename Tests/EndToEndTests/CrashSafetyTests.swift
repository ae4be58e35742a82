import Foundation
import TestSupport
import Testing

/// SIGKILL of `apply` at any moment, then `apply` again: one QEMU per agent, every agent
/// configured at the revision recorded as applied, memory restored onto every new disk, an audit
/// record for every step carried out. (Part of the apply suite: it shares its images.)
extension ApplyCommandTests {
    /// Commits a memory snapshot of each agent to the history branch, as runs would have.
    func seedMemory(_ repo: TemporaryDirectory, agents: [String]) throws {
        let files = try TemporaryDirectory("agentry-seed")
        for (index, agent) in agents.enumerated() {
            let run = "runs/\(agent)/20270101-00000\(index)-0000000\(index)"
            try files.write(
                run + "/record.yaml",
                """
                formatVersion: 2
                runId: "20270101-00000\(index)-0000000\(index)"
                agent: "\(agent)"
                owner: "test"
                outcome: "succeeded"
                startedAt: "2027-01-01T00:00:0\(index).000Z"
                endedAt: "2027-01-01T00:00:0\(index).500Z"
                memory:
                  files: 1
                  stored: true

                """)
            try files.write(run + "/memory/notes.md", "memory of \(agent)\n")
        }
        let index = files.path + "/../seed-index-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: index) }
        let environment = [
            "GIT_INDEX_FILE": index, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        ]
        let git = { (arguments: [String]) throws -> String in
            let result = try Shell.run(
                "git", ["--git-dir", repo.path + "/.git", "--work-tree", files.path] + arguments,
                environment: environment)
            guard result.status == 0 else { throw Shell.Failure(description: result.stderr) }
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        _ = try git(["add", "-A"])
        let tree = try git(["write-tree"])
        let commit = try git(["commit-tree", tree, "-m", "seed memory"])
        _ = try git(["update-ref", "refs/heads/agentry/history", commit])
    }

    /// The apply records on the history branch, as text.
    func applyRecords(_ repo: TemporaryDirectory) throws -> [String: String] {
        let listing = try Shell.git(["ls-tree", "-r", "--name-only", "agentry/history", "applies/"], in: repo.url)
        var records: [String: String] = [:]
        for path in listing.split(separator: "\n") {
            records[String(path)] = try Shell.git(["show", "agentry/history:\(path)"], in: repo.url)
        }
        return records
    }

    @Test func applyKilledAtAnyMomentConvergesOnTheNext() throws {
        let agents = ["k1", "k2", "k3"]
        let repo = try repository(agents: agents)
        try seedMemory(repo, agents: agents)
        for delay in [0.2, 0.6, 1.0, 1.5, 2.0, 3.0, 4.5] {
            let state = try TemporaryDirectory("agentry-sweep")
            try FileManager.default.createSymbolicLink(
                atPath: state.path + "/images", withDestinationPath: Self.images.path)
            defer { _ = try? Shell.run("pkill", ["-9", "-f", state.path + "/agents/"]) }
            let before = try applyRecords(repo)
            let first = try BackgroundProcess(
                Agentry.binary.path, ["apply", "--state-dir", state.path], in: repo.url,
                environment: ["AGENTRY_ACCELERATOR": "tcg"])
            usleep(UInt32(delay * 1_000_000))
            kill(first.pid, SIGKILL)

            let again = try Shell.run(
                Agentry.binary.path, ["apply", "--state-dir", state.path], in: repo.url,
                environment: ["AGENTRY_ACCELERATOR": "tcg"], timeout: 240)
            #expect(again.status == 0, "killed after \(delay)s: \(again.stdout)\(again.stderr)")
            let status = try decodeJSON(
                try Shell.run(Agentry.binary.path, ["status", "--state-dir", state.path, "-o", "json"], in: repo.url)
                    .stdout)
            let rows = status["agents"] as? [[String: Any]] ?? []
            #expect(rows.count == 3)
            for row in rows {
                let agent = row["name"] as? String ?? "?"
                #expect(
                    row["sync"] as? String == "inSync" && row["health"] as? String == "running", "\(delay)s: \(row)")
                let qemus = try Shell.run(
                    "pgrep", ["-f", "^[^ ]*qemu-system-x86_64 .*" + state.path + "/agents/\(agent)/ctl.sock"])
                #expect(qemus.stdout.split(separator: "\n").count == 1, "\(delay)s: one QEMU for \(agent)")
                let inside = try Shell.run(
                    Agentry.binary.path,
                    [
                        "exec", "--state-dir", state.path, agent, "--", "sh", "-c",
                        "cat .agentry/agent.json memory/notes.md",
                    ],
                    in: repo.url)
                #expect(
                    inside.stdout.contains(row["appliedRevision"] as? String ?? "-"),
                    "\(delay)s: \(agent) configured at the applied revision")
                #expect(
                    inside.stdout.contains("memory of \(agent)\n"),
                    "\(delay)s: memory restored onto \(agent)'s new disk")
            }
            // Every agent's step is in an audit record (an interrupted apply's included).
            let added = try applyRecords(repo).filter { before[$0.key] == nil }.values.joined(separator: "\n")
            for agent in agents {
                #expect(added.contains(" \(agent): done\""), "\(delay)s: no audit record of \(agent)'s step:\n\(added)")
            }
        }
    }
}

/// When several kinds of change meet in one commit, one apply carries them all out: the machine is
/// read back (QEMU's command line, files in the guest).
extension ApplyCommandTests {
    struct Shape {
        var memory = "192Mi"
        var cpus = 1
        var egress = "none"
        var version = "1"
        var instructions = "Be brief."
    }

    func declare(_ repo: TemporaryDirectory, _ agent: String, _ shape: Shape) throws {
        try repo.write(
            "environments/\(agent).yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: env-\(agent)}\nspec: {base: minimal, resources: {cpus: \(shape.cpus), memory: \(shape.memory), disk: 256Mi}, network: {egress: \(shape.egress)}}\n"
        )
        try repo.write(
            "harnesses/\(agent).yaml",
            "apiVersion: agentry/v1\nkind: Harness\nmetadata: {name: h-\(agent)}\nspec: {type: shell, version: \"\(shape.version)\", command: [\"/bin/sh\", \"-c\", \"true\"], supports: {apis: [chat-completions]}}\n"
        )
        try repo.write(
            "agents/\(agent).yaml",
            "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: \(agent), owner: test}\nspec: {instructions: \"\(shape.instructions)\", harness: h-\(agent), model: local, environment: env-\(agent)}\n"
        )
    }

    @Test func severalKindsOfChangeInOneCommitAreAllCarriedOut() throws {
        defer { stopMachines() }
        let repo = try repository(agents: [])
        let changes: [String: (Shape) -> Shape] = [
            "p1": {
                var s = $0; s.memory = "256Mi"; s.version = "2"; return s
            },
            "p2": {
                var s = $0; s.cpus = 2; s.instructions = "Be thorough."; return s
            },
            "p3": {
                var s = $0; s.egress = "all"; s.memory = "256Mi"; return s
            },
            "p4": {
                var s = $0; s.version = "2"; s.instructions = "Be thorough."; return s
            },
            "p5": {
                var s = $0; s.cpus = 2; s.egress = "all"; return s
            },
        ]
        for agent in changes.keys { try declare(repo, agent, Shape()) }
        try repo.commitAll("five agents")
        let first = try agentry(["apply"], in: repo)
        #expect(first.status == 0, "\(first.stderr)")
        for (agent, change) in changes { try declare(repo, agent, change(Shape())) }
        try repo.commitAll("two changes each")
        let second = try agentry(["apply"], in: repo)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(try agentry(["plan", "--detailed-exitcode"], in: repo).status == 0, "converged in one apply")

        let status = try decodeJSON(try agentry(["status", "-o", "json"], in: repo).stdout)
        let applied = Dictionary(
            uniqueKeysWithValues: (status["agents"] as? [[String: Any]] ?? []).map {
                ($0["name"] as? String ?? "", $0["appliedRevision"] as? String ?? "")
            })
        for (agent, change) in changes {
            let wanted = change(Shape())
            let pid = try String(contentsOfFile: state.path + "/agents/\(agent)/vm.pid", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let arguments = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")).split(separator: 0)
                .map { String(decoding: $0, as: UTF8.self) }
            let memory = arguments.firstIndex(of: "-m").map { arguments[$0 + 1] }
            #expect(memory == (wanted.memory == "256Mi" ? "256M" : "192M"), "\(agent): \(memory ?? "-")")
            #expect(arguments.firstIndex(of: "-smp").map { arguments[$0 + 1] } == "\(wanted.cpus)", "\(agent)")
            // Every machine with a model reaches the gateway; only `egress: all` is unrestricted.
            let netdev = arguments.firstIndex(of: "-netdev").map { arguments[$0 + 1] } ?? ""
            #expect(netdev.contains("guestfwd=tcp:10.0.2.101:80"), "\(agent): \(netdev)")
            #expect(!netdev.contains("restrict=on") == (wanted.egress == "all"), "\(agent): \(netdev)")
            let inside = try agentry(
                ["exec", agent, "--", "sh", "-c", "cat AGENTS.md; echo; cat .agentry/agent.json; nproc"], in: repo)
            #expect(inside.stdout.hasPrefix(wanted.instructions + "\n"), "\(agent): \(inside.stdout)")
            #expect(inside.stdout.contains(applied[agent] ?? "?"), "\(agent): configured at the applied revision")
            #expect(inside.stdout.hasSuffix("\(wanted.cpus)\n"), "\(agent): the guest sees \(wanted.cpus) CPUs")
        }
    }
}
