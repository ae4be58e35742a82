import AgentryCore
import AgentryModel
import AgentryPlan
import AgentrySource
import AgentryTesting
import Foundation
import Logging
import TestSupport
import Testing

/// The planner, driven by real commits of a temporary copy of examples/quickstart.
@Suite struct PlanningTests {
    let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart")
    let logger = Logger(label: "test")

    func ports() -> Ports {
        Fakes().ports(source: GitRepositorySource(logger: logger))
    }

    /// Commits the quickstart, applies `edit`, commits again, and diffs the two commits.
    func diff(_ edit: (TemporaryDirectory) throws -> Void) async throws -> Plan {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        try edit(directory)
        try directory.commitAll("head")
        let outcome = try await Planning(ports()).diff(
            repository: directory.path, base: "HEAD~1", head: "HEAD", path: "")
        guard case .planned(let document) = outcome else {
            Issue.record("expected a plan, got \(outcome)")
            return Plan(actions: [])
        }
        return document.plan
    }

    func edit(_ directory: TemporaryDirectory, _ file: String, _ change: (String) -> String) throws {
        let url = directory.url.appendingPathComponent(file)
        try directory.write(file, change(try String(contentsOf: url, encoding: .utf8)))
    }

    func action(_ plan: Plan, _ agent: String) -> PlannedAction? {
        plan.actions.first { $0.agent == agent }
    }

    func reasons(_ plan: Plan, _ agent: String) -> [String] {
        action(plan, agent)?.reasons.map { "\($0.field): \($0.old ?? "∅") → \($0.new ?? "∅")" } ?? []
    }

    @Test func reformattingReorderingAndMovingChangeNothing() async throws {
        let plan = try await diff { directory in
            // Flow style to block style, keys reordered, comments added, the model moved to its own file.
            try directory.write(
                "environments/minimal.yaml",
                """
                # Machines.
                kind: Environment
                apiVersion: agentry/v1
                spec:
                  network:
                    egress: none
                  resources:
                    disk: 1Gi
                    memory: 256Mi   # small
                    cpus: 1
                  base: minimal
                metadata:
                  name: minimal
                ---
                apiVersion: agentry/v1
                kind: Environment
                metadata: {name: workstation}
                spec:
                  base: debian-12
                  packages: {apt: [git, curl, jq]}
                  resources: {cpus: 2, memory: 1024Mi, disk: 8Gi}
                  network: {egress: [api.anthropic.com, api.github.com, github.com]}

                """)
            try edit(directory, "models/sonnet.yaml") { text in
                String(text[..<text.range(of: "---\n")!.lowerBound])
            }
            try directory.write(
                "models/local.yaml",
                "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: local-llama}\nspec: {api: chat-completions, provider: openai-compatible, name: llama-3.1-8b-instruct, baseUrl: 'http://127.0.0.1:8080/v1'}\n"
                    + "---\napiVersion: agentry/v1\nkind: Model\nmetadata: {name: haiku}\nspec: {contextWindow: 200000, credentials: {ref: anthropic/api-key}, api: messages, provider: anthropic, name: claude-haiku-4-5, baseUrl: 'https://api.anthropic.com'}\n"
            )
        }
        #expect(!plan.hasChanges, "\(plan.changes)")
        #expect(plan.count(.noop) == 3)
    }

    @Test func newAgentIsCreated() async throws {
        let plan = try await diff { directory in
            try edit(directory, "agents/hello.yaml") {
                $0.replacingOccurrences(of: "name: hello", with: "name: hello-two")
            }
        }
        #expect(action(plan, "hello-two")?.action == .create)
        #expect(reasons(plan, "hello-two").contains("harness: ∅ → shell"))
        #expect(action(plan, "hello")?.action == .delete)
        #expect(action(plan, "hello")?.notes.contains("environment disk removed (deletionPolicy: delete)") == true)
    }

