import AgentryBasics
import AgentryCore
import AgentryGateway
import AgentryGit
import AgentryHistory
import AgentryMachine
import AgentryRender
import AgentrySecrets
import AgentryServer
import AgentrySource
import AgentryState
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The one place that wires the real adapters into the core: git through libgit2, the state in
/// SQLite, the secret store, QEMU machines, the system clock and this process's environment.
public enum LocalHost {
    /// This process's view of the host.
    public static func environment() -> HostEnvironment {
        let variables = ProcessInfo.processInfo.environment
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let user =
            variables["USER"] ?? variables["LOGNAME"] ?? getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) }
            ?? "uid \(getuid())"
        return HostEnvironment(
            variables: variables, hostName: String(cString: buffer),
            currentDirectory: FileManager.default.currentDirectoryPath, userName: user)
    }

    /// `--state-dir`, else `AGENTRY_STATE_DIR`, else `/var/lib/agentry` as root, else
    /// `$XDG_STATE_HOME/agentry`.
    public static func stateDirectory(_ explicit: String?) -> String {
        explicit ?? SQLiteStateStore.defaultDirectory(environment: ProcessInfo.processInfo.environment)
    }

    /// The ports of the state directory `stateDirectory`. `progress` gets lines about slow work
    /// (image builds, the KVM probe). `parseCache`: read and remember what the loader parsed in the
    /// user's parse cache (`--no-cache` turns it off).
    public static func ports(
        stateDirectory: String, logger: Logger, parseCache: Bool = true,
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) -> Ports {
        let host = environment()
        let state = SQLiteStateStore(directory: stateDirectory)
        let secrets = HostSecrets(
            store: FileSecretStore(stateDirectory: stateDirectory, keyFile: host["AGENTRY_SECRET_KEY_FILE"]),
            folder: host["AGENTRY_SECRETS_DIR"], variables: host.variables)
        let machines = QEMUBackend(
            stateDirectory: stateDirectory, guestAgent: guestAgent(host), executable: currentExecutable,
            commands: HostCommands(environment: host.variables), environment: host.variables, progress: progress)
        let credentials = GitCredentials(environment: host.variables)
        return Ports(
            source: GitRepositorySource(
                logger: logger, credentials: credentials,
                fetcher: .init(
                    executable: currentExecutable, environment: host.variables.map { "\($0.key)=\($0.value)" })),
            state: state,
            parseCache: parseCache
                ? SQLiteParseCache(
                    directory: SQLiteParseCache.defaultDirectory(environment: host.variables), generation: build)
                : nil,
            secrets: secrets, machines: machines,
            gateway: GatewayServer(socket: { [machines] in machines.gatewaySocket($0) }),
            history: GitHistory(hostName: host.hostName, credentials: credentials),
            clock: SystemClock(),
            host: host, logger: logger)
    }

    /// This build of agentry, as the parse cache keys its results: the executable's size and
    /// modification time (a rebuild or an upgrade starts afresh).
    static var build: String {
        var status = stat()
        guard stat(currentExecutable, &status) == 0 else { return "unknown build" }
        return "\(status.st_size)-\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
    }

    /// The running agentry executable (machines with an egress allowlist run it as their proxy).
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Where the guest agent binary is: beside the agentry executable (as a release installs them),
    /// else `$AGENTRY_GUEST`, else `/usr/lib/agentry/agentry-guest`; the first that is there (the
    /// machine backend's error names all three when none is).
    static func guestAgent(_ host: HostEnvironment) -> String {
        let beside = (currentExecutable as NSString).deletingLastPathComponent + "/agentry-guest"
        let candidates = [beside] + (host["AGENTRY_GUEST"].map { [$0] } ?? []) + ["/usr/lib/agentry/agentry-guest"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? beside
    }

    /// `agentry mirror-fetch`: one fetch into the service's mirror, in this process; the commit.
    public static func fetchMirror(url: String, branch: String, into path: String) throws -> String {
        let host = environment()
        return
            "\(try GitMirror.fetch(url: url, branch: branch, into: path, credentials: GitCredentials(environment: host.variables)))"
    }

    /// `agentry machine-supervisor start|run`: a machine's supervisor (see `MachineSupervisor`).
    public static func superviseMachine(start: Bool, directory: String, adopt: Bool, qemu: [String]) -> Int32 {
        start
            ? MachineSupervisor.start(executable: currentExecutable, directory: directory, adopt: adopt, qemu: qemu)
            : MachineSupervisor.run(directory: directory, adopt: adopt, qemu: qemu)
    }
}

