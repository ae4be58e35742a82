import AgentryCore
import AgentryRender
import AgentrySource
import AgentryTesting
import Foundation
import Logging
import Synchronization
import TestSupport

/// An agent repository in a temporary git repository, and fakes for everything else.
struct Fixture {
    let repo: TemporaryDirectory
    let fakes: Fakes
    let ports: Ports

    init(secrets: [String: String] = [:]) throws {
        repo = try TemporaryDirectory("agentry-core")
        fakes = Fakes(secrets: secrets)
        ports = fakes.ports(source: GitRepositorySource(logger: Logger(label: "test")))
        try shellHarness()
        try write(
            "models/local.yaml",
            "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: local}\nspec: {provider: local, name: m, api: chat-completions, baseUrl: 'http://127.0.0.1:8080/v1'}\n"
        )
        try environment()
    }

    var target: Planning.Target { Planning.Target(repository: repo.path, ref: "HEAD", path: "") }

    func write(_ path: String, _ text: String) throws { try repo.write(path, text) }

    /// The `shell` harness every agent of the fixture uses; `install` becomes its `install` field.
    func shellHarness(version: String = "1", install: String? = nil) throws {
        try write(
            "harnesses/shell.yaml",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata: {name: shell}
            spec:
              type: shell
              version: "\(version)"
              command: ["/bin/sh", "-c", "echo {{prompt}}"]
              env: {MODEL: "{{model.name}}"}
              supports: {apis: [chat-completions]}
            \(install.map { "  install: \($0)\n" } ?? "")
            """)
    }

    func remove(_ path: String) throws { try FileManager.default.removeItem(at: repo.url.appendingPathComponent(path)) }

    func environment(memory: String = "192Mi", base: String = "minimal", packages: [String] = []) throws {
        let apt = packages.isEmpty ? "" : ", packages: {apt: [\(packages.joined(separator: ", "))]}"
        try write(
            "environments/tiny.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: tiny}\nspec: {base: \(base), resources: {cpus: 1, memory: \(memory), disk: 256Mi}\(apt)}\n"
        )
    }

    /// An agent; `extra` lines go at the end of its spec (two spaces in).
    func agent(
        _ name: String, instructions: String = "Greet people.", lifecycle: String = "active",
        deletionPolicy: String = "retain", owner: String = "test",
        extra: [String] = []
    ) throws {
        try write(
            "agents/\(name).yaml",
            """
            apiVersion: agentry/v1
            kind: Agent
            metadata: {name: \(name), owner: \(owner)}
            spec:
              instructions: \(instructions.debugDescription)
              harness: shell
              model: local
              environment: tiny
              lifecycle: \(lifecycle)
              deletionPolicy: \(deletionPolicy)
              run: {prompt: "hello there", timeout: 2m}
              memory: {path: memory/, snapshot: true}
            \(extra.map { "  " + $0 }.joined(separator: "\n"))

            """)
    }

    @discardableResult
    func commit(_ message: String = "change") throws -> String { try repo.commitAll(message) }

    func apply(_ options: ApplyOptions? = nil) async throws -> Apply.Outcome {
        try await Apply(ports).run(.init(target: target, options: options ?? ApplyOptions(actor: "ci")))
    }

    /// The one step of `agent` in an apply.
    func step(_ outcome: Apply.Outcome, _ agent: String) -> AppliedStep? {
        outcome.steps.first { $0.agent == agent }
    }

    /// Runs `agent`, applying the repository first unless `apply` is false; `progress` gets what
    /// the run says.
    func run(
        _ agent: String, prompt: String? = nil, timeout: Duration? = nil, apply: Bool = true, ref: String? = nil,
        interruption: Interruption? = nil, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> Runner.Outcome {
        try await Runner(ports, progress: progress, output: { _, _ in }).run(
            request(
                agent, prompt: prompt, timeout: timeout, apply: apply, ref: ref, interruption: interruption))
    }

    func request(
        _ agent: String, prompt: String? = nil, timeout: Duration? = nil, apply: Bool = true, ref: String? = nil,
        interruption: Interruption? = nil
    ) -> Runner.Request {
        Runner.Request(
            agent: agent, repository: repo.path, path: "", ref: ref, prompt: prompt, timeout: timeout, actor: "ana",
            historyBranch: "agentry/history", applyFirst: apply, interruption: interruption)
    }

    /// Whether a harness was started.
    final class HarnessWatch: Sendable {
        let started = Mutex(false)

        func withLock<T>(_ body: (inout Bool) -> T) -> T { started.withLock { body(&$0) } }
    }

    /// Sets a harness that does nothing and says whether it was started.
    func watchHarness() -> HarnessWatch {
        let watch = HarnessWatch()
        fakes.machines.setHarness { _ in
            watch.withLock { $0 = true }
            return .init()
        }
        return watch
    }

    var history: HistoryLocation { HistoryLocation(repository: repo.path, branch: "agentry/history") }

    /// The records of the agent's runs in history, newest first.
    func records(_ agent: String) throws -> [RunRecord] {
        try HistoryQueries(ports).runs(agent: agent, in: history).records
    }
}