    @Test func modelSwapIsAnUpdateWithFieldReasons() async throws {
        let plan = try await diff { directory in
            try edit(directory, "agents/hello.yaml") {
                $0.replacingOccurrences(of: "  model: local-llama", with: "  model: sonnet")
            }
        }
        #expect(action(plan, "hello")?.action == .update)
        let shown = reasons(plan, "hello")
        #expect(shown.contains("model: local-llama → sonnet"))
        #expect(shown.contains("model.name: llama-3.1-8b-instruct → claude-sonnet-4-5"))
        #expect(shown.contains("model.credentials: ∅ → ref anthropic/api-key"), "secret references shown by name")
        #expect(action(plan, "triage")?.action == .noop)
    }

    @Test func instructionsSkillsSecretsAndRunDefaultsAreUpdates() async throws {
        let plan = try await diff { directory in
            try directory.write("agents/triage/INSTRUCTIONS.md", "# triage\n\nNew instructions.\n")
            try directory.write("skills/greeting/extra.md", "more\n")
            try edit(directory, "agents/triage.yaml") {
                $0.replacingOccurrences(of: "ref: github/triage-token", with: "ref: github/other-token")
                    .replacingOccurrences(of: "timeout: 15m", with: "timeout: 900s")
            }
            try edit(directory, "agents/hello.yaml") { $0.replacingOccurrences(of: "timeout: 2m", with: "timeout: 3m") }
        }
        #expect(action(plan, "triage")?.action == .update)
        let triage = reasons(plan, "triage")
        #expect(triage.contains { $0.hasPrefix("instructions: ") })
        #expect(
            triage.contains(
                "secrets.GITHUB_TOKEN: ref github/triage-token (optional) → ref github/other-token (optional)"))
        #expect(!triage.contains { $0.hasPrefix("run.timeout") }, "900s is 15m")
        #expect(action(plan, "hello")?.action == .update)
        #expect(reasons(plan, "hello").contains("run.timeout: 2m → 3m"))
        #expect(reasons(plan, "hello").contains { $0.hasPrefix("skills.greeting: ") })
    }

    @Test func harnessChangeIsAReinstall() async throws {
        let plan = try await diff { directory in
            try edit(directory, "harnesses/claude-code.yaml") {
                $0.replacingOccurrences(of: "version: \"2.1.327\"", with: "version: \"2.1.328\"")
            }
        }
        #expect(action(plan, "triage")?.action == .reinstall)
        #expect(reasons(plan, "triage") == ["harness.version: 2.1.327 → 2.1.328"])
        #expect(action(plan, "docs-writer")?.action == .noop, "uses another harness")
    }

    @Test func resourcesAreARestartAndBaseOrPackagesAReplace() async throws {
        let restart = try await diff { directory in
            try edit(directory, "environments/minimal.yaml") {
                $0.replacingOccurrences(of: "cpus: 1,", with: "cpus: 2,")
            }
        }
        #expect(action(restart, "hello")?.action == .restart)
        #expect(reasons(restart, "hello") == ["environment.resources.cpus: 1 → 2"])

        let replace = try await diff { directory in
            try edit(directory, "environments/minimal.yaml") {
                $0.replacingOccurrences(of: "apt: [git, curl, jq]", with: "apt: [git, curl, jq, ripgrep]")
            }
        }
        #expect(action(replace, "triage")?.action == .replace)
        #expect(action(replace, "hello")?.action == .noop)
    }

    @Test func lifecycleDrivesPauseResumeAndRevoke() async throws {
        let plan = try await diff { directory in
            try edit(directory, "agents/triage.yaml") {
                $0.replacingOccurrences(of: "lifecycle: active", with: "lifecycle: revoked")
            }
            try edit(directory, "agents/hello.yaml") {
                $0.replacingOccurrences(of: "lifecycle: active", with: "lifecycle: paused")
            }
            try edit(directory, "agents/docs-writer.yaml") {
                $0.replacingOccurrences(of: "lifecycle: paused", with: "lifecycle: active")
            }
        }
        #expect(action(plan, "triage")?.action == .revoke)
        #expect(action(plan, "hello")?.action == .pause)
        #expect(action(plan, "docs-writer")?.action == .resume)
        #expect(reasons(plan, "docs-writer") == ["lifecycle: paused → active"])
    }

    @Test func planAgainstRecordedActualState() async throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let ports = ports()
        let planning = Planning(ports)
        let target = Planning.Target(repository: directory.path, ref: "HEAD", path: "")
        let planAt = { () async throws -> Planning.Outcome in try await planning.plan(target, options: PlanOptions()) }
        // Before anything was applied there is no state: planning says so, unless told to plan
        // against an empty one.
        await #expect { try await planAt() } throws: { "\($0)".contains("no agentry state") }
        guard case .planned(let first) = try await planning.plan(target, options: PlanOptions(), emptyState: true)
        else { throw Shell.Failure(description: "no plan") }
        #expect(first.plan.count(.create) == 3)

        _ = try await Apply(ports).run(.init(target: target, options: ApplyOptions(actor: "ci")))
        guard case .planned(let applied) = try await planAt() else { throw Shell.Failure(description: "no plan") }
        #expect(!applied.plan.hasChanges)

        try edit(directory, "agents/triage.yaml") {
            $0.replacingOccurrences(of: "  model: sonnet", with: "  model: haiku")
        }
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents/docs-writer.yaml"))
        try directory.commitAll("change")
        guard case .planned(let changed) = try await planAt() else { throw Shell.Failure(description: "no plan") }
        #expect(action(changed.plan, "triage")?.action == .update)
        #expect(reasons(changed.plan, "triage").contains("model: sonnet → haiku"))
        #expect(action(changed.plan, "docs-writer")?.action == .delete)
        #expect(changed.actualDigest == first.actualDigest.map { _ in changed.actualDigest! })
        #expect(changed.actualDigest != first.actualDigest, "the actual state moved between the plans")
    }

    @Test func emptyOrMassDeletingDesiredStatesAreRefused() async throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let ports = ports()
        let planning = Planning(ports)
        let target = Planning.Target(repository: directory.path, ref: "HEAD", path: "")
        _ = try await Apply(ports).run(.init(target: target, options: ApplyOptions(actor: "ci")))
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents"))
        try directory.commitAll("no agents")
        let refused = try await planning.plan(target, options: PlanOptions())
        guard case .refused(.emptyDesiredState(running: 3)) = refused else {
            Issue.record("expected refusal, got \(refused)")
            return
        }
        let allowed = try await planning.plan(target, options: PlanOptions(allowEmpty: true))
        guard case .planned(let plan) = allowed else {
            Issue.record("expected a plan, got \(allowed)")
            return
        }
        #expect(plan.plan.count(.delete) == 3)

        // Two of three agents deleted is more than half.
        try directory.copy(from: quickstart.appendingPathComponent("agents"), to: "agents")
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents/triage.yaml"))
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents/docs-writer.yaml"))
        try directory.commitAll("two gone")
        let mass = try await planning.plan(target, options: PlanOptions())
        guard case .refused(.massDelete(deleting: 2, running: 3)) = mass else {
            Issue.record("expected refusal, got \(mass)")
            return
        }
    }

    @Test func invalidRepositoriesNeverPlan() async throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write("agents/bad.yaml", "apiVersion: agentry/v1\nkind: Agent\n")
        try directory.commitAll()
        let outcome = try await Planning(ports()).plan(
            .init(repository: directory.path, ref: "HEAD", path: ""), options: PlanOptions(), emptyState: true)
        guard case .invalid(let report) = outcome else {
            Issue.record("expected invalid, got \(outcome)")
            return
        }
        #expect(!report.isValid)
    }

}
