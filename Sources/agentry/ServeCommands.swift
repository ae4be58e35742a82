import AgentryComposition
import AgentryCore
import ArgumentParser
import Foundation

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run agentry as a service: the HTTP API that accepts runs and reports status.",
        discussion: """
            Serves /v1 on --listen (bearer tokens from `agentry token create`): GET /v1/agents and \
            /v1/agents/{name}, POST /v1/agents/{name}/runs (with Idempotency-Key), GET /v1/runs/{id}, \
            POST /v1/runs/{id}/cancel, GET /v1/agents/{name}/runs; /healthz and /readyz without a token. \
            A run is stored before it is answered, and runs one at a time per agent, at most \
            --max-concurrent-runs at once, exactly as `agentry run` runs it.

            --repo is a local repository (read as it is) or a remote's URL (https://, ssh://, \
            git@host:path, file://): its --branch is fetched into a mirror in the state directory at \
            the start of each pass, with $AGENTRY_GIT_TOKEN, git's credential helper or ssh-agent.

            SIGTERM or SIGINT: stop accepting, let runs finish for up to --grace, interrupt the rest \
            (recorded as interrupted), exit 0. Runs a killed service left going are marked interrupted \
            when it starts again, and queued runs start.
            """)

    @Option(name: .long, help: RepositoryHelp.repo)
    var repo: String?

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @Option(name: .long, help: "Address and port to listen on (port 0: any free port, printed at start).")
    var listen: String = "127.0.0.1:8484"

    @Option(
        name: .long,
        help:
            "Reconcile (apply the repository, repair drift) at start and then this often; 0: only on POST /v1/reconcile.",
        transform: GoDuration.parse)
    var interval: Duration = .seconds(60)

    @Option(
        name: .long,
        help:
            "The secret-store key of the webhooks' secret: POST /v1/hooks/github (X-Hub-Signature-256) and /v1/hooks/gitlab (X-Gitlab-Token) reconcile on a push. (default: webhooks off)"
    )
    var webhookSecret: String?

    @Option(
        name: .long,
        help:
            "The branch a remote --repo is followed on (fetched each pass into a mirror in the state directory); pushes to it (by webhook) reconcile."
    )
    var branch: String = "main"

    @Option(
        name: .long,
        help:
            "POST each run's end (run.completed) and each agent turning Stalled (agent.stalled) here, signed as Standard Webhooks say; repeatable."
    )
    var notifyUrl: [String] = []

    @Option(
        name: .long,
        help:
            "The secret-store key of the secret that signs --notify-url deliveries (whsec_ and base64, or any text)."
    )
    var notifySecret: String?

    @Option(name: .long, help: "Runs of different agents carried out at once.")
    var maxConcurrentRuns: Int = 4

    @Option(
        name: .long, help: "On SIGTERM, how long running runs may go on before they are interrupted.",
        transform: GoDuration.parse)
    var grace: Duration = .seconds(300)

    @Option(name: .long, help: "The history branch. (env: AGENTRY_HISTORY_BRANCH; default agentry/history)")
    var historyBranch: String?

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard maxConcurrentRuns >= 1 else { throw ValidationError("--max-concurrent-runs must be at least 1") }
        _ = try address()
        for url in notifyUrl {
            guard let parts = URLComponents(string: url), ["http", "https"].contains(parts.scheme ?? ""),
                !(parts.host ?? "").isEmpty
            else { throw ValidationError("--notify-url \(url): expected an http:// or https:// URL") }
        }
        if !notifyUrl.isEmpty && notifySecret == nil {
            throw ValidationError("--notify-url needs --notify-secret KEY: deliveries are always signed")
        }
    }

    func address() throws -> (host: String, port: Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (0...65535).contains(port), colon != listen.startIndex
        else { throw ValidationError("--listen \(listen): expected HOST:PORT, such as 127.0.0.1:8484") }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let source = AgentRepository.resolve(repo: repo, path: path, ports: ports)
        let (host, port) = try address()
        let history = historyBranch ?? ports.host.historyBranch
        // A remote repository is followed through a mirror in the state directory: the agents are
        // read there and the history recorded there (and pushed back to the remote).
        let mirror = ports.host.absolute(state.directory) + "/mirror.git"
        var repository = ports.host.absolute(source.repository)
        var upstream: Upstream?
        if ports.source.isRemote(source.repository) {
            let followed = Upstream(url: source.repository, branch: branch)
            if let problem = ports.source.problem(following: followed, historyBranch: history) {
                throw CoreError(.invalidArgument, problem.hasPrefix("--branch") ? problem : "--repo \(problem)")
            }
            upstream = followed
            repository = mirror
        } else if repository == mirror {
            throw CoreError(
                .invalidArgument,
                "\(mirror) is the mirror of a remote repository: give the remote's URL as --repo (from \(source.origin)) so that it is fetched"
            )
        }
        let settings = RunService.Settings(
            repository: repository, path: source.path, historyBranch: history, maxConcurrent: maxConcurrentRuns)
        try await Service.serve(
            ports: ports, stateDirectory: state.directory, runs: settings,
            reconcileEvery: interval == .zero ? nil : interval, webhookSecret: webhookSecret, branch: branch,
            notify: .init(urls: notifyUrl, secretKey: notifySecret), host: host, port: port, grace: grace,
            upstream: upstream,
            onListening: { address in Output.progress("agentry serve: listening on http://\(address)") })
        Output.progress("agentry serve: stopped")
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Make, list and revoke the bearer tokens of `agentry serve`.",
        subcommands: [TokenCreate.self, TokenList.self, TokenRevoke.self])
}

