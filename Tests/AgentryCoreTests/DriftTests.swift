import AgentryCore
import AgentryRender
import AgentryTesting
import Foundation
import TestSupport
import Testing

/// Plan and apply measure the machines: what died, half-started, failed or runs with other
/// resources is drift, shown with its reason and repaired.
@Suite struct DriftTests {
    func plan(_ fixture: Fixture) async throws -> Plan {
        try #require(try await Planning(fixture.ports).plan(fixture.target, options: PlanOptions()).document).plan
    }

    @Test func aDeadMachineIsARestartWithHowItDied() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        #expect(try await !plan(fixture).hasChanges)
        fixture.fakes.machines.crash("greeter", status: 137, signal: nil)
        let drifted = try await plan(fixture)
        let action = try #require(drifted.actions.first)
        #expect(drifted.hasChanges && action.action == .restart)
        #expect(
            action.reasons == [Change(field: "machine", old: "died (exit 137 at 2027-01-15T08:00:00Z)", new: "running")]
        )
        #expect(PlanOutput.summary(drifted) == "1 to restart")
        _ = try await fixture.apply()
        #expect(fixture.fakes.machines.isRunning("greeter"))
        #expect(try await !plan(fixture).hasChanges)
    }

    @Test func aMachineRunningWithOtherResourcesIsRestartedWithTheApplied() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        fixture.fakes.machines.alter("greeter", memoryMiB: 384)
        let action = try #require(try await plan(fixture).actions.first)
        #expect(
            action.action == .restart && action.reasons == [Change(field: "machine.memory", old: "384Mi", new: "192Mi")]
        )
        let status = try await StatusReport.collect(
            repository: fixture.repo.path, ref: "HEAD", path: "", agent: nil, ports: fixture.ports)
        #expect(status.rows.first?.health?.state == .drifted)
        _ = try await fixture.apply()
        #expect(fixture.fakes.machines.machine("greeter")?.spec.memoryMiB == 192)
    }

    /// An apply that died after starting the machine and before configuring it left it `starting`:
    /// the next plan repairs it (configuration pushed, no reboot).
    @Test func aHalfConfiguredMachineIsRepairedWithoutAReboot() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        let state = fixture.fakes.state
        let lock = try state.lockForWriting()
        var record = try #require(try state.agent("greeter"))
        record.machineState = "starting"
        try state.save(record)
        lock.release()
        try fixture.fakes.machines.putFileForTest("greeter", "/agent/.agentry/config.digest", "stale\n")
        let action = try #require(try await plan(fixture).actions.first)
        #expect(action.action == .repair && action.reasons.first?.old == "starting (the last apply did not finish)")
        fixture.fakes.machines.clearCalls()
        let outcome = try await fixture.apply()
        #expect(outcome.steps.first?.action == .repair && outcome.steps.first?.failed == false)
        #expect(!fixture.fakes.machines.calls.contains { $0.hasPrefix("stop") || $0.hasPrefix("start") })
        #expect(fixture.fakes.machines.text("greeter", "/agent/.agentry/config.digest") != "stale\n")
        #expect(try state.agent("greeter")?.machineState == "running")
    }

    @Test func aFailedMachineIsRestartedAndSaysWhyItFailed() async throws {
        let fixture = try Fixture()
        try fixture.agent("mute")
        try fixture.commit()
        fixture.fakes.machines.neverReportsIn("mute")
        _ = try await fixture.apply(ApplyOptions(bootTimeout: .seconds(1), actor: "ci"))
        let action = try #require(try await plan(fixture).actions.first)
        #expect(action.action == .create, "a create that did not finish is a create again")
        #expect(action.notes.contains("the last apply did not finish creating it"))
        let status = try await StatusReport.collect(
            repository: fixture.repo.path, ref: "HEAD", path: "", agent: nil, ports: fixture.ports)
        #expect(status.rows.first?.sync == .notApplied)
    }

    @Test func aPausedAgentsRunningMachineIsStoppedAgain() async throws {
        let fixture = try Fixture()
        try fixture.agent("sleepy", lifecycle: "paused")
        try fixture.commit()
        _ = try await fixture.apply()
        #expect(!fixture.fakes.machines.isRunning("sleepy"))
        _ = try fixture.fakes.machines.start(fixture.fakes.machines.machine("sleepy")!.spec)
        let action = try #require(try await plan(fixture).actions.first)
        #expect(action.action == .pause && action.reasons == [Change(field: "machine", old: "running", new: "stopped")])
        _ = try await fixture.apply()
        #expect(!fixture.fakes.machines.isRunning("sleepy"))
    }

    /// A new disk owes the agent its memory, journalled: an apply that dies after making the disk
    /// and before restoring still restores on the next apply.
    @Test func theMemoryRestoreIsJournalledAcrossAFailedApply() async throws {
        let fixture = try Fixture()
        try fixture.agent("keeper", deletionPolicy: "delete")
        try fixture.agent("other")
        try fixture.commit()
        _ = try await fixture.apply()
        fixture.fakes.machines.setHarness { _ in .init(writes: ["/agent/memory/notes.md": Array("remember me\n".utf8)])
        }
        _ = try await fixture.run("keeper")
        // The agent leaves and comes back (its disk removed): the new disk's first apply fails.
        try fixture.remove("agents/keeper.yaml")
        try fixture.commit()
        _ = try await fixture.apply()
        #expect(!fixture.fakes.machines.diskExists("keeper"))
        try fixture.agent("keeper", deletionPolicy: "delete")
        try fixture.commit()
        fixture.fakes.machines.neverReportsIn("keeper")
        let failed = try await fixture.apply(ApplyOptions(bootTimeout: .seconds(1), actor: "ci"))
        #expect(failed.steps.first?.failed == true)
        #expect(try fixture.fakes.state.agent("keeper")?.restorePending == true)
        fixture.fakes.machines.reportsIn("keeper")
        let again = try await fixture.apply()
        #expect(again.steps.first?.detail.contains("memory restored from run") == true, "\(again.steps)")
        #expect(fixture.fakes.machines.text("keeper", "/agent/memory/notes.md") == "remember me\n")
        #expect(try fixture.fakes.state.agent("keeper")?.restorePending == false)
    }

    /// An apply killed before committing its audit record leaves it journalled; the next apply
    /// commits it, marked interrupted.
    @Test func anInterruptedApplysAuditRecordIsCommittedByTheNext() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        let state = fixture.fakes.state
        let lock = try state.lockForWriting()
        try state.beginAudit(
            PendingAudit(
                id: "x", desiredCommit: String(repeating: "a", count: 40), ref: "HEAD", summary: "1 to create",
                actor: "ci", repository: fixture.repo.path, branch: "agentry/history",
                startedAt: Date(timeIntervalSince1970: 0),
                steps: ["create greeter: done"]))
        lock.release()
        _ = try await fixture.apply()
        let audits = fixture.fakes.history.all.filter { $0.files.first?.path.hasPrefix("applies/") == true }
        #expect(audits.count == 2)
        let interrupted = String(decoding: audits[0].files[0].bytes, as: UTF8.self)
        #expect(interrupted.contains("interrupted: ") && interrupted.contains("create greeter: done"))
        #expect(try state.pendingAudits().isEmpty)
    }

    /// Every pair of change kinds in one commit: after the apply, the machine matches the desired
    /// state in every dimension (resources, configuration, harness).
    @Test(arguments: DriftTests.pairs)
    func twoKindsOfChangeAtOnceAreBothCarriedOut(_ pair: Pair) async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        for change in [pair.first, pair.second] { try change.apply(fixture) }
        try fixture.commit()
        let outcome = try await fixture.apply()
        #expect(outcome.steps.allSatisfy { !$0.failed }, "\(outcome.steps)")
        let machine = try #require(fixture.fakes.machines.machine("greeter"))
        for change in [pair.first, pair.second] { try change.check(fixture, machine) }
        #expect(try await !plan(fixture).hasChanges, "converged in one apply")
    }

    enum Kind: String, CaseIterable, Sendable {
        case instructions, memory, cpus, network, harness, packages

        func apply(_ fixture: Fixture) throws {
            switch self {
            case .instructions:
                let file = fixture.repo.url.appendingPathComponent("agents/greeter.yaml")
                let text = try String(contentsOf: file, encoding: .utf8)
                try fixture.write(
                    "agents/greeter.yaml", text.replacingOccurrences(of: "Greet people.", with: "Greet warmly."))
            case .memory, .cpus, .network, .packages:
                let file = fixture.repo.url.appendingPathComponent("environments/tiny.yaml")
                var text = try String(contentsOf: file, encoding: .utf8)
                switch self {
                case .memory: text = text.replacingOccurrences(of: "memory: 192Mi", with: "memory: 320Mi")
                case .cpus: text = text.replacingOccurrences(of: "cpus: 1", with: "cpus: 2")
                case .network: text = text.replacingOccurrences(of: "}}\n", with: "}, network: {egress: all}}\n")
                default:
                    text = text.replacingOccurrences(
                        of: "base: minimal", with: "base: debian-12, packages: {apt: [git]}")
                }
                try fixture.write("environments/tiny.yaml", text)
            case .harness:
                let file = fixture.repo.url.appendingPathComponent("harnesses/shell.yaml")
                let text = try String(contentsOf: file, encoding: .utf8)
                try fixture.write(
                    "harnesses/shell.yaml", text.replacingOccurrences(of: "version: \"1\"", with: "version: \"2\""))
            }
        }

        func check(_ fixture: Fixture, _ machine: FakeMachines.Machine) throws {
            switch self {
            case .instructions: #expect(machine.files["/agent/AGENTS.md"] == Array("Greet warmly.".utf8))
            case .memory: #expect(machine.spec.memoryMiB == 320)
            case .cpus: #expect(machine.spec.cpus == 2)
            case .network: #expect(machine.spec.egress == .unrestricted)
            case .packages: #expect(machine.spec.packages == ["git"] && machine.spec.base == "debian-12")
            case .harness:
                let identity = String(decoding: machine.files["/agent/.agentry/agent.json"] ?? [], as: UTF8.self)
                let revision = try #require(try fixture.fakes.state.agent("greeter")?.appliedRevision)
                #expect(identity.contains(revision), "the configuration of the new revision is in the machine")
            }
            #expect(machine.running)
        }
    }

    struct Pair: Sendable, CustomTestStringConvertible {
        var first: Kind
        var second: Kind
        var testDescription: String { "\(first.rawValue) + \(second.rawValue)" }
    }

    static let pairs: [Pair] = Kind.allCases.enumerated().flatMap { index, first in
        Kind.allCases.dropFirst(index + 1).map { Pair(first: first, second: $0) }
    }
}
