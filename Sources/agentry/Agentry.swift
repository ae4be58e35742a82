import AgentryModel
import AgentryRepository
import ArgumentParser
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Exit codes shared by every command: 0 success, 1 the input is invalid, 2 agentry could not run.
enum ExitStatus {
    static let success: Int32 = 0
    static let invalid: Int32 = 1
    static let couldNotRun: Int32 = 2
}

@main
struct Agentry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentry",
        abstract: "GitOps for AI agents: agents, harnesses, models and environments declared as YAML in git.",
        discussion: """
            Exit codes: 0 success, 1 invalid input (validation errors), 2 could not run (bad arguments, \
            no such repository, ref or folder).
            """,
        version: AgentryVersion.current,
        subcommands: [
            Validate.self, PlanCommand.self, DiffCommand.self, ApplyCommand.self, StatusCommand.self,
            RunCommand.self, ExecCommand.self, KillCommand.self, UnkillCommand.self, SecretCommand.self,
            HistoryCommand.self, ShowCommand.self, LogsCommand.self, ImageCommand.self, HistoryBenchCommand.self, EgressProxyCommand.self, Schema.self, Init.self,
        ]
    )

    /// Runs the command line, mapping every failure to exit code 2 with a one-line message.
    static func main() {
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let exit as ExitCode {
            Glibc.exit(exit.rawValue)
        } catch let error as CommandError {
            FileHandleOutput.standardError("error: \(error.description)")
            Glibc.exit(ExitStatus.couldNotRun)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                Self.exit(withError: error)  // --help and --version
            }
            let message = fullMessage(for: error)
            FileHandleOutput.standardError(message.hasPrefix("Error:") || message.hasPrefix("error:") ? message : "error: \(message)")
            if error is ValidationError || error is CommandError || code == .validationFailure {
                FileHandleOutput.standardError("Run 'agentry --help' for usage.")
            }
            Glibc.exit(ExitStatus.couldNotRun)
        }
    }
}

enum AgentryVersion {
    static let current = "0.1.0"
}

/// A failure that stops a command before it could do its job (exit code 2).
struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum FileHandleOutput {
    static func standardOutput(_ text: String) {
        write(text, to: 1)
    }

    static func standardError(_ line: String) {
        write(line + "\n", to: 2)
    }

    /// Writes all of `text`, retrying short writes; a closed pipe ends the output quietly.
    static func write(_ text: String, to descriptor: Int32) {
        var text = text
        text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }
}

/// Logging options every command takes; logs go to standard error.
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical. (env: AGENTRY_LOG_LEVEL)")
    var logLevel: String?

    func makeLogger() throws -> Logger {
        let text = logLevel ?? ProcessInfoEnvironment.value("AGENTRY_LOG_LEVEL") ?? "warning"
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("--log-level \(text): expected one of trace, debug, info, notice, warning, error, critical")
        }
        var logger = Logger(label: "agentry") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = level
        return logger
    }
}

enum ProcessInfoEnvironment {
    static func value(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
