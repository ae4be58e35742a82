import AgentryCore
import AgentryTesting
import Foundation
import TestSupport
import Testing

/// The service's reconcile loop against fake machines: what it applies, what it refuses, and an
/// agent that keeps failing waiting its turn while the others converge.
@Suite struct ReconcilerTests {
    func reconciler(_ fixture: Fixture, interval: Duration = .seconds(60)) -> Reconciler {
        Reconciler(
            ports: fixture.ports,
            settings: .init(
                target: fixture.target, interval: interval, historyBranch: "agentry/history", parallelism: 2))
    }

    func condition(_ reconciler: Reconciler, _ agent: String, _ kind: AgentCondition.Kind) async -> AgentCondition? {
        await reconciler.conditions(of: agent).first { $0.kind == kind }
    }

    @Test func aPassAppliesAndAnInvalidCommitStallsEveryAgentWithoutApplying() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        let first = try fixture.commit()
        let loop = reconciler(fixture)
        await loop.pass()
        #expect(fixture.fakes.machines.machine("alpha")?.running == true)
        let ready = await condition(loop, "alpha", .ready)
        #expect(ready?.status == true && ready?.reason == "Applied" && ready?.observedCommit == first)
        #expect(await loop.lastPass?.result == "applied")

        // Nothing changed: in sync, the Ready condition keeps the time it became true.
        await loop.pass()
        #expect(await condition(loop, "alpha", .ready)?.reason == "InSync")
        #expect(await condition(loop, "alpha", .ready)?.since == ready?.since)
        #expect(await loop.lastPass?.result == "noChanges")

        // A broken commit: nothing is applied, and the agent says why.
        try fixture.write(
            "agents/alpha.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: alpha}\nspec: {harness: 3}\n")
        _ = try fixture.commit("broken")
        let applied = try fixture.fakes.state.agent("alpha")?.appliedRevision
        await loop.pass()
        let stalled = await condition(loop, "alpha", .stalled)
        #expect(stalled?.status == true && stalled?.reason == "ValidationFailed", "\(String(describing: stalled))")
        #expect(stalled?.message.contains("agents/alpha.yaml") == true)
        #expect(await condition(loop, "alpha", .ready)?.status == false)
        #expect(try fixture.fakes.state.agent("alpha")?.appliedRevision == applied, "nothing was applied")
        #expect(await loop.lastPass?.result == "invalid")
    }

    @Test func anAgentThatKeepsFailingWaitsWhileOthersConverge() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        try fixture.agent("beta")
        _ = try fixture.commit()
        fixture.fakes.machines.failPrepare("beta", "the disk cannot be made")
        let loop = reconciler(fixture, interval: .seconds(3600))
        await loop.pass()
        #expect(await condition(loop, "alpha", .ready)?.status == true)
        let stalled = await condition(loop, "beta", .stalled)
        #expect(stalled?.status == true && stalled?.reason == "ApplyFailed", "\(String(describing: stalled))")
        #expect(await loop.lastPass?.result == "partlyFailed")

        // The next pass leaves beta alone (its backoff is an interval, an hour here); alpha carries on.
        fixture.fakes.machines.clearCalls()
        fixture.fakes.machines.crash("alpha")
        await loop.pass()
        #expect(fixture.fakes.machines.machine("alpha")?.running == true, "alpha's dead machine was restarted")
        #expect(!fixture.fakes.machines.calls.contains { $0.contains("beta") }, "\(fixture.fakes.machines.calls)")
        #expect(await condition(loop, "beta", .stalled)?.status == true)
    }
}
