import AgentryComposition
import AgentryCore
import ArgumentParser

#if canImport(Glibc)
    import Glibc
#endif

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run an agent once, at its applied revision, and record the run in history.",
        discussion: """
            Runs the revision that was applied to the agent (only apply changes what runs): when the \
            repository holds another revision, says so and runs the applied one; --apply applies the \
            repository to this agent first. Pushes its configuration, installs its harness once per \
            environment disk and harness revision, delivers its secrets into a tmpfs for this run only, \
            runs the harness command in its home with output streamed (secret values shown as ***) and \
            kills all it started at the timeout, collects the output folder as artifacts and the memory \
            folder as a snapshot, and commits runs/<agent>/<run-id>/ to the history branch (pushed when \
            there is an origin).

            Every run gets a record, whatever happens to it: outcome succeeded, failed, timedOut, \
            interrupted, notStarted or machineLost, with the phase it stopped in and why. One run of an \
            agent at a time: a second waits for the first, saying so. Ctrl-C or SIGTERM kills the \
            harness and all it started, removes the run's secrets and records the run as interrupted \
            (a second Ctrl-C leaves at once; the next run records it).

            Exit status: the harness's own; 124 when it timed out; 130 / 143 when interrupted by \
            SIGINT / SIGTERM; 2 when the run could not start (a paused, revoked or killed agent, a \
            missing secret, a machine that is not running) or the machine was lost.
            """)

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "The prompt. (default: the agent's run.prompt)")
    var prompt: String?

    @Option(name: .long, help: "Read the prompt from this file (- for standard input).")
    var promptFile: String?

    @Option(
        name: .long, help: "Kill the run after this long (15m, 90s). (default: the agent's run.timeout)",
        transform: GoDuration.parse)
    var timeout: Duration?

    @Flag(name: .long, help: "Apply the repository (at --ref) to this agent first.")
    var apply = false

    @Flag(
        name: .customLong("continue"),
        help:
            "Continue the harness's previous session for this agent (its continueCommand: claude --continue, codex exec resume --last, hermes --continue)."
    )
    var continueSession = false

    @Option(
        name: .long,
        help:
            "The commit, branch or tag: with --apply, what to apply; without, it must hold the applied revision. (default: HEAD)"
    )
    var ref: String?

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @Option(name: .long, help: "What started the run, for the record.")
    var trigger: String = "manual"

    @Option(name: .long, help: "Who, for the record. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Option(name: .long, help: RepositoryHelp.repo)
    var repo: String?

    @Option(name: .long, help: "The history branch. (env: AGENTRY_HISTORY_BRANCH; default agentry/history)")
    var historyBranch: String?

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if prompt != nil && promptFile != nil { throw ValidationError("give --prompt or --prompt-file, not both") }
        if timeout == .zero { throw ValidationError("--timeout 0: a run needs some time; give 90s, 15m or 1h30m") }
    }

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let text =
            try promptFile.map { String(decoding: try readInput($0, what: "the prompt file"), as: UTF8.self) } ?? prompt
        let branch = historyBranch ?? ports.host.historyBranch
        let interruption = Interruption()
        let signals = SignalWatch([SIGINT, SIGTERM]) { signal, count in
            if count > 1 {
                Output.progress("leaving at once; the next run of \(agent) records this one as interrupted")
                Glibc.exit(128 + signal)
            }
            Output.progress("stopping the run (again to leave at once)")
            interruption.interrupt(signal)
        }
        defer { signals.cancel() }
        let source = AgentRepository.resolve(repo: repo, path: path, ports: ports)
        var request = Runner.Request(
            agent: agent, repository: source.repository, path: source.path, ref: ref, prompt: text,
            timeout: timeout,
            actor: ports.host.actor(actor), trigger: trigger, historyBranch: branch, applyFirst: apply,
            interruption: interruption)
        request.continueSession = continueSession
        let guest = GuestOutput()
        let outcome = try await Runner(
            ports, progress: Output.progress,
            output: { stream, data in guest.write(data, to: stream == .stdout ? 1 : 2) }
        ).run(request)
        guest.finish()
        let record = outcome.record
        var line =
            "run \(record.runID): \(record.summary), \(record.artifacts.count + record.artifactsOmitted) artifact(s)"
        if let reason = record.reason, record.outcome != .succeeded { line += " (\(reason))" }
        if let commit = outcome.historyCommit {
            Output.progress(line + "; recorded in \(branch) at \(commit.prefix(12))")
            if let warning = outcome.historyWarning { Output.progress("warning: \(warning)") }
        } else {
            Output.progress(
                line + "; NOT recorded: \(outcome.historyWarning ?? "the history branch could not be written")")
        }
        switch record.outcome {
        case .succeeded, .failed: throw ExitCode(Int32(truncatingIfNeeded: record.exitStatus ?? 1))
        case .timedOut: throw ExitCode(124)
        case .interrupted: throw ExitCode(128 + (interruption.signal ?? SIGINT))
        case .notStarted, .machineLost: throw ExitCode(ExitStatus.couldNotRun)
        }
    }
}