/// The system's clock.
public struct SystemClock: WallClock {
    public init() {}

    public func now() -> Date { Date() }

    public func pause(for duration: Duration) {
        usleep(UInt32(min(max(0, duration.milliseconds), 10_000_000) * 1000))
    }

    public func sleep(for duration: Duration) async {
        try? await Task.sleep(for: duration)
    }
}

/// For `bench/history_bench.py`: commits synthetic run records through the history writer, one
/// commit per record as runs make them.
public enum HistoryBenchmark {
    /// Returns the seconds it took.
    public static func run(repository: String, records: Int, agents: Int) throws -> Double {
        let start = ContinuousClock.now
        let history = HistoryBranch(repository: try GitRepository.open(repository))
        let author = Signature(name: "bench", email: "bench@localhost")
        for index in 0..<records {
            let number = String(index + 1_000_000).dropFirst()
            let folder = "runs/agent-\(index % agents)/run-\(number)"
            try history.append(
                [
                    RecordFile(path: folder + "/record.yaml", bytes: Array(record(index).utf8)),
                    RecordFile(path: folder + "/log.txt", bytes: Array("log line of run \(index)\n".utf8)),
                ], message: "run \(index)\n", author: author,
                at: Date(timeIntervalSince1970: 1_800_000_000 + Double(index)))
        }
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// The same bytes the Python baseline writes.
    static func record(_ index: Int) -> String {
        "formatVersion: 1\nrunId: \"run-\(String(index + 1_000_000).dropFirst())\"\nagent: \"bench\"\nexitStatus: 0\n"
    }
}

/// `agentry serve` and `agentry token`: the service's database and its HTTP API.
public enum Service {
    /// The OpenAPI 3.1 document of the service's API (schemas/openapi.yaml).
    public static var openAPI: String { OpenAPIDocument.yaml }

    /// The service's database in the state directory.
    public static func store(stateDirectory: String) -> any ServiceStore {
        ServiceDatabase(stateDirectory: stateDirectory)
    }

    /// Serves the /v1 API on `host:port` until SIGTERM or SIGINT; `onListening` is told the address.
    public static func serve(
        ports: Ports, stateDirectory: String, runs: RunService.Settings, reconcileEvery: Duration?,
        webhookSecret: String?, branch: String, notify: APIServer.Notify, host: String, port: Int, grace: Duration,
        upstream: Upstream? = nil, onListening: @escaping @Sendable (String) -> Void
    ) async throws {
        let database = ServiceDatabase(stateDirectory: stateDirectory)
        try database.holdServiceLock()
        let server = try APIServer(
            ports: ports, store: database, runs: runs, reconcileEvery: reconcileEvery,
            hooks: .init(secretKey: webhookSecret, branch: branch), notify: notify,
            metrics: APIServer.bootstrapMetrics(), upstream: upstream)
        try await server.run(.init(host: host, port: port, grace: grace, onListening: onListening))
    }
}

/// For `bench/gateway_bench.py`: serves one run's model gateway on a unix socket, as a machine's
/// run does, for a model at `baseURL` with the provider key `key`.
public enum GatewayBenchmark {
    /// Gives `announce` the run's token, serves until `serving` returns, then says what the run used.
    public static func serve(
        socket: String, model: String, api: String, baseURL: String, key: String, announce: (String) -> Void,
        serving: () -> Void
    ) throws -> String {
        let gateway = GatewayServer(socket: { _ in socket })
        let route = GatewayRoute(
            resource: "bench", model: model, api: api, baseURL: baseURL, credential: Array(key.utf8))
        let session = try gateway.open(GatewayRun(agent: "bench", runID: "bench", routes: [route]))
        announce(session.token)
        serving()
        let usage = session.close()
        return
            "{\"calls\": \(usage.totalCalls), \"inputTokens\": \(usage.inputTokens), \"outputTokens\": \(usage.outputTokens)}"
    }
}
