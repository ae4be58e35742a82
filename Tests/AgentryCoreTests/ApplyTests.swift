import AgentryCore
import AgentryRender
import AgentryTesting
import Foundation
import Synchronization
import TestSupport
import Testing

/// Apply's logic against fake machines: every action, what the machine, the state and history see.
@Suite struct ApplyTests {
    @Test func createBootsTheMachinePushesItsConfigurationAndRecordsIt() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        let commit = try fixture.commit()
        let outcome = try await fixture.apply()
        let step = try #require(fixture.step(outcome, "greeter"))
        #expect(step.action == .create && !step.failed, "\(step.detail)")
        #expect(step.detail.hasPrefix("running (booted in 1200 ms, disk mounted)"))
        let machines = fixture.fakes.machines
        #expect(machines.calls == ["provide greeter", "prepare greeter", "start greeter"])
        #expect(machines.text("greeter", "/agent/AGENTS.md") == "Greet people.")
        let identity = try #require(machines.text("greeter", "/agent/.agentry/agent.json"))
        #expect(identity.contains("\"commit\": \"\(commit)\""))
        #expect(machines.machine("greeter")?.spec.memoryMiB == 192)

        let record = try #require(try fixture.fakes.state.agent("greeter"))
        #expect(record.machineState == "running" && record.appliedCommit == commit && record.accelerator == "tcg")
        let events = try fixture.fakes.state.events(agent: "greeter", limit: 10).map(\.message)
        #expect(events.first?.hasPrefix("create: done, running") == true && events.last == "create: started")
        let audit = try #require(fixture.fakes.history.all.last)
        #expect(audit.files.first?.path.hasPrefix("applies/") == true)
        #expect(String(decoding: audit.files[0].bytes, as: UTF8.self).contains("  - \"create greeter: done\""))
        #expect(fixture.fakes.state.heldLocks == 0, "the writer lock is released")

