import AgentryGit
import AgentryMachine
import AgentryModel
import AgentryRepository
import AgentryState
import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where history is kept: the agent repository's branch.
struct HistoryOptions: ParsableArguments {
    @Option(name: .long, help: "The git repository (its history branch holds the records). (default: the one the last apply read, else .)")
    var repository: String?

    @Option(name: .long, help: "The history branch. (env: AGENTRY_HISTORY_BRANCH; default agentry/history)")
    var historyBranch: String?

    @OptionGroup var state: StateOptions

    var branch: String { historyBranch ?? History.defaultBranch }
    var repo: String { repository ?? History.rememberedRepository(stateDirectory: state.directory) ?? "." }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run an agent once: its harness in its machine, secrets projected for the run, the record committed to history.",
        discussion: """
            Brings the agent's machine up to the desired commit first (apply's rules, this agent only), \
            pushes its configuration, installs its harness once per environment disk and harness \
            revision, delivers its secrets into a tmpfs for this run only, runs the harness command in \
            its home with output streamed (secret values shown as ***), kills the whole process tree at \
            the timeout, collects the output folder as artifacts and the memory folder as a snapshot, \
            and commits runs/<agent>/<run-id>/ to the history branch (pushed when there is an origin).

            Exit status: the harness's own; 2 when the run could not start (a paused, revoked or killed \
            agent, a missing secret, an invalid repository).
            """)

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "The prompt. (default: the agent's run.prompt)")
    var prompt: String?

    @Option(name: .long, help: "Read the prompt from this file (- for standard input).")
    var promptFile: String?

    @Option(name: .long, help: "Kill the run after this long (15m, 90s). (default: the agent's run.timeout)")
    var timeout: String?

    @Option(name: .long, help: "The commit, branch or tag to run. (default: HEAD)")
    var ref: String = "HEAD"

    @Option(name: .long, help: "The agent repository's folder inside the git repository.")
    var path: String = ""

    @Option(name: .long, help: "What started the run, for the record. (default: manual)")
    var trigger: String = "manual"

    @Option(name: .long, help: "Who, for the record. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Option(name: .long, help: "The git repository. (default: .)")
    var repo: String = "."

    @Option(name: .long, help: "The history branch. (env: AGENTRY_HISTORY_BRANCH; default agentry/history)")
    var historyBranch: String?

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.makeLogger()
        if prompt != nil && promptFile != nil { throw ValidationError("give --prompt or --prompt-file, not both") }
        var text = prompt
        if let promptFile {
            let data = promptFile == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: promptFile)
            guard let data else { throw CommandError("cannot read the prompt file \(promptFile)") }
            text = String(decoding: data, as: UTF8.self)
        }
        var limit: Duration?
        if let timeout {
            guard let milliseconds = DurationText.parse(timeout), milliseconds > 0 else {
                throw ValidationError("--timeout \(timeout): expected a duration such as 90s, 15m or 1h30m")
            }
            limit = .milliseconds(Int64(min(milliseconds, UInt64(Int64.max))))
        }
        let request = RunRequest(
            agent: agent, repository: repo, ref: ref, path: path, stateDirectory: state.directory, prompt: text,
            timeout: limit, actor: currentActor(actor), trigger: trigger, guestAgent: GuestAgentLocation.path,
            historyBranch: historyBranch ?? History.defaultBranch)
        do {
            let outcome = try Runner.run(
                request, logger: logger, progress: { FileHandleOutput.standardError("agentry: \($0)") },
                output: { stream, data in
                    data.withUnsafeBufferPointer { _ = write(stream == .stdout ? 1 : 2, $0.baseAddress, $0.count) }
                })
            let record = outcome.record
            let summary = record.timedOut ? "timed out" : "exit \(record.exitStatus)"
            FileHandleOutput.standardError(
                "agentry: run \(record.runID): \(summary) in \(Canonical.duration(UInt64(max(0, record.durationMilliseconds)))), \(record.artifacts.count) artifact(s); recorded in \(historyBranch ?? History.defaultBranch) at \(outcome.historyCommit.prefix(12))")
            if let warning = outcome.pushWarning { FileHandleOutput.standardError("agentry: warning: \(warning)") }
            throw ExitCode(Int32(truncatingIfNeeded: record.exitStatus))
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}