/// Where history is kept: the agent repository's branch.
struct HistoryOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "The agent repository; its history branch holds the records. (env: AGENTRY_REPO; default: the repository the state applied, else .)"
    )
    var repo: String?

    @Option(name: .long, help: "The history branch. (env: AGENTRY_HISTORY_BRANCH; default agentry/history)")
    var historyBranch: String?

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func queries() throws -> (HistoryQueries, HistoryLocation) {
        let ports = state.ports(try logging.makeLogger())
        let queries = HistoryQueries(ports)
        let source = AgentRepository.resolve(repo: repo, path: nil, ports: ports)
        return (queries, queries.location(repository: source.repository, branch: historyBranch))
    }
}

struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "List recorded runs, newest first (from the history branch).")

    @Argument(help: "Only this agent's runs.")
    var agent: String?

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @Option(name: .long, help: "At most this many entries of each kind.")
    var limit: Int = 50

    @Option(
        name: .long,
        help: "What to list: run, apply, kill, unkill or all (repeatable). (default: run)")
    var kind: [HistoryKind] = []

    @OptionGroup var history: HistoryOptions

    func run() throws {
        let (queries, location) = try history.queries()
        let kinds = Set(
            kind.contains(.all) ? HistoryKind.allCases.filter { $0 != .all } : (kind.isEmpty ? [.run] : kind))
        let listing =
            kinds.contains(.run)
            ? try queries.runs(agent: agent, in: location) : HistoryQueries.Listing(records: [], unreadable: [])
        let runs = Array(listing.records.prefix(limit))
        let others = Set(kinds.map(\.rawValue)).subtracting(["run"])
        let audits = others.isEmpty ? nil : try queries.audits(kinds: others, agent: agent, in: location)
        let events = audits.map { Array($0.entries.prefix(limit)) }
        let unreadable = listing.unreadable + (audits?.unreadable ?? [])
        if output == .json {
            return Output.standardOutput(HistoryQueries.json(runs, unreadable: unreadable, events: events))
        }
        if let events {
            for (path, reason) in unreadable {
                Output.progress("warning: \(path) in \(location.branch) cannot be read: \(reason)")
            }
            if kinds.contains(.run) && !runs.isEmpty { Output.standardOutput(HistoryQueries.table(runs) + "\n") }
            if events.isEmpty && runs.isEmpty {
                Output.progress(
                    "nothing of that kind recorded in \(location.branch)\(agent.map { " for \($0)" } ?? "")")
            } else if !events.isEmpty {
                Output.standardOutput(HistoryQueries.auditTable(events))
            }
            if !unreadable.isEmpty { throw ExitCode(ExitStatus.invalid) }
            return
        }
        // A record that cannot be read is reported, never skipped in silence.
        for (path, reason) in listing.unreadable {
            Output.progress("warning: \(path) in \(location.branch) cannot be read: \(reason)")
        }
        guard !runs.isEmpty else {
            if !listing.unreadable.isEmpty { throw ExitCode(ExitStatus.invalid) }
            return Output.progress("no runs recorded in \(location.branch)\(agent.map { " for \($0)" } ?? "")")
        }
        Output.standardOutput(HistoryQueries.table(runs))
        if !listing.unreadable.isEmpty { throw ExitCode(ExitStatus.invalid) }
    }
}

enum HistoryKind: String, ExpressibleByArgument, CaseIterable {
    case run, apply, kill, unkill, all
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print a run's record and its log.")

    @Argument(help: "The run id (or a unique prefix).")
    var runID: String

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var history: HistoryOptions

