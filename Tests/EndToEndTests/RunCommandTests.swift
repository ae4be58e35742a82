import Foundation
import TestSupport
import Testing

/// `agentry run`, `secret`, `history`, `show`, `logs` on real microVMs, with the records checked
/// through plain `git`. (Part of the apply suite: they share its images and run one at a time.)
extension ApplyCommandTests {
    /// A repository with one shell-harness agent whose command is `script`.
    func runRepository(
        agent: String = "greeter", script: String, secrets: [(env: String, ref: String)] = [], timeout: String = "2m",
        env: [String: String] = [:], apis: [String] = ["chat-completions"]
    ) throws -> TemporaryDirectory {
        let directory = try repository(agents: [])
        let escaped = script.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        let variables = (["PROMPT": "{{prompt}}", "MODEL": "{{model.name}}"].merging(env) { $1 })
            .sorted { $0.key < $1.key }.map { "\($0.key): \"\($0.value)\"" }.joined(separator: ", ")
        try directory.write(
            "harnesses/shell.yaml",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata: {name: shell}
            spec:
              type: shell
              command: ["/bin/sh", "-c", "\(escaped)"]
              env: {\(variables)}
              supports: {apis: [\(apis.joined(separator: ", "))]}

            """)
        let secretLines = secrets.map { "    - {env: \($0.env), ref: \($0.ref)}" }.joined(separator: "\n")
        try directory.write(
            "agents/\(agent).yaml",
            """
            apiVersion: agentry/v1
            kind: Agent
            metadata: {name: \(agent), owner: test}
            spec:
              instructions: "Greet people."
              harness: shell
              model: local
              environment: tiny
              run: {prompt: "hello there", timeout: \(timeout)}
              memory: {path: memory/, snapshot: true}
            \(secrets.isEmpty ? "" : "  secrets:\n" + secretLines)

            """)
        try directory.commitAll("the \(agent) agent")
        return directory
    }

    func git(_ arguments: [String], in directory: TemporaryDirectory) throws -> String {
        try Shell.git(arguments, in: directory.url)
    }

    @Test func aRunIsRecordedInGitAndReadableWithPlainGit() throws {
        defer { stopMachines() }
        let repo = try runRepository(
            script:
                "mkdir -p out memory; echo \"$PROMPT from $MODEL\" | tee out/answer.txt; head -c 300000 /dev/zero > 'out/big file.bin'; mkdir -p out/clone/.git; echo ref > out/clone/.git/HEAD; echo seen >> memory/notes; echo to-err >&2; cat AGENTS.md; exit 3"
        )
        let run = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(run.status == 3, "\(run.stderr)")
        #expect(run.stdout.contains("hello there from m\n"))
        #expect(run.stdout.contains("Greet people."), "the instructions are where the harness looks")
        #expect(run.stderr.contains("to-err"))
        // It says what it waits for, in order.
        let waits = [
            "greeter: booting its machine", "greeter: pushing its configuration",
            "greeter: pushing the run's configuration",
        ]
        let positions = waits.compactMap { run.stderr.range(of: $0)?.lowerBound }
        #expect(positions.count == 3 && positions == positions.sorted(), "\(run.stderr)")
        let again = try agentry(["run", "greeter", "--prompt", "second"], in: repo)
        #expect(again.status == 3)

        // Plain git sees the history: two run commits (after the apply's audit commit), a clean fsck.
        let log = try git(["log", "--format=%s", "agentry/history"], in: repo)
        let subjects = log.split(separator: "\n")
        #expect(
            subjects.filter {
                $0.hasPrefix("run greeter ") && $0.hasSuffix("exit 3 in \($0.split(separator: " ").last!)")
            }.count == 2, "\(log)")
        #expect(subjects.contains { $0.hasPrefix("apply ") })
        _ = try git(["fsck", "--strict"], in: repo)
        let files = try git(["ls-tree", "-r", "--name-only", "agentry/history", "runs/greeter"], in: repo)
            .split(separator: "\n").map(String.init)
        let records = files.filter { $0.hasSuffix("/record.yaml") }
        #expect(records.count == 2)
        #expect(files.contains { $0.hasSuffix("/artifacts/answer.txt") })
        #expect(files.contains { $0.hasSuffix("/memory/notes") })
        #expect(files.contains { $0.hasSuffix("/log.txt") })
        // The main branch is untouched: history never mixes with desired state.
        #expect(try git(["ls-tree", "-r", "--name-only", "HEAD"], in: repo).contains("runs/") == false)

        // Every record validates against the published schema; the fields say what happened.
        for record in records {
            let text = try git(["show", "agentry/history:" + record], in: repo)
            try expectValidRecord(text)
            #expect(text.contains("exitStatus: 3"))
            #expect(text.contains("agent: \"greeter\""))
            let head = try git(["rev-parse", "HEAD"], in: repo).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(text.contains("desiredCommit: \"\(head)\""))
        }
        let folder = (records.first! as NSString).deletingLastPathComponent
        let answer = try git(["show", "agentry/history:\(folder)/artifacts/answer.txt"], in: repo)
        #expect(answer.hasSuffix(" from m\n"))
        let digest = try Shell.run("sha256sum", [], input: answer).stdout.prefix(64)
        let recordText = try git(["show", "agentry/history:\(folder)/record.yaml"], in: repo)
        #expect(recordText.contains("sha256: \"\(digest)\""))
        // A file past the size limit is recorded by name and size, its bytes left out of git (and no
        // digest of content that was never redacted).
        #expect(
            recordText.contains("path: \"out/big file.bin\"\n    size: 300000\n    stored: false"), "\(recordText)")
        #expect(!files.contains { $0.hasSuffix("big file.bin") })
        // A .git folder in the output is stored by digest under another name (git refuses such
        // paths in a tree), its own name kept in the record.
        let refDigest = try Shell.run("sh", ["-c", "echo ref | sha256sum"]).stdout.prefix(64)
        #expect(
            recordText.contains(
                "path: \"out/clone/.git/HEAD\"\n    size: 4\n    sha256: \"\(refDigest)\"\n    stored: true\n    storedAs: \"_/\(refDigest)\""
            ),
            "\(recordText)")
        #expect(files.contains { $0.hasSuffix("/artifacts/_/\(refDigest)") })
        #expect(!files.contains { $0.contains("/.git/") })

        // history, show and logs read it back.
        let listed = try agentry(["history", "-o", "json"], in: repo)
        let runs = try decodeJSON(listed.stdout)["runs"] as? [[String: Any]] ?? []
        #expect(runs.count == 2)
        #expect(runs.first?["exitStatus"] as? Int == 3)
        let newest = runs.first?["runId"] as? String ?? ""
        #expect(try agentry(["logs", "greeter"], in: repo).stdout.hasPrefix("second from m\n"))
        let shown = try agentry(["show", newest], in: repo)
        #expect(shown.stdout.contains("runId: \"\(newest)\"") && shown.stdout.contains("--- log.txt\nsecond from m"))
        #expect(try agentry(["history"], in: repo).stdout.contains("exit 3"))
    }

    /// Secrets reach the run (as variables and as files in a tmpfs) and nothing else: not git, not
    /// the log, not the state directory, not the images or the environment disk.
    @Test func secretsReachTheRunAndNothingElse() throws {
        defer { stopMachines() }
        let value = "s3cr3t-\(UUID().uuidString.prefix(8))-value"
        let repo = try runRepository(
            script:
                "echo \"token=$API_TOKEN\"; [ \"$(cat $AGENTRY_SECRETS_DIR/API_TOKEN)\" = \"$API_TOKEN\" ] && echo file-matches; mkdir -p out; echo \"$API_TOKEN\" | wc -c > out/length",
            secrets: [("API_TOKEN", "ci/api-token")])

        // A missing secret fails the run before it starts, naming the key.
        let missing = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("ci/api-token"), "\(missing.stderr)")
        let notStarted = try git(["show", "agentry/history:" + (try latestRunFolder(repo)) + "/record.yaml"], in: repo)
        #expect(
            notStarted.contains("outcome: \"notStarted\"") && notStarted.contains("phase: \"secrets\""), "\(notStarted)"
        )

        let set = try Shell.run(
            Agentry.binary.path, ["secret", "set", "ci/api-token", "--state-dir", state.path], input: value + "\n")
        #expect(set.status == 0, "\(set.stderr)")
        let list = try Shell.run(Agentry.binary.path, ["secret", "list", "--state-dir", state.path])
        #expect(list.stdout.hasPrefix("ci/api-token\t"))
        let run = try agentry(["run", "greeter"], in: repo)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("token=***\n"), "shown redacted: \(run.stdout)")
        #expect(run.stdout.contains("file-matches"))
        #expect(!run.stdout.contains(value) && !run.stderr.contains(value))
        // The run's secret folder is gone afterwards.
        #expect(try agentry(["exec", "greeter", "--", "ls", "/run/secrets"], in: repo).stdout == "")
        let length = try git(
            ["show", "agentry/history:" + (try latestRunFolder(repo)) + "/artifacts/length"], in: repo)
        #expect(length.trimmingCharacters(in: .whitespacesAndNewlines) == "\(value.utf8.count + 1)")

        // Stop the machine so its disk is flushed, then search everything.
        stopMachines()
        let objects = try Shell.run(
            "sh", ["-c", "git cat-file --batch-all-objects --batch | grep -c -F -- \"$0\" || true", value], in: repo.url
        )
        #expect(objects.stdout == "0\n", "git objects")
        let onDisk = try Shell.run(
            "grep", ["-r", "-l", "-a", "-F", "--", value, state.path + "/", Self.images.path + "/"])
        #expect(onDisk.status == 1, "found in: \(onDisk.stdout)")
        let logged = try Shell.run("grep", ["-r", "-l", "-a", "-F", "--", value, repo.path + "/.git"])
        #expect(logged.status == 1, "found in: \(logged.stdout)")
        let store = try String(contentsOfFile: state.path + "/secrets.json", encoding: .utf8)
        #expect(store.contains("ci/api-token"))
        let mode =
            try FileManager.default.attributesOfItem(atPath: state.path + "/secrets.json")[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    /// The folder of the run recorded last (run ids sort by second only: two runs in one second
    /// are told apart by the history's commit order).
    func latestRunFolder(_ repo: TemporaryDirectory) throws -> String {
        let subjects = try git(["log", "--format=%s", "agentry/history", "--", "runs/"], in: repo).split(
            separator: "\n")
        guard let subject = subjects.first(where: { $0.hasPrefix("run ") }) else { return "" }
        let words = subject.split(separator: " ")
        return "runs/\(words[1])/\(words[2].dropLast())"
    }

    /// The timeout ends the whole process tree in the guest, also what left its process group.
    @Test func aTimeoutKillsTheWholeTreeAndIsRecorded() throws {
        defer { stopMachines() }
        let repo = try runRepository(script: "sleep 300 & setsid sleep 301 & echo started; wait")
        let run = try agentry(["run", "greeter", "--apply", "--timeout", "2s"], in: repo)
        #expect(run.status == 124, "\(run.stderr)")
        #expect(run.stderr.contains("timed out"))
        let record = try git(["show", "agentry/history:" + (try latestRunFolder(repo)) + "/record.yaml"], in: repo)
        #expect(record.contains("timedOut: true") && record.contains("outcome: \"timedOut\""))
        let left = try agentry(
            [
                "exec", "greeter", "--", "sh", "-c",
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 30' || true",
            ], in: repo)
        #expect(left.stdout == "0\n", "sleeps left behind: \(left.stdout)")
        // A command that exits leaving a setsid'd child on its output still finishes, and the child goes.
        let leaver = try agentry(
            ["exec", "greeter", "--", "sh", "-c", "setsid sleep 302 & echo bye"], in: repo, timeout: 30)
        #expect(leaver.status == 0 && leaver.stdout == "bye\n")
        let after = try agentry(
            [
                "exec", "greeter", "--", "sh", "-c",
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 302' || true",
            ], in: repo)
        #expect(after.stdout == "0\n")
    }

    /// Paused and killed agents refuse to run, saying why; kill and unkill are recorded in history.
    @Test func pausedAndKilledAgentsRefuseToRun() throws {
        defer { stopMachines() }
        let repo = try runRepository(script: "echo ran")
        #expect(try agentry(["run", "greeter", "--apply"], in: repo).status == 0)
        #expect(
            try agentry(["kill", "greeter", "--reason", "leaking data", "--actor", "oncall"], in: repo).status == 0)
        let killed = try agentry(["run", "greeter"], in: repo)
        #expect(killed.status == 2)
        #expect(killed.stderr.contains("killed (leaking data, by oncall)"), "\(killed.stderr)")
        #expect(try agentry(["unkill", "greeter", "--actor", "oncall"], in: repo).status == 0)
        let events = try git(["log", "--format=%s", "agentry/history", "--", "events/"], in: repo)
        #expect(
            events.contains("kill greeter-kill by oncall") && events.contains("unkill greeter-unkill by oncall"),
            "\(events)")

        try setLifecycle(repo, "greeter", "paused")
        try repo.commitAll("pause")
        let paused = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(paused.status == 2)
        #expect(paused.stderr.contains("greeter is paused"), "\(paused.stderr)")
    }

    /// Memory survives the machine: a new environment disk gets the memory folder back from history.
    @Test func memoryIsRestoredOntoANewDisk() throws {
        defer { stopMachines() }
        let repo = try runRepository(script: "mkdir -p memory; echo visit >> memory/visits; wc -l < memory/visits")
        #expect(try agentry(["run", "greeter", "--apply"], in: repo).stdout == "1\n")
        #expect(try agentry(["run", "greeter"], in: repo).stdout == "2\n")
        stopMachines()
        try FileManager.default.removeItem(atPath: state.path + "/agents/greeter/env.qcow2")
        let applied = try agentry(["apply", "--recreate-missing-disks"], in: repo)
        #expect(applied.stderr.contains("memory restored from run"), "\(applied.stderr)")
        #expect(try agentry(["run", "greeter"], in: repo).stdout == "3\n")
    }
}

extension ApplyCommandTests {
    /// `egress: [hosts]`: the machine reaches the listed hosts through agentry's proxy and nothing
    /// else: other hosts get a 403 naming the allowlist, and direct connections go nowhere.
    @Test func anEgressAllowlistIsEnforced() throws {
        defer { stopMachines() }
        let site = try TemporaryDirectory("agentry-egress-site")
        try site.write("ok.txt", "reached\n")
        let server = try BackgroundProcess(
            "python3",
            [
                "-c",
                "import http.server, functools, sys\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\ns = http.server.HTTPServer(('127.0.0.1', 0), h)\nprint(s.server_address[1], flush=True)\ns.serve_forever()",
                site.path,
            ])
        defer { withExtendedLifetime(server) {} }
        let port = server.firstLine().trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(Int(port) != nil)

        // 10.0.2.2 is the host in QEMU's user network: the proxy takes it to the host's loopback.
        let repo = try runRepository(script: "wget -q -O - http://10.0.2.2:\(port)/ok.txt")
        try repo.write(
            "environments/tiny.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: tiny}\nspec: {base: minimal, resources: {cpus: 1, memory: 192Mi, disk: 256Mi}, network: {egress: [\"10.0.2.2:\(port)\"]}}\n"
        )
        try repo.commitAll("egress allowlist")
        let run = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == "reached\n", "through the proxy the run's environment names")

        // exec finds the proxy too; a host outside the list is refused, naming the list.
        let refused = try agentry(
            ["exec", "greeter", "--", "sh", "-c", "wget -q -O - http://localhost:\(port)/ok.txt 2>&1; echo status=$?"],
            in: repo)
        #expect(refused.stdout.contains("403") && refused.stdout.contains("status=1"), "\(refused.stdout)")
        // Around the proxy, nothing gets out: QEMU's user network is restricted.
        let direct = try agentry(
            [
                "exec", "greeter", "--", "sh", "-c",
                "unset http_proxy HTTP_PROXY; wget -q -T 3 -O - http://10.0.2.2:\(port)/ok.txt 2>&1; echo status=$?",
            ], in: repo, timeout: 60)
        #expect(!direct.stdout.contains("reached") && direct.stdout.contains("status=1"), "\(direct.stdout)")

        // A guest that opens connection after connection to the proxy and holds them: the host
        // keeps a bounded number (64 a machine; more are refused at once), and closes held ones at
        // the request-head deadline, so the connectors QEMU started for them go too.
        let socket = state.path + "/agents/greeter/egress.sock"
        let connectors = { () throws -> Int in
            let listed = try Shell.run("pgrep", ["-c", "-f", "socat STDIO UNIX-CONNECT:\(socket)"])
            return Int(listed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        let flood = try agentry(
            [
                "exec", "greeter", "--", "sh", "-c",
                "i=0; while [ $i -lt 150 ]; do (sleep 40 | nc 10.0.2.100 3128 >/dev/null 2>&1 &); i=$((i+1)); done; echo opened",
            ], in: repo, timeout: 60)
        #expect(flood.stdout == "opened\n", "\(flood.stderr)")
        var most = 0
        try waitUntil(seconds: 60) {
            let count = try connectors()
            most = max(most, count)
            return count == 0 && most > 0
        }
        #expect(most <= 80, "at most \(most) connectors at once")
        #expect(try agentry(["exec", "greeter", "--", "echo", "alive"], in: repo).stdout == "alive\n")
    }
}

extension ApplyCommandTests {
    /// Swapping the harness installs the new one once, leaving the agent's files and memory; swapping
    /// the model changes only what is rendered.
    @Test func harnessAndModelSwapsKeepTheAgent() throws {
        defer { stopMachines() }
        let repo = try runRepository(script: "true")
        func harness(_ name: String) throws {
            try repo.write(
                "harnesses/\(name).yaml",
                """
                apiVersion: agentry/v1
                kind: Harness
                metadata: {name: \(name)}
                spec:
                  type: custom
                  version: "1.0"
                  install: {script: "echo installed >> /agent/\(name).installs"}
                  command: ["/bin/sh", "-c", "mkdir -p memory; echo \(name) >> memory/seen; echo \(name) on $MODEL; cat memory/seen | tr '\\\\n' ' '"]
                  env: {MODEL: "{{model.name}}"}
                  supports: {apis: [chat-completions]}

                """)
        }
        try harness("alpha")
        try harness("beta")
        try repo.write(
            "models/other.yaml",
            "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: other}\nspec: {provider: local, name: m2, api: chat-completions, baseUrl: 'http://127.0.0.1:8081/v1'}\n"
        )
        func use(harness: String, model: String) throws {
            let file = repo.url.appendingPathComponent("agents/greeter.yaml")
            var text = try String(contentsOf: file, encoding: .utf8)
            text = text.replacingOccurrences(
                of: #"harness: \w+"#, with: "harness: \(harness)", options: .regularExpression)
            text = text.replacingOccurrences(of: #"model: \w+"#, with: "model: \(model)", options: .regularExpression)
            try repo.write("agents/greeter.yaml", text)
            try repo.commitAll("\(harness) on \(model)")
        }
        try use(harness: "alpha", model: "local")
        #expect(try agentry(["run", "greeter", "--apply"], in: repo).stdout == "alpha on m\nalpha ")
        try use(harness: "beta", model: "local")
        let switched = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(switched.stderr.contains("installing the harness beta"), "\(switched.stderr)")
        #expect(switched.stdout == "beta on m\nalpha beta ", "memory kept across the swap: \(switched.stdout)")
        try use(harness: "beta", model: "other")
        let remodeled = try agentry(["run", "greeter", "--apply"], in: repo)
        #expect(!remodeled.stderr.contains("installing"), "a model swap installs nothing")
        #expect(remodeled.stdout == "beta on m2\nalpha beta beta ")
        let installs = try agentry(
            ["exec", "greeter", "--", "sh", "-c", "cat /agent/alpha.installs /agent/beta.installs"], in: repo)
        #expect(installs.stdout == "installed\ninstalled\n", "each harness installed once")
    }
}