        // Nothing changed: nothing happens.
        machines.clearCalls()
        let again = try await fixture.apply()
        #expect(again.steps.isEmpty && machines.calls.isEmpty)
        #expect(again.plan.document?.plan.hasChanges == false)
    }

    @Test func anUpdatePushesConfigurationWithoutARestartAndDropsWhatWentAway() async throws {
        let fixture = try Fixture()
        try fixture.write("skills/greeting/SKILL.md", "---\nname: greeting\ndescription: Greets.\n---\nSay hi.\n")
        try fixture.agent("greeter", extra: ["skills: [greeting]"])
        try fixture.commit()
        _ = try await fixture.apply()
        let machines = fixture.fakes.machines
        #expect(machines.text("greeter", "/agent/skills/greeting/SKILL.md")?.contains("Say hi.") == true)
        machines.clearCalls()

        try fixture.agent("greeter", instructions: "Greet people warmly.")
        try fixture.commit()
        let outcome = try await fixture.apply()
        let step = try #require(fixture.step(outcome, "greeter"))
        #expect(step.action == .update && step.detail.contains("configuration pushed"), "\(step.detail)")
        #expect(!machines.calls.contains { $0.hasPrefix("start") || $0.hasPrefix("stop") }, "\(machines.calls)")
        #expect(machines.text("greeter", "/agent/AGENTS.md") == "Greet people warmly.")
        #expect(machines.file("greeter", "/agent/skills/greeting/SKILL.md") == nil, "a dropped skill leaves nothing")
        #expect(machines.machine("greeter")?.boots == 1)
    }

    @Test func aResourceChangeRestartsWithTheNewSizeAndTheSameDisk() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        let machines = fixture.fakes.machines
        machines.clearCalls()
        try fixture.environment(memory: "384Mi")
        try fixture.commit()
        let outcome = try await fixture.apply()
        #expect(fixture.step(outcome, "greeter")?.action == .restart)
        #expect(
            machines.calls == ["provide greeter", "stop greeter graceful", "prepare greeter", "start greeter"],
            "\(machines.calls)")
        #expect(machines.machine("greeter")?.spec.memoryMiB == 384)
        #expect(machines.machine("greeter")?.boots == 2)
        #expect(machines.text("greeter", "/agent/AGENTS.md") == "Greet people.", "the disk is kept")
    }

    @Test func aHarnessChangeReinstallsKeepingTheDisk() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        let machines = fixture.fakes.machines
        machines.clearCalls()
        try fixture.shellHarness(version: "2")
        try fixture.commit()
        let outcome = try await fixture.apply()
        let step = try #require(fixture.step(outcome, "greeter"))
        #expect(step.action == .reinstall && !step.failed, "\(step.detail)")
        #expect(!machines.calls.contains { $0.hasPrefix("removeDisk") || $0.hasPrefix("stop") }, "\(machines.calls)")
        #expect(machines.text("greeter", "/agent/.agentry/agent.json") != nil)
    }

    /// The harness layer is made before the machine is touched: one that cannot be made fails the
    /// step with what the installation said and leaves the running machine as it was.
    @Test func aHarnessThatCannotBeInstalledLeavesTheMachineRunning() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        let machines = fixture.fakes.machines
        machines.clearCalls()
        machines.failProvide("greeter", "installing the harness shell failed (exit 1): no such package")
        try fixture.shellHarness(install: #"{script: "exit 1"}"#)
        try fixture.commit()
        let outcome = try await fixture.apply()
        let step = try #require(fixture.step(outcome, "greeter"))
        #expect(step.failed && step.detail.contains("no such package"), "\(step.detail)")
        #expect(machines.calls == ["provide greeter"], "nothing but the build was tried: \(machines.calls)")
        #expect(machines.isRunning("greeter"))
    }

    @Test func aReplaceMakesANewDiskAndBringsTheMemoryBack() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        fixture.fakes.machines.setHarness { command in
            .init(stdout: "noted\n", writes: ["/agent/memory/notes.md": Array("remember me\n".utf8)])
        }
        _ = try await fixture.run("greeter")

        let machines = fixture.fakes.machines
        machines.clearCalls()
        try fixture.environment(base: "debian-12", packages: ["git"])
        try fixture.commit()
        let outcome = try await fixture.apply()
        let step = try #require(fixture.step(outcome, "greeter"))
        #expect(step.action == .replace, "\(step.detail)")
        #expect(step.detail.contains("memory restored from run"), "\(step.detail)")
        #expect(
            Array(machines.calls.prefix(4)) == [
                "provide greeter", "stop greeter graceful", "removeDisk greeter", "prepare greeter",
            ])
        #expect(machines.machine("greeter")?.spec.packages == ["git"])
        #expect(machines.text("greeter", "/agent/memory/notes.md") == "remember me\n")
    }

    @Test func pauseStopsKeepingEverythingAndDeleteFollowsTheDeletionPolicy() async throws {
        let fixture = try Fixture()
        try fixture.agent("keeper", deletionPolicy: "retain")
        try fixture.agent("tosser", deletionPolicy: "delete")
        try fixture.agent("third")
        try fixture.commit()
        _ = try await fixture.apply()
        let machines = fixture.fakes.machines

        try fixture.agent("keeper", lifecycle: "paused", deletionPolicy: "retain")
        try fixture.commit()
        let paused = try await fixture.apply()
        #expect(fixture.step(paused, "keeper")?.action == .pause)
        #expect(!machines.isRunning("keeper") && machines.diskExists("keeper"))
        #expect(try fixture.fakes.state.agent("keeper")?.machineState == "stopped")

        machines.clearCalls()
        try fixture.remove("agents/keeper.yaml")
        try fixture.commit()
        let deleted = try await fixture.apply()
        #expect(fixture.step(deleted, "keeper")?.action == .delete)
        #expect(machines.calls.contains("remove keeper keepDisk"), "\(machines.calls)")
        #expect(try fixture.fakes.state.agent("keeper") == nil)

        try fixture.remove("agents/tosser.yaml")
        try fixture.commit()
        _ = try await fixture.apply()
        #expect(machines.calls.contains("remove tosser"), "\(machines.calls)")
        #expect(!machines.diskExists("tosser"))
    }

    @Test func aMachineThatNeverReportsInFailsAloneAndSaysWhy() async throws {
        let fixture = try Fixture()
        try fixture.agent("mute")
        try fixture.agent("talker")
        try fixture.commit()
        fixture.fakes.machines.neverReportsIn("mute")
        let outcome = try await fixture.apply(ApplyOptions(bootTimeout: .seconds(5), actor: "ci"))
        let mute = try #require(fixture.step(outcome, "mute"))
        #expect(mute.failed && mute.detail.contains("did not report in within 5s"), "\(mute.detail)")
        #expect(mute.detail.contains("[fake console of mute]"), "quotes the console")
        #expect(try fixture.fakes.state.agent("mute")?.machineState == "failed")
        #expect(!fixture.fakes.machines.isRunning("mute"))
        #expect(fixture.step(outcome, "talker")?.failed == false, "the other agent is unaffected")
        #expect(
            fixture.fakes.history.all.last.map { String(decoding: $0.files[0].bytes, as: UTF8.self) }?.contains(
                "create mute: failed") == true)
    }

    @Test func aDeadMachineIsStartedAgainWithItsDisk() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        fixture.fakes.machines.crash("greeter")
        let outcome = try await fixture.apply()
        #expect(fixture.step(outcome, "greeter")?.action == .restart)
        #expect(fixture.fakes.machines.isRunning("greeter"))
        #expect(try fixture.fakes.state.events(agent: "greeter", limit: 10).contains { $0.kind == "drift" })
    }

    @Test func aKilledAgentIsNotStartedAndAMissingDiskIsNotRemadeSilently() async throws {
        let fixture = try Fixture()
        try fixture.agent("rogue")
        try fixture.agent("lost")
        try fixture.commit()
        _ = try await fixture.apply()
        try await Operations(fixture.ports).kill(
            agent: "rogue", reason: "leaking", actor: "ana", repository: nil, warn: { _ in })
        #expect(!fixture.fakes.machines.isRunning("rogue"))
        try fixture.fakes.machines.removeDisk("lost")
        let outcome = try await fixture.apply()
        #expect(fixture.step(outcome, "rogue")?.detail.contains("blocked by the kill switch") == true)
        #expect(!fixture.fakes.machines.isRunning("rogue"))
        let lost = try #require(fixture.step(outcome, "lost"))
        #expect(lost.failed && lost.detail.contains("is missing"), "\(lost.detail)")
        var options = ApplyOptions(actor: "ci")
        options.recreateMissingDisks = true
        let recreated = try await fixture.apply(options)
        #expect(fixture.step(recreated, "lost")?.failed == false)
    }

    @Test func aSavedPlanIsRefusedOnceTheActualStateMoved() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        let planned = try #require(
            try await Planning(fixture.ports).plan(fixture.target, options: PlanOptions(), emptyState: true).document)
        let saved = try SavedPlan.parse(Array(PlanOutput.json(planned).utf8), name: "plan.json")
        _ = try await fixture.apply()
        await #expect {
            try await Apply(fixture.ports).run(
                .init(target: fixture.target, savedPlan: saved, options: ApplyOptions(actor: "ci")))
        } throws: { error in
            (error as? CoreError)?.code == .planStale && "\(error)".contains("plan again")
        }
        #expect(throws: CoreError.self) { try SavedPlan.parse(Array("{}".utf8), name: "x.json") }
    }

    @Test func anotherWritersLockStopsApplyAtOnce() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        fixture.fakes.state.lockedByAnotherProcess = true
        await #expect { try await fixture.apply() } throws: { ($0 as? CoreError)?.code == .stateLocked }
        #expect(fixture.fakes.machines.calls.isEmpty)
    }

    /// A commit that adds many agents queues their boots: at most `parallelism` at once.
    @Test func bootsAreBoundedByParallelism() async throws {
        let fixture = try Fixture()
        for index in 0..<12 { try fixture.agent("many-\(index)") }
        try fixture.commit()
        fixture.fakes.machines.setBootTime(microseconds: 20_000)
        let outcome = try await fixture.apply(ApplyOptions(actor: "ci", parallelism: 3))
        #expect(
            outcome.steps.count == 12 && outcome.steps.allSatisfy { !$0.failed }, "\(outcome.steps.filter(\.failed))")
        #expect(fixture.fakes.machines.mostBootingAtOnce <= 3)
        #expect(fixture.fakes.machines.mostBootingAtOnce >= 2, "boots of different agents still overlap")
        #expect(ApplyOptions(actor: "ci").parallelism == ApplyOptions.defaultParallelism)
    }

    /// An apply whose guest is stuck in its boot holds no lock on the state meanwhile: another apply
    /// of the same repository (another process) carries out the rest, leaves the stuck agent to the
    /// apply that has it, and ends; the first ends once the guest reports in.
    @Test func anotherApplyGoesOnBesideAStuckGuest() async throws {
        let fixture = try Fixture()
        try fixture.agent("stuck")
        try fixture.agent("other")
        try fixture.commit()
        let machines = fixture.fakes.machines
        machines.holdBoot("stuck")
        let first = Task { try await fixture.apply() }
        try await waitUntil("the first apply is booting stuck and has done other", seconds: 120) {
            try machines.isBooting("stuck") && fixture.fakes.state.agent("other")?.machineState == "running"
        }
        #expect(fixture.fakes.state.heldLocks == 0, "no writer lock while a guest boots")
        #expect(machines.runLockHolder("stuck")?.kind == .apply)

        try fixture.agent("other", instructions: "Greet people twice.")
        try fixture.commit()
        // Another process: its own lanes, its own process id.
        var elsewhere = fixture.fakes.ports(source: fixture.ports.source)
        elsewhere.host.processID = 4243
        let second = try await Apply(elsewhere).run(.init(target: fixture.target, options: ApplyOptions(actor: "ci")))
        let skipped = try #require(fixture.step(second, "stuck"))
        #expect(skipped.skipped && !skipped.failed, "\(skipped)")
        #expect(skipped.detail == "an apply (process \(getpid())) is carrying it out", "\(skipped.detail)")
        #expect(fixture.step(second, "other")?.action == .update && fixture.step(second, "other")?.failed == false)
        #expect(machines.text("other", "/agent/AGENTS.md") == "Greet people twice.")
        #expect(machines.isBooting("stuck"), "the second apply did not wait for the stuck guest")
        let audits = fixture.fakes.history.all.filter { $0.files.first?.path.hasPrefix("applies/") == true }
        #expect(audits.count == 1, "the first apply's audit is its own to commit, not marked interrupted")

        machines.releaseBoot("stuck")
        let firstOutcome = try await first.value
        #expect(fixture.step(firstOutcome, "stuck")?.failed == false)
        #expect(try fixture.fakes.state.agent("stuck")?.machineState == "running")
        #expect(machines.machine("stuck")?.boots == 1)
        let all = fixture.fakes.history.all.filter { $0.files.first?.path.hasPrefix("applies/") == true }
        #expect(all.count == 2)
        #expect(!all.contains { String(decoding: $0.files[0].bytes, as: UTF8.self).contains("interrupted: ") })
    }

    /// Two applies wait for the same run; whichever gets the agent first carries out its step, and
    /// the other finds it done and leaves it (one boot, no failure).
    @Test func aStepThatWaitedFindsItsWorkDoneByAnotherApply() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        let machines = fixture.fakes.machines
        let run = machines.holdRunLock("greeter")
        let waiting = Mutex(0)
        let progress: @Sendable (String) -> Void = { line in
            if line.contains("busy with a run (process 4242)") { waiting.withLock { $0 += 1 } }
        }
        // Two processes: each its own lanes.
        let (onePorts, twoPorts) = (
            fixture.fakes.ports(source: fixture.ports.source), fixture.fakes.ports(source: fixture.ports.source)
        )
        let request = Apply.Request(target: fixture.target, options: ApplyOptions(actor: "ci"))
        // The second plans once the first is past planning (planning takes the writer lock).
        let one = Task { try await Apply(onePorts, progress: progress).run(request) }
        try await waitUntil("the first apply waits for the run", seconds: 120) { waiting.withLock { $0 } == 1 }
        let two = Task { try await Apply(twoPorts, progress: progress).run(request) }
        try await waitUntil("both applies wait for the run", seconds: 120) { waiting.withLock { $0 } == 2 }
        run.release()
        let steps = [try await one.value, try await two.value].compactMap { fixture.step($0, "greeter") }
        #expect(steps.count == 2 && steps.allSatisfy { !$0.failed }, "\(steps)")
        #expect(steps.filter(\.skipped).map(\.detail) == ["another apply carried it out meanwhile"])
        #expect(machines.machine("greeter")?.boots == 1)
        #expect(try fixture.fakes.state.agent("greeter")?.machineState == "running")
    }
}

extension ApplyTests {
    /// A plan shows changed instructions as a unified diff against the text that was applied.
    @Test func aPlanShowsChangedInstructionsAgainstWhatWasApplied() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter", instructions: "Greet people.\nBe brief.")
        try fixture.commit()
        _ = try await fixture.apply()
        try fixture.agent("greeter", instructions: "Greet people.\nBe warm.")
        try fixture.commit()
        let document = try #require(
            try await Planning(fixture.ports).plan(fixture.target, options: PlanOptions()).document)
        let change = try #require(document.textChanges.first)
        #expect(change.path == "agents/greeter.yaml: instructions" && change.agents == ["greeter"])
        #expect(change.unifiedDiff.suffix(3) == [" Greet people.", "-Be brief.", "+Be warm."], "\(change.unifiedDiff)")
        #expect(PlanOutput.markdown(document).contains("```diff\n--- a/agents/greeter.yaml: instructions"))
    }
}
