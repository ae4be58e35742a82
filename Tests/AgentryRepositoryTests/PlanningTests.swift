import AgentryModel
import AgentryPlan
import AgentryRepository
import AgentryState
import Foundation
import Logging
import Testing
import TestSupport

/// The planner, driven by real commits of a temporary copy of examples/quickstart.
@Suite struct PlanningTests {
    let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart")
    let logger = Logger(label: "test")

    /// Commits the quickstart, applies `edit`, commits again, and diffs the two commits.
    func diff(_ edit: (TemporaryDirectory) throws -> Void) throws -> Plan {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        try edit(directory)
        try directory.commitAll("head")
        let outcome = try Planning.diff(
            repository: directory.path, base: "HEAD~1", head: "HEAD", path: "", stateDirectory: nil, logger: logger)
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

    @Test func reformattingReorderingAndMovingChangeNothing() throws {
        let plan = try diff { directory in
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
                "apiVersion: agentry/v1\nkind: Model\nmetadata: {name: local-llama}\nspec: {api: chat-completions, provider: openai-compatible, name: llama-3.1-8b-instruct, baseUrl: 'http://10.0.2.2:8080/v1'}\n")
        }
        #expect(!plan.hasChanges, "\(plan.changes)")
        #expect(plan.count(.noop) == 3)
    }

    @Test func newAgentIsCreated() throws {
        let plan = try diff { directory in
            try edit(directory, "agents/hello.yaml") { $0.replacingOccurrences(of: "name: hello", with: "name: hello-two") }
        }
        #expect(action(plan, "hello-two")?.action == .create)
        #expect(reasons(plan, "hello-two").contains("harness: ∅ → shell"))
        #expect(action(plan, "hello")?.action == .delete)
        #expect(action(plan, "hello")?.notes.contains("environment disk removed (deletionPolicy: delete)") == true)
    }

    @Test func modelSwapIsAnUpdateWithFieldReasons() throws {
        let plan = try diff { directory in
            try edit(directory, "agents/triage.yaml") { $0.replacingOccurrences(of: "  model: sonnet", with: "  model: local-llama") }
        }
        #expect(action(plan, "triage")?.action == .update)
        let shown = reasons(plan, "triage")
        #expect(shown.contains("model: sonnet → local-llama"))
        #expect(shown.contains("model.name: claude-sonnet-4-5 → llama-3.1-8b-instruct"))
        #expect(shown.contains("model.credentials: ref anthropic/api-key → ∅"), "secret references shown by name")
        #expect(action(plan, "hello")?.action == .noop)
    }

