import AgentryBasics
import AgentryComposition
import AgentryCore
import ArgumentParser

/// Options that choose where an agent repository is read from.
struct SourceOptions: ParsableArguments {
    @Option(name: .long, help: "The agent repository. (env: AGENTRY_REPO; default: .)")
    var repo: String?

    @Option(name: .long, help: "The commit, branch or tag to read. (default: HEAD)")
    var ref: String?

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @Option(name: .long, help: "Read a plain folder instead of a git commit (for pre-commit hooks and editors).")
    var dir: String?

    func location() throws -> RepositoryLocation {
        if let dir {
            if repo != nil || ref != nil || path != nil {
                throw ValidationError("--dir reads a folder; it cannot be combined with --repo, --ref or --path")
            }
            return .directory(dir)
        }
        let environment = LocalHost.environment()
        return .git(
            repository: repo ?? environment["AGENTRY_REPO"].flatMap { $0.isEmpty ? nil : $0 } ?? ".",
            ref: ref ?? "HEAD",
            path: path ?? environment["AGENTRY_PATH"] ?? "")
    }
}

enum ValidateFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json, github
}

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an agent repository: schemas, references, instruction files, skills and secrets.",
        discussion: """
            Reads the repository at a git commit (default: HEAD of the repository in the current folder) \
            or a plain folder (--dir), and reports every problem in one pass.

            Exit codes: 0 valid (warnings allowed), 1 invalid, 2 could not run.
            """)

    @OptionGroup var source: SourceOptions

    @Option(
        name: [.short, .customLong("output")],
        help: "Output format: text, json (stable, versioned) or github (workflow annotations).")
    var output: ValidateFormat = .text

    @Flag(name: .long, help: "Treat warnings as errors.")
    var warningsAsErrors = false

    @OptionGroup var cache: CacheOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        Heap.growInLargeSteps()
        let outcome = try await Validation.run(
            try source.location(), ports: defaultPorts(try logging.makeLogger(), parseCache: !cache.noCache))
        if !outcome.uncommitted.isEmpty {
            let shown = outcome.uncommitted.prefix(3).joined(separator: ", ")
            let more = outcome.uncommitted.count > 3 ? " and \(outcome.uncommitted.count - 3) more" : ""
            Output.progress(
                "note: uncommitted changes to \(shown)\(more) were not checked: validate reads the commit (HEAD); commit them, or check the files as they are with `agentry validate --dir .`"
            )
        }
        let strict = warningsAsErrors
        switch output {
        case .text: Output.standardOutput(ValidationOutput.text(outcome.report, warningsAsErrors: strict))
        case .json:
            Output.standardOutput(
                ValidationOutput.json(outcome.report, source: outcome.source, warningsAsErrors: strict))
        case .github: Output.standardOutput(ValidationOutput.github(outcome.report, warningsAsErrors: strict))
        }
        if !ValidationOutput.passes(outcome.report, warningsAsErrors: strict) { throw ExitCode(ExitStatus.invalid) }
    }
}

struct Schema: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the JSON Schema (2020-12) of a kind, of SKILL.md front matter, or of any resource.",
        discussion: "Names: \(JSONSchema.names.joined(separator: ", ")). The same schemas are in the schemas/ folder.")

    @Argument(help: "agent, harness, model, environment, skill or resource.")
    var name: String?

    @Flag(name: .long, help: "Print the Markdown field reference of every kind instead (docs/reference.md).")
    var reference = false

    @Flag(name: .long, help: "Print the OpenAPI 3.1 document of agentry serve's API instead (schemas/openapi.yaml).")
    var openapi = false

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        _ = try logging.makeLogger()
        if reference {
            Output.standardOutput(FieldReference.markdown())
            return
        }
        if openapi {
            Output.standardOutput(Service.openAPI)
            return
        }
        guard let name else {
            throw ValidationError("name a schema: \(JSONSchema.names.joined(separator: ", "))")
        }
        guard let document = JSONSchema.document(named: name.lowercased()) else {
            let suggestion =
                Suggest.closest(name.lowercased(), JSONSchema.names).map { "; did you mean \"\($0)\"?" } ?? ""
            throw ValidationError(
                "no schema named \"\(name)\"\(suggestion); expected one of \(JSONSchema.names.joined(separator: ", "))")
        }
        Output.standardOutput(document.rendered() + "\n")
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new agent repository (git) with a starter layout that validates clean.")

    @Argument(help: "The folder to create; it must not exist or be empty.")
    var directory: String

    @Option(name: .long, help: "Owner written into the starter agent.")
    var owner: String = "platform-team"

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let ports = defaultPorts(try logging.makeLogger())
        let commit = try await Scaffolding.create(at: directory, owner: owner, ports: ports)
        Output.standardOutput(
            """
            Created an agent repository in \(directory) (commit \(commit.prefix(12))).
            Next: cd \(directory) && agentry validate

            """)
    }
}