struct SecretCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret",
        abstract: "The host's secret store (encrypted at rest; values never on the command line).",
        discussion: """
            Stored in <state>/secrets.json (0600), each value encrypted with XChaCha20-Poly1305 under \
            the key in <state>/secret.key or $AGENTRY_SECRET_KEY_FILE (keep it apart from backups of the \
            state). Runs also find secrets in $AGENTRY_SECRETS_DIR/<key> files and in AGENTRY_SECRET_<KEY> \
            environment variables (the key upper-cased, other characters as _).
            """,
        subcommands: [SecretSet.self, SecretList.self, SecretRemove.self])
}

struct SecretSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Store a secret; the value is read from standard input (one trailing newline dropped).")

    @Argument(help: "The key, such as github/token.")
    var key: String

    @OptionGroup var state: StateOptions

    func run() throws {
        if isatty(0) != 0 { FileHandleOutput.standardError("agentry: type the value of \(key), then Ctrl-D") }
        var value = Array(FileHandle.standardInput.readDataToEndOfFile())
        if value.last == 0x0A { value.removeLast() }
        if value.last == 0x0D { value.removeLast() }
        do {
            try SecretStore(stateDirectory: state.directory).set(key, value: value)
            FileHandleOutput.standardError("agentry: stored \(key)")
        } catch let error as SecretError {
            throw CommandError(error.message)
        }
    }
}

struct SecretList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the stored keys (never values).")

    @OptionGroup var state: StateOptions

    func run() throws {
        do {
            for entry in try SecretStore(stateDirectory: state.directory).list() {
                FileHandleOutput.standardOutput("\(entry.key)\t\(ISO8601DateFormatter().string(from: entry.updatedAt))\n")
            }
        } catch let error as SecretError {
            throw CommandError(error.message)
        }
    }
}

struct SecretRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a stored secret.")

    @Argument(help: "The key.")
    var key: String

    @OptionGroup var state: StateOptions

    func run() throws {
        do {
            try SecretStore(stateDirectory: state.directory).remove(key)
        } catch let error as SecretError {
            throw CommandError(error.message)
        }
    }
}

struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "List recorded runs, newest first (from the history branch).")

    @Argument(help: "Only this agent's runs.")
    var agent: String?

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: String = "text"

    @Option(name: .long, help: "At most this many runs.")
    var limit: Int = 50

    @OptionGroup var history: HistoryOptions

    func run() throws {
        guard output == "text" || output == "json" else { throw ValidationError("-o \(output): expected text or json") }
        do {
            let runs = Array(try History.runs(repository: history.repo, agent: agent, branch: history.branch).prefix(limit))
            if output == "json" {
                let items = runs.map { record -> [String: Any] in
                    [
                        "runId": record.runID, "agent": record.agent, "startedAt": ISO8601DateFormatter().string(from: record.startedAt),
                        "durationMs": record.durationMilliseconds, "exitStatus": record.exitStatus, "timedOut": record.timedOut,
                        "desiredCommit": record.desiredCommit, "harness": record.harnessName, "model": record.modelName,
                        "trigger": record.trigger, "by": record.triggeredBy, "artifacts": record.artifacts.count,
                    ]
                }
                let data = try JSONSerialization.data(withJSONObject: ["formatVersion": 1, "runs": items], options: [.prettyPrinted, .sortedKeys])
                FileHandleOutput.standardOutput(String(decoding: data, as: UTF8.self) + "\n")
                return
            }
            guard !runs.isEmpty else {
                FileHandleOutput.standardError("agentry: no runs recorded in \(history.branch)\(agent.map { " for \($0)" } ?? "")")
                return
            }
            var rows = [["RUN", "AGENT", "STARTED", "DURATION", "RESULT", "HARNESS", "MODEL", "BY"]]
            let formatter = ISO8601DateFormatter()
            for record in runs {
                rows.append([
                    record.runID, record.agent, formatter.string(from: record.startedAt),
                    Canonical.duration(UInt64(max(0, record.durationMilliseconds))),
                    record.timedOut ? "timed out" : "exit \(record.exitStatus)", record.harnessName, record.modelName,
                    record.triggeredBy,
                ])
            }
            let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let line = row.enumerated().map { index, cell in
                    index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                }.joined(separator: "  ")
                FileHandleOutput.standardOutput(line + "\n")
            }
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print a run's record and its log.")

    @Argument(help: "The run id (or a unique prefix).")
    var runID: String

    @OptionGroup var history: HistoryOptions

    func run() throws {
        do {
            let found = try History.run(runID, repository: history.repo, branch: history.branch)
            FileHandleOutput.standardOutput(found.text)
            FileHandleOutput.standardOutput("--- log.txt\n" + found.log)
            if !found.log.hasSuffix("\n") && !found.log.isEmpty { FileHandleOutput.standardOutput("\n") }
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print the log of an agent's latest run.")

    @Argument(help: "The agent.")
    var agent: String

    @OptionGroup var history: HistoryOptions

    func run() throws {
        do {
            guard let latest = try History.runs(repository: history.repo, agent: agent, branch: history.branch).first else {
                throw CommandError("no runs of \(agent) recorded in \(history.branch)")
            }
            let found = try History.run(latest.runID, repository: history.repo, branch: history.branch)
            FileHandleOutput.standardOutput(found.log)
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}

/// For `bench/history_bench.py`: commits synthetic run records through the history writer, one
/// commit per record as runs make them, and prints how long that took.
struct HistoryBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history-bench", abstract: "Benchmark helper: commit N synthetic run records.", shouldDisplay: false)

    @Option(name: .long, help: "The git repository.")
    var repo: String

    @Option(name: .long, help: "How many records.")
    var records: Int = 1000

    @Option(name: .long, help: "Spread over this many agents.")
    var agents: Int = 10

    func run() throws {
        let start = ContinuousClock.now
        do {
            let history = HistoryBranch(repository: try GitRepository.open(repo))
            let author = Signature(name: "bench", email: "bench@localhost")
            for index in 0..<records {
                let folder = "runs/agent-\(index % agents)/run-\(String(format: "%06d", index))"
                try history.append(
                    [
                        RecordFile(path: folder + "/record.yaml", bytes: Array(HistoryBenchCommand.record(index).utf8)),
                        RecordFile(path: folder + "/log.txt", bytes: Array("log line of run \(index)\n".utf8)),
                    ], message: "run \(index)\n", author: author, at: Date(timeIntervalSince1970: 1_800_000_000 + Double(index)))
            }
        } catch let error as GitError {
            throw CommandError(error.message)
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        FileHandleOutput.standardOutput("{\"records\": \(records), \"seconds\": \(seconds)}\n")
    }

    /// The same bytes the Python baseline writes.
    static func record(_ index: Int) -> String {
        "formatVersion: 1\nrunId: \"run-\(String(format: "%06d", index))\"\nagent: \"bench\"\nexitStatus: 0\n"
    }
}

/// Started by QEMU (`guestfwd ... cmd:`) for each connection a machine with an egress allowlist
/// opens to its proxy address: serves that one connection on standard input and output.
struct EgressProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "egress-proxy", abstract: "The egress proxy of machines with an allowlist (run by QEMU).", shouldDisplay: false)

    @Option(name: .long, help: "Allowed hosts: host, host:port or *.domain, comma-separated.")
    var allow: String?

    @Option(name: .long, help: "A file of allowed hosts, one per line (read for each connection).")
    var allowFile: String?

    func run() throws {
        var entries = allow.map { $0.split(separator: ",").map(String.init) } ?? []
        if let allowFile { entries += EgressAllowlist.read(allowFile).entries }
        throw ExitCode(EgressProxy.serve(EgressAllowlist(entries)))
    }
}