    @Test func instructionsSkillsSecretsAndRunDefaultsAreUpdates() throws {
        let plan = try diff { directory in
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
        #expect(triage.contains("secrets.GITHUB_TOKEN: ref github/triage-token → ref github/other-token"))
        #expect(!triage.contains { $0.hasPrefix("run.timeout") }, "900s is 15m")
        #expect(action(plan, "hello")?.action == .update)
        #expect(reasons(plan, "hello").contains("run.timeout: 2m → 3m"))
        #expect(reasons(plan, "hello").contains { $0.hasPrefix("skills.greeting: ") })
    }

    @Test func harnessChangeIsAReinstall() throws {
        let plan = try diff { directory in
            try edit(directory, "harnesses/hermes.yaml") { $0.replacingOccurrences(of: "version: \"0.19.0\"", with: "version: \"0.20.0\"") }
        }
        #expect(action(plan, "triage")?.action == .reinstall)
        #expect(reasons(plan, "triage") == ["harness.version: 0.19.0 → 0.20.0"])
        #expect(action(plan, "docs-writer")?.action == .noop, "uses another harness")
    }

    @Test func resourcesAreARestartAndBaseOrPackagesAReplace() throws {
        let restart = try diff { directory in
            try edit(directory, "environments/minimal.yaml") { $0.replacingOccurrences(of: "cpus: 1,", with: "cpus: 2,") }
        }
        #expect(action(restart, "hello")?.action == .restart)
        #expect(reasons(restart, "hello") == ["environment.resources.cpus: 1 → 2"])

        let replace = try diff { directory in
            try edit(directory, "environments/minimal.yaml") { $0.replacingOccurrences(of: "apt: [git, curl, jq]", with: "apt: [git, curl, jq, ripgrep]") }
        }
        #expect(action(replace, "triage")?.action == .replace)
        #expect(action(replace, "hello")?.action == .noop)
    }

    @Test func lifecycleDrivesPauseResumeAndRevoke() throws {
        let plan = try diff { directory in
            try edit(directory, "agents/triage.yaml") { $0.replacingOccurrences(of: "lifecycle: active", with: "lifecycle: revoked") }
            try edit(directory, "agents/hello.yaml") { $0.replacingOccurrences(of: "lifecycle: active", with: "lifecycle: paused") }
            try edit(directory, "agents/docs-writer.yaml") { $0.replacingOccurrences(of: "lifecycle: paused", with: "lifecycle: active") }
        }
        #expect(action(plan, "triage")?.action == .revoke)
        #expect(action(plan, "hello")?.action == .pause)
        #expect(action(plan, "docs-writer")?.action == .resume)
        #expect(reasons(plan, "docs-writer") == ["lifecycle: paused → active"])
    }

    @Test func planAgainstRecordedActualState() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let state = try TemporaryDirectory("agentry-state")
        let planAt = { () throws -> Planning.Outcome in
            try Planning.plan(
                repository: directory.path, ref: "HEAD", path: "", stateDirectory: state.path, options: PlanOptions(),
                logger: logger)
        }
        guard case .planned(let first) = try planAt() else { throw Shell.Failure(description: "no plan") }
        #expect(first.plan.count(.create) == 3)

        let store = try StateStore.openForWriting(state.path)
        try Planning.recordApplied(repository: directory.path, ref: "HEAD", path: "", store: store, logger: logger)
        guard case .planned(let applied) = try planAt() else { throw Shell.Failure(description: "no plan") }
        #expect(!applied.plan.hasChanges)

        try edit(directory, "agents/triage.yaml") { $0.replacingOccurrences(of: "  model: sonnet", with: "  model: local-llama") }
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents/docs-writer.yaml"))
        try directory.commitAll("change")
        guard case .planned(let changed) = try planAt() else { throw Shell.Failure(description: "no plan") }
        #expect(action(changed.plan, "triage")?.action == .update)
        #expect(reasons(changed.plan, "triage").contains("model: sonnet → local-llama"))
        #expect(action(changed.plan, "docs-writer")?.action == .delete)
        #expect(changed.actualDigest == first.actualDigest.map { _ in changed.actualDigest! })
        #expect(changed.actualDigest != first.actualDigest, "the actual state moved between the plans")
    }

