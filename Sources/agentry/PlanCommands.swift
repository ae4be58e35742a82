import AgentryBasics
import AgentryComposition
import AgentryCore
import ArgumentParser
import Foundation

enum PlanFormat: String, ExpressibleByArgument, CaseIterable {
    case text, markdown, json
}

/// Options shared by plan and diff output.
struct PlanOutputOptions: ParsableArguments {
    @Option(
        name: [.short, .customLong("output")],
        help:
            "Output format: text (a terminal; coloured on a TTY), markdown (a pull-request comment) or json (stable, versioned)."
    )
    var output: PlanFormat = .text

    @Flag(
        name: .long,
        help: "Exit 0 when there are no changes, 2 when there are, 1 on any error (Terraform's convention).")
    var detailedExitcode = false

    func print(_ document: PlanDocument) {
        switch output {
        case .text: Output.standardOutput(PlanOutput.text(document, color: Terminal.colorsStandardOutput))
        case .markdown: Output.standardOutput(PlanOutput.markdown(document))
        case .json: Output.standardOutput(bytes: PlanOutput.jsonBytes(document))
        }
    }

    /// Prints an outcome; its exit code, when it is not success. An invalid repository or a refusal
    /// still gives a JSON or Markdown document that says so (a pull-request comment shows why).
    func finish(_ outcome: Planning.Outcome, kind: String = "plan", save: ((PlanDocument) throws -> Void)? = nil)
        throws -> Int32?
    {
        switch outcome {
        case .invalid(let report):
            Output.error(ValidationOutput.text(report).trimmingCharacters(in: .newlines))
            Output.error("error: the repository is invalid; nothing was planned")
            printFailure(kind: kind, message: "the repository is invalid", valid: false, report: report)
            return ExitStatus.invalid
        case .refused(let refusal):
            Output.error("error: refusing to plan: \(refusal)")
            printFailure(kind: kind, message: "refusing to plan: \(refusal)", valid: true, report: nil)
            return ExitStatus.invalid
        case .planned(let document):
            try save?(document)
            print(document)
            return detailedExitcode && document.plan.hasChanges ? ExitStatus.changes : nil
        }
    }

    /// With --detailed-exitcode, "could not run" is an error like any other: 1, as 2 means changes.
    /// Whatever stopped it, JSON and Markdown readers get a document that says so.
    func run(kind: String = "plan", _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as CoreError {
            // The repository may never have been read: whether it is valid is not known.
            printFailure(kind: kind, message: error.message, valid: nil, report: nil)
            guard detailedExitcode else { throw error }
            Output.error("error: \(error.message)")
            throw ExitCode(ExitStatus.invalid)
        }
    }

    /// Text for a Markdown list item: one line, HTML kept as text.
    static func oneLine(_ text: String) -> String {
        text.split(separator: "\n").joined(separator: " ").replacingOccurrences(of: "<", with: "&lt;")
    }

    /// `{"formatVersion": 1, "kind": "plan", "valid": false, "error": ..., "diagnostics": [...]}`, or
    /// a Markdown heading with the errors as a list; nothing for text (standard error says it).
    /// `valid`: true for a valid repository whose plan was refused, null when it is not known (the
    /// command stopped before validating).
    func printFailure(kind: String, message: String, valid: Bool?, report: ValidationReport?) {
        let diagnostics = report?.diagnostics ?? []
        switch output {
        case .text: return
        case .json:
            let document = JSON.object([
                ("formatVersion", .int(1)),
                ("kind", .string(kind)),
                ("valid", valid.map(JSON.bool) ?? .null),
                ("error", .string(message)),
                ("diagnostics", .array(diagnostics.map(ValidationOutput.diagnosticJSON))),
            ])
            Output.standardOutput(document.rendered() + "\n")
        case .markdown:
            var lines = ["### agentry \(kind): \(PlanOutputOptions.oneLine(message))", ""]
            for diagnostic in diagnostics {
                lines.append(
                    "- `\(diagnostic.file):\(diagnostic.mark.line):\(diagnostic.mark.column)` \(diagnostic.severity.rawValue)[\(diagnostic.code.rawValue)]: \(PlanOutputOptions.oneLine(diagnostic.message))"
                )
            }
            Output.standardOutput(lines.joined(separator: "\n") + "\n")
        }
    }
}

