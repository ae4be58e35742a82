import AgentryComposition
import AgentryCore
import ArgumentParser
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Logging options every command takes; logs go to standard error.
struct LoggingOptions: ParsableArguments {
    @Option(
        name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical. (env: AGENTRY_LOG_LEVEL)")
    var logLevel: String?

    func makeLogger() throws -> Logger {
        let text = logLevel ?? LocalHost.environment()["AGENTRY_LOG_LEVEL"] ?? "warning"
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError(
                "--log-level \(text): expected one of trace, debug, info, notice, warning, error, critical")
        }
        var logger = Logger(label: "agentry") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = level
        return logger
    }

}

/// A duration on the command line, Go-style as everywhere in agentry: `90s`, `15m`, `1h30m` (and
/// `0`, nothing at all).
enum GoDuration {
    static func parse(_ text: String) throws -> Duration {
        if text == "0" { return .zero }
        guard let milliseconds = DurationText.parse(text) else {
            throw ValidationError("\(text): expected a duration such as 90s, 15m or 1h30m")
        }
        return .milliseconds(saturating: milliseconds)
    }
}

/// How every command names the agent repository: `--repo` and `--path`, else `$AGENTRY_REPO` and
/// `$AGENTRY_PATH`, else the repository the state directory applied, else `.`.
enum RepositoryHelp {
    static let repo: ArgumentHelp =
        "The agent repository: a git work tree, .git folder or bare repository. (env: AGENTRY_REPO; default: the repository the state applied, else .)"
    static let path: ArgumentHelp =
        "The agent repository's folder inside the git repository. (env: AGENTRY_PATH; default: the root)"
}

/// Whether to use the parse cache (`validate`, `diff`, `plan`).
struct CacheOptions: ParsableArguments {
    @Flag(
        name: .long,
        help:
            "Parse every file afresh, neither reading nor updating the parse cache. (cache: env AGENTRY_CACHE_DIR; default /var/cache/agentry as root, else $XDG_CACHE_HOME/agentry)"
    )
    var noCache = false
}

/// Where the actual state lives.
struct StateOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "The state directory. (env: AGENTRY_STATE_DIR; default /var/lib/agentry as root, else $XDG_STATE_HOME/agentry)"
    )
    var stateDir: String?

    var directory: String { LocalHost.stateDirectory(stateDir) }

    func ports(
        _ logger: Logger, parseCache: Bool = true, progress: @escaping @Sendable (String) -> Void = Output.progress
    ) -> Ports {
        LocalHost.ports(stateDirectory: directory, logger: logger, parseCache: parseCache, progress: progress)
    }
}

/// Ports for commands that take no `--state-dir` (they read no state).
func defaultPorts(_ logger: Logger, parseCache: Bool = true) -> Ports {
    LocalHost.ports(stateDirectory: LocalHost.stateDirectory(nil), logger: logger, parseCache: parseCache)
}

/// Reads a file the user named (`-` for standard input), or fails saying which.
/// With `limit`, reading stops with an error (`advice` says what to do) once past `limit.bytes`.
func readInput(_ path: String, what: String, limit: (bytes: Int, advice: String)? = nil) throws -> [UInt8] {
    var bytes: [UInt8] = []
    let descriptor = path == "-" ? 0 : open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else {
        throw CoreError(.io, "cannot read \(what) \(path): \(String(cString: strerror(errno)))")
    }
    defer { if descriptor != 0 { close(descriptor) } }
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(descriptor, &buffer, buffer.count)
        if count < 0 && errno == EINTR { continue }
        if count < 0 { throw CoreError(.io, "cannot read \(what) \(path): \(String(cString: strerror(errno)))") }
        if count == 0 { return bytes }
        bytes += buffer[0..<count]
        if let limit, bytes.count > limit.bytes {
            throw CoreError(.invalidArgument, "\(what) is over \(limit.bytes) bytes; \(limit.advice)")
        }
    }
}
