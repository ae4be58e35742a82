import AgentryMachine
import AgentryPlan
import AgentryRepository
import ArgumentParser
import Foundation

/// Who is acting, for the event log: `--actor`, else `$AGENTRY_ACTOR`, else the login name.
func currentActor(_ explicit: String?) -> String {
    explicit ?? ProcessInfoEnvironment.value("AGENTRY_ACTOR") ?? ProcessInfoEnvironment.value("USER")
        ?? ProcessInfoEnvironment.value("LOGNAME") ?? getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) }
        ?? "uid \(getuid())"
}

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Converge the machines to the repository: plan, then carry the plan out.",
        discussion: """
            With PLAN (saved by `agentry plan --out`), carries out that plan and refuses it when its \
            commit or the actual state has moved since. Steps are journalled and idempotent: run apply \
            again after any interruption and it converges. A second apply while one runs is refused with \
            the holder's pid.

            Exit codes: 0 applied, 1 invalid repository, refused plan or a failed agent, 2 could not run.
            """)

    @Argument(help: "A plan saved by `agentry plan --out`.")
    var plan: String?

    @Option(name: .long, help: "The git repository. (default: .)")
    var repo: String = "."

    @Option(name: .long, help: "The commit, branch or tag to apply. (default: HEAD)")
    var ref: String = "HEAD"

    @Option(name: .long, help: "The agent repository's folder inside the git repository.")
    var path: String = ""

    @Option(name: .long, help: "How long a machine may take to report in, in seconds.")
    var bootTimeout: Int = 90

    @Option(name: .long, help: "Who is applying, for the event log. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Flag(name: .long, help: "Allow a desired state with no agents to delete every running agent.")
    var allowEmpty = false

    @Flag(name: .long, help: "Allow deleting more than half of the running agents at once.")
    var allowMassDelete = false

    @Flag(name: .long, help: "Where an agent's environment disk file has gone missing, start it with an empty one.")
    var recreateMissingDisks = false

    @OptionGroup var state: StateOptions
    @OptionGroup var format: PlanOutputOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.makeLogger()
        var failed = false
        try format.run {
            let saved = try plan.map(SavedPlan.read)
            let (outcome, steps) = try Planning.apply(
                repository: repo, ref: ref, path: path, stateDirectory: state.directory, savedPlan: saved,
                options: ApplyOptions(
                    guestAgent: GuestAgentLocation.path, bootTimeout: .seconds(bootTimeout), actor: currentActor(actor),
                    planOptions: PlanOptions(allowEmpty: allowEmpty, allowMassDelete: allowMassDelete),
                    recreateMissingDisks: recreateMissingDisks),
                logger: logger, progress: { FileHandleOutput.standardError("agentry: \($0)") })
            var exitForChanges = false
            do {
                try format.finish(outcome)
            } catch let code as ExitCode where code.rawValue == 2 {
                exitForChanges = true
            }
            for step in steps {
                let line = "\(step.failed ? "FAILED" : "done  ") \(step.action.rawValue) \(step.agent): \(step.detail)"
                FileHandleOutput.standardError(line)
            }
            failed = steps.contains(where: \.failed)
            if failed { throw ExitCode(ExitStatus.invalid) }
            if exitForChanges { throw ExitCode(2) }
        }
    }
}

struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in an agent's machine, with its output streamed and its exit status passed through.")

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "Kill the command's process group after this many seconds.")
    var timeout: Int?

    @Argument(parsing: .postTerminator, help: "The command, after --.")
    var command: [String] = []

    @OptionGroup var state: StateOptions

    func run() throws {
        guard !command.isEmpty else { throw ValidationError("name a command after --, e.g. agentry exec \(agent) -- uname -a") }
        do {
            let status = try Operations.exec(
                agent: agent, argv: command, stateDirectory: state.directory, timeout: timeout.map { .seconds($0) }
            ) { stream, data in
                var text = String(decoding: data, as: UTF8.self)
                text.withUTF8 { _ = write(stream == .stdout ? 1 : 2, $0.baseAddress, $0.count) }
            }
            throw ExitCode(Int32(truncatingIfNeeded: status))
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}

struct KillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kill",
        abstract: "The kill switch: stop an agent's machine now and keep apply and runs from starting it again.")

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "Why (recorded in the event log).")
    var reason: String

    @Option(name: .long, help: "Who, for the event log. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Option(name: .long, help: "The git repository whose history branch records the event. (default: the one the last apply read)")
    var repo: String?

    @OptionGroup var state: StateOptions

    func run() throws {
        do {
            try Operations.kill(
                agent: agent, reason: reason, actor: currentActor(actor), stateDirectory: state.directory, repository: repo,
                warn: { FileHandleOutput.standardError("agentry: warning: \($0)") })
            FileHandleOutput.standardOutput("\(agent) is killed; `agentry unkill \(agent)` lifts the switch.\n")
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}

struct UnkillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unkill", abstract: "Lift the kill switch; the next apply starts the machine again.")

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "Who, for the event log.")
    var actor: String?

    @Option(name: .long, help: "The git repository whose history branch records the event. (default: the one the last apply read)")
    var repo: String?

    @OptionGroup var state: StateOptions

    func run() throws {
        do {
            try Operations.unkill(
                agent: agent, actor: currentActor(actor), stateDirectory: state.directory, repository: repo,
                warn: { FileHandleOutput.standardError("agentry: warning: \($0)") })
            FileHandleOutput.standardOutput("\(agent): kill switch lifted; run `agentry apply` to start it.\n")
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
    }
}