extension TokenScope: ExpressibleByArgument {}

struct TokenCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make a token and print it (once: only its hash is kept).",
        discussion: """
            Scopes include each other: read (status, runs, events, artifacts), run (start and cancel runs), \
            admin (kill, unkill, reconcile). The token alone goes to standard output, so \
            TOKEN=$(agentry token create --scope run) keeps it out of the terminal.
            """)

    @Option(name: .long, help: "read, run or admin.")
    var scope: TokenScope

    @Option(name: .long, help: "Limit the token to this agent (repeatable; default: every agent).")
    var agent: [String] = []

    @Option(name: .long, help: "Expire after this long (30d is 720h; default: never).", transform: TokenCreate.expiry)
    var expires: Duration?

    @Option(name: .long, help: "Who, recorded with the token. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    /// Go-style durations, and days (`30d`), which tokens are usually given in.
    static func expiry(_ text: String) throws -> Duration {
        if text.hasSuffix("d"), let days = Int(text.dropLast()), days > 0, days <= 36500 {
            return .seconds(days * 86400)
        }
        let duration = try GoDuration.parse(text)
        guard duration > .zero else { throw ValidationError("--expires \(text): a token must live for some time") }
        return duration
    }

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let tokens = Tokens(store: Service.store(stateDirectory: state.directory), clock: ports.clock)
        let (token, text) = try tokens.create(
            scope: scope, agents: agent, expiresIn: expires, by: ports.host.actor(actor))
        if output == .json { return Output.standardOutput(Tokens.createdJSON(token, text: text)) }
        Output.progress(
            "token \(token.id): \(Tokens.scopes(token).joined(separator: ", ")) on \(token.agents.isEmpty ? "every agent" : token.agents.joined(separator: ", "))\(token.expiresAt.map { "; expires \(ISO8601DateFormatter().string(from: $0))" } ?? ""). It is shown once:"
        )
        Output.standardOutput(text + "\n")
    }
}

struct TokenList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the tokens (never their text).")

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let list = try Tokens(store: Service.store(stateDirectory: state.directory), clock: ports.clock).list()
        switch output {
        case .json: Output.standardOutput(Tokens.listJSON(list))
        case .text:
            if list.isEmpty { return Output.progress("no tokens; agentry token create --scope read makes one") }
            Output.standardOutput(Tokens.table(list, now: ports.clock.now()))
        }
    }
}

struct TokenRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke a token by its id: the service refuses it from the next request.")

    @Argument(help: "The token's id (tok_…), as `agentry token list` shows it.")
    var id: String

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        try Tokens(store: Service.store(stateDirectory: state.directory), clock: ports.clock).revoke(id: id)
        Output.progress("token \(id) is revoked")
    }
}