    @Test func emptyOrMassDeletingDesiredStatesAreRefused() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let state = try TemporaryDirectory("agentry-state")
        let store = try StateStore.openForWriting(state.path)
        try Planning.recordApplied(repository: directory.path, ref: "HEAD", path: "", store: store, logger: logger)
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("agents"))
        try directory.commitAll("no agents")
        let refused = try Planning.plan(
            repository: directory.path, ref: "HEAD", path: "", stateDirectory: state.path, options: PlanOptions(), logger: logger)
        guard case .refused(.emptyDesiredState(running: 3)) = refused else {
            Issue.record("expected refusal, got \(refused)")
            return
        }
        let allowed = try Planning.plan(
            repository: directory.path, ref: "HEAD", path: "", stateDirectory: state.path,
            options: PlanOptions(allowEmpty: true), logger: logger)
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
        let mass = try Planning.plan(
            repository: directory.path, ref: "HEAD", path: "", stateDirectory: state.path, options: PlanOptions(), logger: logger)
        guard case .refused(.massDelete(deleting: 2, running: 3)) = mass else {
            Issue.record("expected refusal, got \(mass)")
            return
        }
    }

    @Test func invalidRepositoriesNeverPlan() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.write("agents/bad.yaml", "apiVersion: agentry/v1\nkind: Agent\n")
        try directory.commitAll()
        let state = try TemporaryDirectory("agentry-state")
        let outcome = try Planning.plan(
            repository: directory.path, ref: "HEAD", path: "", stateDirectory: state.path, options: PlanOptions(), logger: logger)
        guard case .invalid(let report) = outcome else {
            Issue.record("expected invalid, got \(outcome)")
            return
        }
        #expect(!report.isValid)
    }

    @Test func cachedLoadsGiveTheSameResultAsFreshOnes() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let state = try TemporaryDirectory("agentry-state")
        let store = try StateStore.openCreating(state.path)
        let reader = try CommitReader(repository: directory.path, path: "", store: store, logger: logger)
        let first = try reader.load("HEAD")
        #expect(first.mode == .full)
        #expect(first.parsedFiles == first.report.filesChecked, "nothing cached yet")
        #expect(try reader.load("HEAD").mode == .snapshot)

        // A one-file change is incremental and equal to a fresh load.
        try edit(directory, "agents/hello.yaml") { $0.replacingOccurrences(of: "timeout: 2m", with: "timeout: 4m") }
        try directory.commitAll("one file")
        let incremental = try reader.load("HEAD")
        #expect(incremental.mode == .incremental)
        #expect(incremental.parsedFiles == 1)
        try expectSameAsFresh(incremental, directory)

        // A change that breaks the repository falls back to the full path and reports it.
        try directory.write("agents/broken.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: x}\n")
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("skills/gh-triage"))
        try directory.commitAll("broken")
        let broken = try reader.load("HEAD")
        #expect(broken.mode == .full)
        // Parsed: the new file and hello.yaml (changed since the remembered commit); the rest is cached.
        #expect(broken.parsedFiles == 2)
        try expectSameAsFresh(broken, directory)
    }

    /// Random edits, each loaded incrementally (or not) and compared with a fresh load.
    @Test func incrementalLoadsMatchFreshOnesOverRandomEdits() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let state = try TemporaryDirectory("agentry-state")
        let reader = try CommitReader(
            repository: directory.path, path: "", store: try StateStore.openCreating(state.path), logger: logger)
        _ = try reader.load("HEAD")
        var generator = SystemRandomNumberGenerator()
        let edits: [(TemporaryDirectory) throws -> Void] = [
            { try self.edit($0, "agents/hello.yaml") { $0.replacingOccurrences(of: "cpus", with: "cpus") + "\n# \(UInt32.random(in: 0...9999))\n" } },
            { try self.edit($0, "agents/triage.yaml") { $0.replacingOccurrences(of: "timeout: 15m", with: "timeout: \(Int.random(in: 1...59))m") } },
            { try $0.write("agents/triage/INSTRUCTIONS.md", "# triage \(UInt32.random(in: 0...9999))\n") },
            { try $0.write("skills/greeting/notes-\(UInt32.random(in: 0...9999)).md", "n\n") },
            { try self.edit($0, "harnesses/hermes.yaml") { $0.replacingOccurrences(of: "stateDirs: [", with: "stateDirs: [.cache-\(UInt32.random(in: 0...9999)), ") } },
            { try self.edit($0, "environments/minimal.yaml") { $0.replacingOccurrences(of: "disk: 1Gi", with: "disk: \(Int.random(in: 2...9))Gi").replacingOccurrences(of: "disk: 2Gi}", with: "disk: 1Gi}") } },
            { dir in
                let name = "extra-\(UInt32.random(in: 0...9999))"
                try self.edit(dir, "agents/hello.yaml") { $0 }
                try dir.write("agents/\(name).yaml", try String(contentsOf: dir.url.appendingPathComponent("agents/hello.yaml"), encoding: .utf8)
                    .replacingOccurrences(of: "name: hello", with: "name: \(name)").replacingOccurrences(of: "hello/INSTRUCTIONS.md", with: "hello/INSTRUCTIONS.md"))
            },
            { dir in
                let extras = try FileManager.default.contentsOfDirectory(atPath: dir.url.appendingPathComponent("agents").path).filter { $0.hasPrefix("extra-") }
                if let victim = extras.first { try FileManager.default.removeItem(at: dir.url.appendingPathComponent("agents/\(victim)")) }
            },
            { try $0.write("models/sonnet.yaml", try String(contentsOf: $0.url.appendingPathComponent("models/sonnet.yaml"), encoding: .utf8).replacingOccurrences(of: "contextWindow: 200000", with: "contextWindow: \(Int.random(in: 1000...9000))")) },
            { try $0.write("README.md", "readme \(UInt32.random(in: 0...9999))\n") },
        ]
        var modes: [LoadedCommit.Mode: Int] = [:]
        for step in 0..<24 {
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                try edits[Int.random(in: 0..<edits.count, using: &generator)](directory)
            }
            try directory.commitAll("step \(step)")
            let loaded = try reader.load("HEAD")
            modes[loaded.mode, default: 0] += 1
            try expectSameAsFresh(loaded, directory)
        }
        #expect(modes[.incremental, default: 0] > 0, "\(modes)")
    }

    func expectSameAsFresh(_ loaded: LoadedCommit, _ directory: TemporaryDirectory) throws {
        let fresh = try CommitReader(repository: directory.path, path: "", store: nil, logger: logger).load("HEAD")
        #expect(loaded.report.diagnostics == fresh.report.diagnostics)
        #expect(loaded.report.filesChecked == fresh.report.filesChecked)
        #expect(loaded.desired.agents.mapValues(\.revision) == fresh.desired.agents.mapValues(\.revision))
        #expect(Set(loaded.report.index.skills) == Set(fresh.report.index.skills))
        #expect(loaded.report.index.harnesses.count == fresh.report.index.harnesses.count)
    }
}