enum Terminal {
    static var colorsStandardOutput: Bool {
        let environment = LocalHost.environment()
        return isatty(1) == 1 && environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
    }
}

struct PlanCommand: AsyncParsableCommand {
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

    @Option(name: .long, help: RepositoryHelp.repo)
    var repo: String?

    @Option(name: .long, help: "The commit, branch or tag to plan.")
    var ref: String = "HEAD"

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @OptionGroup var state: StateOptions
    @OptionGroup var format: PlanOutputOptions

    @Option(
        name: .customLong("out"),
        help:
            "Also save the plan (JSON, with the desired commit and a digest of the actual state) for `agentry apply PLAN`."
    )
    var out: String?

    @Flag(name: .long, help: "Allow a desired state with no agents to delete every running agent.")
    var allowEmpty = false

    @Flag(name: .long, help: "Allow deleting more than half of the running agents at once.")
    var allowMassDelete = false

    @Flag(name: .long, help: "Plan against nothing applied (a first deployment), reading no state directory.")
    var emptyState = false

    @Flag(name: .long, help: "Plan although the state directory applied another agent repository.")
    var adopt = false

    @OptionGroup var cache: CacheOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        Heap.growInLargeSteps()
        let ports = state.ports(try logging.makeLogger(), parseCache: !cache.noCache)
        var status: Int32?
        try await format.run {
            let source = AgentRepository.resolve(repo: repo, path: path, ports: ports, usingState: !emptyState)
            let outcome = try await Planning(ports).plan(
                .init(repository: source.repository, ref: ref, path: source.path),
                options: PlanOptions(allowEmpty: allowEmpty, allowMassDelete: allowMassDelete), emptyState: emptyState,
                adopt: adopt)
            status = try format.finish(outcome) { document in
                guard let out else { return }
                do {
                    try Data(PlanOutput.jsonBytes(document)).write(to: URL(fileURLWithPath: out), options: .atomic)
                } catch {
                    throw CoreError(.io, "cannot write the plan to \(out): \(error.localizedDescription)")
                }
            }
            // Disks of deleted agents stay until removed: said, so they are not forgotten.
            if !emptyState, case .planned = outcome {
                let disks = RetainedDisks(ports).list()
                if !disks.isEmpty {
                    Output.progress(
                        "\(disks.count) retained disk\(disks.count == 1 ? "" : "s") of deleted agents (\(disks.map(\.agent).joined(separator: ", "))); `agentry disks` lists them, `agentry disks rm ID` removes one"
                    )
                }
            }
            // Freeing 10,000 planned actions need not hold up the exit.
            BlockingWork.discard(consume outcome)
        }
        if let status { throw ExitCode(status) }
    }
}

struct DiffCommand: AsyncParsableCommand {
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

    @Option(name: .long, help: "The agent repository. (env: AGENTRY_REPO; default: .)")
    var repo: String?

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @OptionGroup var format: PlanOutputOptions
    @OptionGroup var cache: CacheOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        Heap.growInLargeSteps()
        let ports = defaultPorts(try logging.makeLogger(), parseCache: !cache.noCache)
        var status: Int32?
        try await format.run(kind: "diff") {
            let source = AgentRepository.resolve(repo: repo, path: path, ports: ports, usingState: false)
            let outcome = try await Planning(ports).diff(
                repository: source.repository, base: base, head: head, path: source.path)
            status = try format.finish(outcome, kind: "diff")
        }
        if let status { throw ExitCode(status) }
    }
}

enum StatusFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "A table of agents: sync (desired against applied revision) and health (the machine, measured).")

    @Argument(help: "Only this agent.")
    var agent: String?

    @Option(name: .long, help: RepositoryHelp.repo)
    var repo: String?

    @Option(name: .long, help: "The commit, branch or tag.")
    var ref: String = "HEAD"

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @OptionGroup var state: StateOptions

    @Option(name: [.short, .customLong("output")], help: "text or json.")
    var output: StatusFormat = .text

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let source = AgentRepository.resolve(repo: repo, path: path, ports: ports)
        // Outside any repository, with none named and none applied: the state alone.
        let repository = source.origin == "." && !ports.source.isRepository(".") ? nil : source.repository
        let report = try await StatusReport.collect(
            repository: repository, ref: ref, path: source.path, agent: agent, ports: ports)
        switch output {
        case .json: Output.standardOutput(report.json)
        case .text: Output.standardOutput(report.table)
        }
    }
}