    func run() throws {
        let (queries, location) = try history.queries()
        let found = try queries.run(runID, in: location)
        if output == .json {
            return Output.standardOutput(
                HistoryQueries.runDocument(
                    kind: "run", record: found.record, text: found.text, log: found.log, problem: found.problem))
        }
        if let problem = found.problem { Output.progress("warning: this record cannot be read: \(problem)") }
        GuestOutput.text(found.text)
        GuestOutput.text("--- log.txt\n" + found.log)
        if !found.log.hasSuffix("\n") && !found.log.isEmpty { Output.standardOutput("\n") }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print the log of an agent's latest run (or of one run); -f follows a run in progress.")

    @Argument(help: "The agent.")
    var agent: String?

    @Flag(name: [.short, .long], help: "Follow the agent's run in progress until it ends.")
    var follow = false

    @Option(name: .customLong("run"), help: "The log of this run (its id or a unique prefix) instead.")
    var runID: String?

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var history: HistoryOptions

    func validate() throws {
        if agent == nil && runID == nil { throw ValidationError("name an agent, or a run with --run") }
        if follow && (agent == nil || runID != nil || output == .json) {
            throw ValidationError("-f follows an agent's run in progress: give the agent, without --run or -o json")
        }
    }

    func run() async throws {
        let (queries, location) = try history.queries()
        if follow, let agent {
            let interruption = Interruption()
            let signals = SignalWatch([SIGINT, SIGTERM]) { signal, _ in interruption.interrupt(signal) }
            defer { signals.cancel() }
            let guest = GuestOutput()
            let followed = try await queries.follow(agent: agent, interruption: interruption) { bytes in
                guest.write(bytes, to: 1)
            }
            guest.finish()
            if followed {
                if interruption.isInterrupted { return }
                let latest = try queries.runs(agent: agent, in: location).records.first
                Output.progress("the run ended\(latest.map { ": \($0.runID) \($0.summary)" } ?? "")")
                return
            }
            Output.progress("no run of \(agent) in progress; the log of its latest run follows")
        }
        let id: String
        if let runID {
            id = runID
        } else if let agent {
            guard let latest = try queries.runs(agent: agent, in: location).records.first else {
                throw CoreError(.notFound, "no runs of \(agent) recorded in \(location.branch)")
            }
            id = latest.runID
        } else {
            return
        }
        let found = try queries.run(id, in: location)
        if let agent, let record = found.record, record.agent != agent {
            throw CoreError(.invalidArgument, "run \(record.runID) is of \(record.agent), not \(agent)")
        }
        guard output == .json else { return GuestOutput.text(found.log) }
        Output.standardOutput(
            HistoryQueries.runDocument(
                kind: "log", record: found.record, text: found.text, log: found.log, problem: found.problem))
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
        commandName: "set",
        abstract: "Store a secret; the value is read from standard input (one trailing newline dropped).",
        discussion: """
            At a terminal the value is read without echo. Values under 8 bytes are refused. With \
            --allow-agent, --allow-owner or --allow-label (each repeatable), only agents that match one \
            of them may use the secret: a run of any other agent that references it fails before it \
            starts, naming the key and the rule. Without them, any agent may.
            """)

    @Argument(help: "The key, such as github/token.")
    var key: String

    @Option(name: .customLong("allow-agent"), help: "Only this agent may use it.")
    var agents: [String] = []

    @Option(name: .customLong("allow-owner"), help: "Only agents of this owner (metadata.owner) may use it.")
    var owners: [String] = []

    @Option(name: .customLong("allow-label"), help: "Only agents with this label (key=value) may use it.")
    var labels: [String] = []

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        var value: [UInt8]
        if isatty(0) != 0 {
            value = try readWithoutEcho(prompt: "value of \(key): ")
        } else {
            value = try readInput("-", what: "the value from")
        }
        if value.last == 0x0A { value.removeLast() }
        if value.last == 0x0D { value.removeLast() }
        let scope = SecretScope(agents: agents, owners: owners, labels: labels)
        try Secrets(state.ports(try logging.makeLogger())).set(key, value: value, scope: scope.isEmpty ? nil : scope)
        Output.progress("stored \(key)\(scope.isEmpty ? "" : " (only \(scope.description))")")
    }

