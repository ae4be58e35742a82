import AgentryModel
import AgentryPlan
import AgentryRepository
import AgentryState
import ArgumentParser
import Foundation

enum PlanFormat: String, ExpressibleByArgument, CaseIterable {
    case text, markdown, json
}

/// Where the actual state lives.
struct StateOptions: ParsableArguments {
    @Option(name: .long, help: "The state directory. (env: AGENTRY_STATE_DIR; default /var/lib/agentry as root, else $XDG_STATE_HOME/agentry)")
    var stateDir: String?

    var directory: String { stateDir ?? StateStore.defaultDirectory() }
}

/// Options shared by plan and diff output.
struct PlanOutputOptions: ParsableArguments {
    @Option(name: [.short, .customLong("output")], help: "Output format: text (a terminal; coloured on a TTY), markdown (a pull-request comment) or json (stable, versioned).")
    var output: PlanFormat = .text

    @Flag(name: .long, help: "Exit 0 when there are no changes, 2 when there are, 1 on any error (Terraform's convention).")
    var detailedExitcode = false

    func print(_ document: PlanDocument) {
        switch output {
        case .text: FileHandleOutput.standardOutput(PlanOutput.text(document, color: Terminal.colorsStandardOutput))
        case .markdown: FileHandleOutput.standardOutput(PlanOutput.markdown(document))
        case .json: FileHandleOutput.standardOutput(PlanOutput.json(document))
        }
    }

    /// Maps an outcome to output and an exit code.
    func finish(_ outcome: Planning.Outcome, save: ((PlanDocument) throws -> Void)? = nil) throws {
        switch outcome {
        case .invalid(let report):
            FileHandleOutput.standardError(ValidationOutput.text(report).trimmingCharacters(in: .newlines))
            FileHandleOutput.standardError("error: the repository is invalid; nothing was planned")
            throw ExitCode(ExitStatus.invalid)
        case .refused(let refusal):
            FileHandleOutput.standardError("error: refusing to plan: \(refusal)")
            throw ExitCode(ExitStatus.invalid)
        case .planned(let document):
            try save?(document)
            print(document)
            if detailedExitcode && document.plan.hasChanges { throw ExitCode(2) }
        }
    }

    /// With --detailed-exitcode, "could not run" is an error like any other: 1, as 2 means changes.
    func run(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as LoadError {
            if detailedExitcode {
                FileHandleOutput.standardError("error: \(error.message)")
                throw ExitCode(ExitStatus.invalid)
            }
            throw CommandError(error.message)
        }
    }
}

enum Terminal {
    static var colorsStandardOutput: Bool {
        isatty(1) == 1 && ProcessInfoEnvironment.value("NO_COLOR") == nil && ProcessInfoEnvironment.value("TERM") != "dumb"
    }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would do: the desired state at a commit against the actual state.",
        discussion: """
            Per agent, the smallest action that converges it (create, update, restart, reinstall, replace, \
            pause, resume, revoke, delete) with its reasons as `field: old → new`. A repository that fails \
            validation never plans anything.

            Exit codes: 0 planned, 1 invalid repository or refused plan, 2 could not run. With \
            --detailed-exitcode: 0 no changes, 1 any error, 2 changes.
            """)

    @Option(name: .long, help: "The git repository. (default: .)")
    var repo: String = "."

    @Option(name: .long, help: "The commit, branch or tag to plan. (default: HEAD)")
    var ref: String = "HEAD"

    @Option(name: .long, help: "The agent repository's folder inside the git repository.")
    var path: String = ""

    @OptionGroup var state: StateOptions
    @OptionGroup var format: PlanOutputOptions

    @Option(name: .customLong("out"), help: "Also save the plan (JSON, with the desired commit and a digest of the actual state) for `agentry apply PLAN`.")
    var out: String?

    @Flag(name: .long, help: "Allow a desired state with no agents to delete every running agent.")
    var allowEmpty = false

    @Flag(name: .long, help: "Allow deleting more than half of the running agents at once.")
    var allowMassDelete = false

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.makeLogger()
        try format.run {
            let outcome = try Planning.plan(
                repository: repo, ref: ref, path: path, stateDirectory: state.directory,
                options: PlanOptions(allowEmpty: allowEmpty, allowMassDelete: allowMassDelete), logger: logger)
            try format.finish(outcome) { document in
                guard let out else { return }
                do {
                    try Data(PlanOutput.json(document).utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
                } catch {
                    throw CommandError("cannot write the plan to \(out): \(error.localizedDescription)")
                }
            }
        }
    }
}

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Compare two commits' desired states, for pull-request review: no actual state needed.",
        discussion: """
            Lists the agents added, removed and changed between BASE and HEAD, the field-level changes, \
            and the action each would cause. Typically: agentry diff origin/main HEAD -o markdown.

            Exit codes as for plan; --detailed-exitcode gives 2 when HEAD changes any agent.
            """)

    @Argument(help: "The base commit (the target branch).")
    var base: String

    @Argument(help: "The head commit (the pull request).")
    var head: String

    @Option(name: .long, help: "The git repository. (default: .)")
    var repo: String = "."

    @Option(name: .long, help: "The agent repository's folder inside the git repository.")
    var path: String = ""

    @Option(name: .long, help: "A state directory whose parse cache to use and update (optional).")
    var stateDir: String?

    @OptionGroup var format: PlanOutputOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.makeLogger()
        try format.run {
            let directory = stateDir ?? ProcessInfoEnvironment.value("AGENTRY_STATE_DIR")
            try format.finish(
                try Planning.diff(
                    repository: repo, base: base, head: head, path: path, stateDirectory: directory, logger: logger))
        }
    }
}

enum StatusFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "A table of agents: desired and applied revision, lifecycle, machine state, last run.")

    @Option(name: .long, help: "The git repository whose desired state to compare. (default: . when it is one)")
    var repo: String?

    @Option(name: .long, help: "The commit, branch or tag. (default: HEAD)")
    var ref: String = "HEAD"

    @Option(name: .long, help: "The agent repository's folder inside the git repository.")
    var path: String = ""

    @OptionGroup var state: StateOptions

    @Option(name: [.short, .customLong("output")], help: "text or json.")
    var output: StatusFormat = .text

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.makeLogger()
        let rows: [AgentStatus]
        do {
            rows = try AgentStatus.collect(
                repository: repo, ref: ref, path: path, stateDirectory: state.directory, logger: logger)
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
        switch output {
        case .json: FileHandleOutput.standardOutput(AgentStatus.json(rows))
        case .text: FileHandleOutput.standardOutput(AgentStatus.table(rows))
        }
    }
}
