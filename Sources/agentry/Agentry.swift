import AgentryComposition
import AgentryCore
import ArgumentParser
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

@main
struct Agentry: AsyncParsableCommand {
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
            RenderCommand.self, RunCommand.self, ExecCommand.self, CopyCommand.self, KillCommand.self,
            UnkillCommand.self,
            ServeCommand.self, TokenCommand.self,
            SecretCommand.self,
            DisksCommand.self,
            HistoryCommand.self, ShowCommand.self, LogsCommand.self, ImageCommand.self, HistoryBenchCommand.self,
            GatewayBenchCommand.self,
            MachineSupervisorCommand.self, MirrorFetchCommand.self, Schema.self, Init.self,
        ]
    )

    /// Runs the command line: every failure becomes one line on standard error and an exit code
    /// chosen by `ExitStatus`, never a stack trace.
    static func main() async {
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let exit as ExitCode {
            Glibc.exit(exit.rawValue)
        } catch let error as CoreError {
            Output.error("error: \(error.message)")
            Glibc.exit(ExitStatus.of(error))
        } catch let error as any AgentryFailure {
            Output.error("error: \(error.message)")
            Glibc.exit(ExitStatus.couldNotRun)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                Self.exit(withError: error)  // --help and --version
            }
            let words = Array(CommandLine.arguments.dropFirst().prefix { $0 != "--" }.filter { !$0.hasPrefix("-") })
            let (path, group) = commandPath(words)
            // A word where a (sub)command belongs that names none: a did-you-mean.
            if !group.isEmpty, words.count > path.count {
                let word = words[path.count]
                let names = group.filter { $0.configuration.shouldDisplay }.map { $0._commandName }
                let suggestion = Suggest.closest(word, names).map { "; did you mean \"\($0)\"?" } ?? ""
                let within = (["agentry"] + path).joined(separator: " ")
                Output.error("error: unknown command \"\(word)\"\(path.isEmpty ? "" : " of \(within)")\(suggestion)")
                Output.error("Run '\(within) --help' for the commands.")
                Glibc.exit(ExitStatus.couldNotRun)
            }
            let message = fullMessage(for: error)
            Output.error(message.hasPrefix("Error:") || message.hasPrefix("error:") ? message : "error: \(message)")
            if error is ValidationError || code == .validationFailure {
                Output.error("Run '\((["agentry"] + path).joined(separator: " ")) --help' for usage.")
            }
            Glibc.exit(ExitStatus.couldNotRun)
        }
    }

    /// The (sub)command names at the start of `words` (`["secret", "set"]`, or empty when the
    /// first word names no command), and the subcommands the next word would be one of.
    static func commandPath(_ words: [String]) -> (path: [String], next: [any ParsableCommand.Type]) {
        var path: [String] = []
        var commands = configuration.subcommands
        for word in words {
            guard let command = commands.first(where: { $0._commandName == word }) else { break }
            path.append(word)
            commands = command.configuration.subcommands
            if commands.isEmpty { break }
        }
        return (path, commands)
    }
}

enum AgentryVersion {
    static let current = "0.1.0"
}

/// Exit codes, chosen here and nowhere else: 0 success, 1 the input is invalid (or, with
/// `--detailed-exitcode`, any error), 2 agentry could not run.
enum ExitStatus {
    static let success: Int32 = 0
    static let invalid: Int32 = 1
    static let couldNotRun: Int32 = 2
    /// `--detailed-exitcode`: there are changes to apply.
    static let changes: Int32 = 2
    /// `exec`: agentry could not run the command (as `docker exec`: 126 and 127 are the guest's).
    static let execCouldNotRun: Int32 = 125

    /// The exit code of a use case's failure.
    static func of(_ error: CoreError) -> Int32 {
        switch error.code {
        // A saved plan that no longer holds, or a plan the planner refuses: the input is wrong.
        case .planStale, .planRefused:
            return invalid
        case .invalidArgument, .repositoryUnavailable, .invalidRepository, .notFound, .stateLocked, .stateUnavailable,
            .stateBelongsElsewhere, .agentBlocked, .machineNotRunning, .secretUnavailable,
            .machineFailed,
            .historyUnavailable, .io, .internalFailure:
            return couldNotRun
        }
    }
}

/// What commands print: standard output for results, standard error for messages.
enum Output {
    static func standardOutput(_ text: String) {
        standardOutput(bytes: Array(text.utf8))
    }

    static func standardOutput(bytes: [UInt8]) {
        write(bytes, to: 1)
    }

    /// A message on standard error; at a terminal, with control sequences neutralised (messages
    /// quote what guests printed: an install's lines, a command's error output).
    static func error(_ line: String, newline: Bool = true) {
        let bytes = Array((line + (newline ? "\n" : "")).utf8)
        write(isatty(2) != 0 ? TerminalFilter.filter(bytes) : bytes, to: 2)
    }

    /// Progress lines of long operations.
    static func progress(_ line: String) {
        error("agentry: \(line)")
    }

    /// Writes all of `bytes`, retrying short writes; a closed pipe ends the output quietly.
    static func write(_ bytes: [UInt8], to descriptor: Int32) {
        bytes.withUnsafeBufferPointer { buffer in
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

/// What a guest prints, on its way to this process's output: control sequences neutralised when
/// the output is a terminal (`TerminalFilter`), passed as they are to a file or pipe.
final class GuestOutput: Sendable {
    private let filters = Mutex<[Int32: TerminalFilter]>([:])
    private let terminals: Set<Int32>

    /// `raw`: an operator's terminal session (`exec -t`), which needs the command's escape
    /// sequences as they are; otherwise what a guest writes to a terminal is filtered.
    init(raw: Bool = false) {
        terminals = raw ? [] : Set([1, 2].filter { isatty($0) != 0 })
    }

    func write(_ data: [UInt8], to descriptor: Int32) {
        guard terminals.contains(descriptor) else { return Output.write(data, to: descriptor) }
        let clean = filters.withLock { $0[descriptor, default: TerminalFilter()].feed(data) }
        Output.write(clean, to: descriptor)
    }

    /// Whatever a filter still holds (an unfinished sequence), shown.
    func finish() {
        let rest = filters.withLock { filters in
            filters.map { ($0.key, $0.value) }.map { descriptor, filter in
                var filter = filter
                return (descriptor, filter.finish())
            }
        }
        for (descriptor, bytes) in rest where !bytes.isEmpty { Output.write(bytes, to: descriptor) }
    }

    /// A whole text from a guest (a stored log, a record) to standard output.
    static func text(_ text: String) {
        let bytes = Array(text.utf8)
        Output.write(isatty(1) != 0 ? TerminalFilter.filter(bytes) : bytes, to: 1)
    }
}
