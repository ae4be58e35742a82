import AgentryComposition
import AgentryCore
import ArgumentParser

struct RenderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Print what agentry puts into an agent's machine: its files, and a run's environment and command.",
        discussion: """
            Renders the agent at a commit (default: HEAD) as apply and run would, without a machine: \
            the harness's configuration files (with the agent's tools and MCP servers in the \
            harness's own settings), its instructions and skills, the run's environment and command. \
            Secret values and the run's gateway token are never shown: the variables that carry them \
            name the secret store key or say <run token>.
            """)

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "Print only this file's content (a path under the agent's home, as listed).")
    var file: String?

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var source: SourceOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        guard case .git(let repository, let ref, let path) = try source.location() else {
            throw ValidationError("render reads a commit; --dir is for validate")
        }
        let outcome = try await Preview.run(
            agent: agent, repository: repository, ref: ref, path: path, ports: defaultPorts(try logging.makeLogger()))
        let rendered = outcome.rendered
        if let file {
            let wanted = SourceTree.normalize(file) ?? file
            guard let found = rendered.files.first(where: { $0.path == wanted }) else {
                let paths = rendered.files.map(\.path)
                throw CoreError(
                    .notFound,
                    "\(agent) has no rendered file \(file)"
                        + (Suggest.closest(wanted, paths).map { "; did you mean \($0)?" }
                            ?? "; it has " + paths.joined(separator: ", ")))
            }
            return Output.write(found.bytes, to: 1)
        }
        var environment = rendered.environment
        for variable in rendered.tokenEnvironment.keys { environment[variable] = "<run token>" }
        for (variable, ref) in outcome.secrets { environment[variable] = "<secret \(ref)>" }
        if output == .json {
            let document = JSON.object([
                ("formatVersion", .int(1)), ("kind", .string("render")), ("agent", .string(agent)),
                ("commit", .string(outcome.commit)), ("revision", .string(outcome.revision)),
                ("harness", .object([("name", .string(outcome.harness)), ("type", .string(outcome.harnessType))])),
                (
                    "files",
                    .array(
                        rendered.files.map { file in
                            var fields: [(String, JSON)] = [
                                ("path", .string(file.path)), ("mode", .string(String(file.mode, radix: 8))),
                            ]
                            if let target = file.linkTarget {
                                fields.append(("linkTarget", .string(target)))
                            } else if let text = String(validating: file.bytes, as: UTF8.self) {
                                fields.append(("content", .string(text)))
                            } else {
                                fields.append(("bytes", .int(file.bytes.count)))
                            }
                            return .object(fields)
                        })
                ),
                ("environment", .object(environment.keys.sorted().map { ($0, .string(environment[$0]!)) })),
                ("command", .array(rendered.command.map(JSON.string))),
            ])
            return Output.standardOutput(document.rendered() + "\n")
        }
        var text =
            "# \(agent) at \(outcome.commit.prefix(12)) (revision \(outcome.revision.prefix(12))), harness \(outcome.harness) (\(outcome.harnessType))\n"
        for file in rendered.files {
            if let target = file.linkTarget {
                text += "--- \(file.path) -> \(target)\n"
                continue
            }
            text += "--- \(file.path) (\(String(file.mode, radix: 8)))\n"
            if let content = String(validating: file.bytes, as: UTF8.self) {
                text += content + (content.hasSuffix("\n") || content.isEmpty ? "" : "\n")
            } else {
                text += "(\(file.bytes.count) bytes, not text)\n"
            }
        }
        text += "--- environment\n"
        for key in environment.keys.sorted() { text += "\(key)=\(environment[key]!)\n" }
        text += "--- command\n" + outcome.commandLine + "\n"
        GuestOutput.text(text)
    }
}
