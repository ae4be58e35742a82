import AgentryBasics
import AgentryModel
import AgentryRender

/// `agentry render`: what agentry would put into an agent's machine at a commit (its files, the
/// environment and command of a run), without a machine. Secret values and run tokens are named,
/// never shown.
public enum Preview {
    public struct Outcome: Sendable {
        public var agent: String
        public var commit: String
        public var revision: String
        public var harness: String
        public var harnessType: String
        public var rendered: RenderedAgent
        /// Variable → the secret store key a run projects into it.
        public var secrets: [String: String]

        /// The run's command as one shell line.
        public var commandLine: String { rendered.command.map(GuestShell.quote).joined(separator: " ") }
    }

    public static func run(agent: String, repository: String, ref: String, path: String, ports: Ports) async throws
        -> Outcome
    {
        let source = ports.source
        let parseCache = ports.parseCache
        return try await BlockingWork.run {
            let reader = try reporting(.repositoryUnavailable) {
                try source.reader(repository: repository, path: path, cache: parseCache)
            }
            let loaded = try reporting(.repositoryUnavailable) { try reader.load(ref) }
            guard loaded.report.isValid else {
                let first = loaded.report.diagnostics.first { $0.severity == .error }
                throw CoreError(
                    .invalidRepository,
                    "the agent repository at \(ref) (\(String(loaded.commit.prefix(12)))) is invalid: \(first.map { "\($0.file):\($0.mark.line):\($0.mark.column): \($0.message)" } ?? "")\(loaded.report.errorCount > 1 ? " (and \(loaded.report.errorCount - 1) more; `agentry validate` lists them)" : "")"
                )
            }
            guard loaded.desired.agents[agent] != nil else {
                let known = loaded.desired.agents.keys.sorted()
                throw CoreError(
                    .notFound,
                    "no agent named \"\(agent)\" at \(ref)"
                        + (Suggest.closest(agent, known).map { "; did you mean \"\($0)\"?" } ?? ""))
            }
            let bundle = try reporting(.repositoryUnavailable) { try reader.bundle(agent, in: loaded) }
            let context = RunContext(
                prompt: bundle.agent.run.prompt ?? "", runID: "",
                timeoutSeconds: Int(bundle.agent.run.timeoutMilliseconds / 1000))
            var secrets: [String: String] = [:]
            for binding in bundle.agent.runSecrets(for: bundle.harness.type) { secrets[binding.env] = binding.ref }
            return Outcome(
                agent: agent, commit: loaded.commit, revision: bundle.revision, harness: bundle.harness.metadata.name,
                harnessType: bundle.harness.type?.rawValue ?? "", rendered: Rendering.render(bundle, run: context),
                secrets: secrets)
        }
    }
}
