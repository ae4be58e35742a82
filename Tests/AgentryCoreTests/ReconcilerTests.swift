import AgentryCore
import AgentryTesting
import Foundation
import Synchronization
import TestSupport
import Testing

/// The service's reconcile loop against fake machines: what it applies, what it refuses, and an
/// agent that keeps failing waiting its turn while the others converge.
@Suite struct ReconcilerTests {
    func reconciler(
        _ fixture: Fixture, interval: Duration = .seconds(60),
        onStalled: (@Sendable (String, AgentCondition) async -> Void)? = nil
    ) -> Reconciler {
        Reconciler(
            ports: fixture.ports,
            settings: .init(
                target: fixture.target, interval: interval, historyBranch: "agentry/history", parallelism: 2),
            onStalled: onStalled)
    }

    func condition(_ reconciler: Reconciler, _ agent: String, _ kind: AgentCondition.Kind) async -> AgentCondition? {
        await reconciler.conditions(of: agent).first { $0.kind == kind }
    }

    @Test func aPassAppliesAndAnInvalidCommitStallsEveryAgentWithoutApplying() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        let first = try fixture.commit()
        let told = Mutex<[String]>([])
        let loop = reconciler(
            fixture, onStalled: { agent, condition in told.withLock { $0.append("\(agent) \(condition.reason)") } })
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
        // Told once, when it turned Stalled, not again while it stays so.
        await loop.pass()
        #expect(told.withLock { $0 } == ["alpha ValidationFailed"])
    }

    /// A service started again finds its agents' conditions as the last one left them: an agent still
    /// Stalled is not announced again, and each condition keeps the time of its transition.
    @Test func aRestartedLoopKeepsItsConditionsAndTellsOnlyNewStalls() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        _ = try fixture.commit()
        let store = InMemoryServiceStore()
        let told = Mutex<[String]>([])
        func loop() -> Reconciler {
            Reconciler(
                ports: fixture.ports,
                settings: .init(
                    target: fixture.target, interval: .seconds(60), historyBranch: "agentry/history", parallelism: 2),
                store: store,
                onStalled: { agent, condition in told.withLock { $0.append("\(agent) \(condition.reason)") } })
        }
        let first = loop()
        await first.pass()
        try fixture.write(
            "agents/alpha.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: alpha}\nspec: {harness: 3}\n")
        _ = try fixture.commit("broken")
        await first.pass()
        let stalled = await condition(first, "alpha", .stalled)
        #expect(stalled?.status == true && told.withLock { $0 } == ["alpha ValidationFailed"])

        let second = loop()
        await second.pass()
        #expect(await condition(second, "alpha", .stalled) == stalled, "the same condition, since the same time")
        #expect(told.withLock { $0 } == ["alpha ValidationFailed"], "not announced again")

        // Mended, then broken again: a new transition, told.
        try fixture.agent("alpha")
        _ = try fixture.commit("mended")
        await second.pass()
        #expect(await condition(second, "alpha", .ready)?.status == true)
        try fixture.write(
            "agents/alpha.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: alpha}\nspec: {harness: 4}\n")
        _ = try fixture.commit("broken again")
        await loop().pass()
        #expect(told.withLock { $0 } == ["alpha ValidationFailed", "alpha ValidationFailed"])
    }

    /// A loop that follows a remote (here a bare repository as a server keeps it) through a mirror.
    func following(_ fixture: Fixture, _ url: String, patience: Duration = .seconds(60)) throws -> (
        Reconciler, TemporaryDirectory
    ) {
        let home = try TemporaryDirectory("agentry-mirror")
        let loop = Reconciler(
            ports: fixture.ports,
            settings: .init(
                target: .init(repository: home.path + "/mirror.git", ref: "HEAD", path: ""), interval: .seconds(60),
                historyBranch: "agentry/history", parallelism: 2, upstream: Upstream(url: url, branch: "main"),
                fetchPatience: patience))
        return (loop, home)
    }

    @Test func aRemoteIsFetchedEveryPassAndAFailedFetchLeavesTheMirrorAsItWas() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        let first = try fixture.commit()
        let remote = try TemporaryDirectory("agentry-remote")
        try Shell.git(["init", "-q", "--bare", remote.path], in: remote.url)
        func publish() throws {
            try Shell.git(["push", "-q", "--force", remote.path, "HEAD:refs/heads/main"], in: fixture.repo.url)
        }
        let (loop, home) = try following(fixture, remote.path)
        // Nothing pushed yet: nothing to reconcile, and the service is not ready.
        await loop.pass()
        #expect(await loop.lastPass?.result == "fetchFailed")
        #expect(await loop.lastPass?.message.contains("has no branch main") == true)
        #expect(await loop.notReady != nil)
        #expect(await loop.source?.error?.contains("has no branch main") == true)

        try publish()
        await loop.pass()
        let applied = await loop.lastPass
        #expect(applied?.result == "applied", "\(String(describing: applied))")
        #expect(await loop.notReady == nil)
        let fetched = await loop.source
        #expect(fetched?.commit == first && fetched?.error == nil)
        #expect(fixture.fakes.machines.machine("alpha")?.running == true)
        #expect(await condition(loop, "alpha", .ready)?.observedCommit == first)

        // A push: the next pass fetches and applies it.
        try fixture.agent("beta")
        let second = try fixture.commit("beta")
        try publish()
        await loop.pass()
        #expect(await loop.source?.commit == second)
        #expect(fixture.fakes.machines.machine("beta")?.running == true)
        #expect(await condition(loop, "beta", .ready)?.observedCommit == second)

        // The remote is gone: the pass goes on from the mirror, and says why.
        try FileManager.default.removeItem(at: remote.url)
        await loop.pass()
        let pass = await loop.lastPass
        #expect(pass?.result == "noChanges" && pass?.commit == second, "\(String(describing: pass))")
        #expect(pass?.message.contains("the mirror was read as it was") == true)
        let failed = await loop.source
        #expect(failed?.error != nil && failed?.commit == second)
        #expect(await loop.notReady == nil)
        withExtendedLifetime(home) {}
    }

    /// A remote that takes the connection and never answers: the pass waits `fetchPatience`, not
    /// for ever, and no second fetch piles up behind the first.
    @Test func aRemoteThatNeverAnswersHoldsNoPass() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        _ = try fixture.commit()
        let silent = try BackgroundProcess(
            "python3",
            [
                "-c",
                "import socket,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\nprint(s.getsockname()[1], flush=True)\nheld=[]\nwhile True: held.append(s.accept())",
            ])
        let port = silent.firstLine()
        let (loop, home) = try following(fixture, "http://127.0.0.1:\(port)/agents.git", patience: .seconds(1))
        // The remote never answers, so a pass that waited for the fetch would never end: that it
        // ends, saying it stopped waiting while the fetch is still under way, is the behaviour.
        // (No bound on its time: tests share two cooperative threads, and a busy suite delays it.)
        await loop.pass()
        #expect(await loop.lastPass?.result == "fetchFailed")
        #expect(await loop.lastPass?.message.contains("did not end within 1s") == true)
        #expect(await loop.source?.fetchingSince != nil)
        await loop.pass()
        #expect(await loop.lastPass?.message.contains("has not ended") == true, "one fetch at a time")
        // The remote goes away: the fetch under way ends, and is recorded as it ended.
        withExtendedLifetime(silent) {}
        kill(silent.pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(60)
        while await loop.source?.fetchingSince != nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let ended = await loop.source
        #expect(ended?.error != nil && ended?.commit == nil, "\(String(describing: ended))")
        withExtendedLifetime(home) {}
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

    /// A suspended agent is left as it is (and says so) while the others converge; a suspended
    /// service reconciles nothing; resuming lets the next pass apply.
    @Test func suspendedAgentsAndAServiceAreLeftAsTheyAre() async throws {
        let fixture = try Fixture()
        try fixture.agent("alpha")
        try fixture.agent("beta")
        _ = try fixture.commit()
        let store = InMemoryServiceStore()
        let loop = Reconciler(
            ports: fixture.ports,
            settings: .init(
                target: fixture.target, interval: .seconds(60), historyBranch: "agentry/history", parallelism: 2),
            store: store)
        await loop.pass()
        let applied = try fixture.fakes.state.agent("alpha")?.appliedRevision
        #expect(applied != nil)

        _ = try store.suspend(Suspension(agent: "alpha", actor: "ops", reason: "investigating", since: Date()))
        try fixture.agent("alpha", instructions: "Greet nobody.")
        try fixture.agent("beta", instructions: "Greet everybody.")
        _ = try fixture.commit("both change")
        let betaBefore = try fixture.fakes.state.agent("beta")?.appliedRevision
        await loop.pass()
        #expect(try fixture.fakes.state.agent("alpha")?.appliedRevision == applied, "the suspended agent is left alone")
        #expect(try fixture.fakes.state.agent("beta")?.appliedRevision != betaBefore, "the other converges")
        let reconciling = await condition(loop, "alpha", .reconciling)
        #expect(reconciling?.status == false && reconciling?.reason == "Suspended")
        #expect(reconciling?.message.contains("investigating") == true && reconciling?.message.contains("ops") == true)

        // The whole service: nothing at all, said so.
        #expect(try store.resume(agent: "alpha"))
        _ = try store.suspend(Suspension(agent: nil, actor: "ops", reason: "maintenance", since: Date()))
        await loop.pass()
        #expect(await loop.lastPass?.result == "suspended")
        #expect(try fixture.fakes.state.agent("alpha")?.appliedRevision == applied)

        // Resumed: the next pass applies.
        #expect(try store.resume(agent: nil))
        #expect(try !store.resume(agent: nil), "nothing left to lift")
        await loop.pass()
        #expect(try fixture.fakes.state.agent("alpha")?.appliedRevision != applied)
        #expect(await condition(loop, "alpha", .ready)?.status == true)
    }
}