    /// One line from the terminal with echo off (restored however it ends).
    func readWithoutEcho(prompt: String) throws -> [UInt8] {
        var saved = termios()
        guard tcgetattr(0, &saved) == 0 else { return try readInput("-", what: "the value from") }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        Output.write(Array(prompt.utf8), to: 2)
        tcsetattr(0, TCSAFLUSH, &quiet)
        defer {
            tcsetattr(0, TCSAFLUSH, &saved)
            Output.write([0x0A], to: 2)
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(0, &byte, 1) == 1, byte != 0x0A { line.append(byte) }
        return line
    }
}

struct SecretList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the stored keys (never values).")

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let secrets = Secrets(state.ports(try logging.makeLogger()))
        Output.standardOutput(output == .json ? try secrets.listJSON() : try secrets.list())
    }
}

struct SecretRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a stored secret.")

    @Argument(help: "The key.")
    var key: String

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try Secrets(state.ports(try logging.makeLogger())).remove(key)
    }
}

/// For `bench/history_bench.py`: commits synthetic run records through the history writer, one
/// commit per record as runs make them, and prints how long that took.
struct HistoryBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history-bench", abstract: "Benchmark helper: commit N synthetic run records.",
        shouldDisplay: false)

    @Option(name: .long, help: "The git repository.")
    var repo: String

    @Option(name: .long, help: "How many records.")
    var records: Int = 1000

    @Option(name: .long, help: "Spread over this many agents.")
    var agents: Int = 10

    func run() throws {
        let seconds = try HistoryBenchmark.run(repository: repo, records: records, agents: agents)
        Output.standardOutput("{\"records\": \(records), \"seconds\": \(seconds)}\n")
    }
}

/// For `bench/gateway_bench.py`: serves a model gateway on a unix socket for one model, prints the
/// run's token, and serves until standard input ends. The provider key is the first line read.
struct GatewayBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway-bench", abstract: "Benchmark helper: serve one run's model gateway.",
        shouldDisplay: false)

    @Option(name: .long, help: "The unix socket to serve on.")
    var socket: String

    @Option(name: .long, help: "The upstream, as the host reaches it.")
    var baseUrl: String

    @Option(name: .long, help: "The model's API.")
    var api: String = "chat-completions"

    @Option(name: .long, help: "The model's name.")
    var model: String = "stub-model"

    func run() throws {
        let key = readLine() ?? ""
        let usage = try GatewayBenchmark.serve(
            socket: socket, model: model, api: api, baseURL: baseUrl, key: key,
            announce: { Output.standardOutput($0 + "\n") },
            serving: { while readLine(strippingNewline: false) != nil {} })
        Output.standardOutput(usage + "\n")
    }
}

/// Started by `agentry serve` for each fetch of a remote repository into its mirror, as a process of
/// its own: one that hangs on a remote that stopped answering is killed at its deadline.
struct MirrorFetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mirror-fetch", abstract: "Fetch a remote branch into a mirror (run by agentry serve).",
        shouldDisplay: false)

    @Option(name: .long, help: "The remote's URL.")
    var url: String

    @Option(name: .long, help: "The branch.")
    var branch: String

    @Option(name: .long, help: "The mirror (a bare repository, made by the first fetch).")
    var into: String

    func run() throws {
        // It ends by itself soon after the service's own limit (10 minutes), even if the service
        // that waits for it is gone.
        alarm(660)
        do {
            Output.standardOutput(try LocalHost.fetchMirror(url: url, branch: branch, into: into) + "\n")
        } catch {
            Output.error((error as? any AgentryFailure)?.description ?? "\(error)")
            throw ExitCode(1)
        }
    }
}

/// Started by agentry for each machine: runs QEMU, records how it ends, and shares its control channel.
struct MachineSupervisorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machine-supervisor", abstract: "A machine's supervisor (run by agentry).", shouldDisplay: false)

    enum Mode: String, ExpressibleByArgument {
        case start, run
    }

    @Argument(help: "start (detach a supervisor and wait for QEMU to start) or run (be the supervisor).")
    var mode: Mode

    @Option(name: .long, help: "The machine's folder.")
    var dir: String

    @Flag(name: .long, help: "QEMU already runs: attach to it.")
    var adopt = false

    @Argument(parsing: .postTerminator, help: "QEMU's command line, after --.")
    var qemu: [String] = []

    func run() throws {
        throw ExitCode(LocalHost.superviseMachine(start: mode == .start, directory: dir, adopt: adopt, qemu: qemu))
    }
}
