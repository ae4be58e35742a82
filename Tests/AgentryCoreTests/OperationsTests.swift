import AgentryCore
import AgentryTesting
import Foundation
import Synchronization
import TestSupport
import Testing

/// Exec, kill, unkill and status against fake machines.
@Suite struct OperationsTests {
    @Test func execPassesStatusAndOutputAndSaysWhyItCannot() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.agent("sleepy", lifecycle: "paused")
        try fixture.commit()
        let operations = Operations(fixture.ports)
        await #expect {
            try await operations.exec(agent: "greeter", argv: ["true"], timeout: nil, output: { _, _ in })
        } throws: {
            ($0 as? CoreError)?.code == .notFound
        }
        _ = try await fixture.apply()
        fixture.fakes.machines.setHarness { command in
            .init(stdout: command.argv.joined(separator: " ") + "\n", status: 7)
        }
        let output = Mutex("")
        let status = try await operations.exec(
            agent: "greeter", argv: ["uname", "-a"], timeout: .seconds(5),
            output: { _, bytes in output.withLock { $0 += String(decoding: bytes, as: UTF8.self) } })
        #expect(status == 7 && output.withLock { $0 } == "uname -a\n")
        await #expect {
            try await operations.exec(agent: "sleepy", argv: ["true"], timeout: nil, output: { _, _ in })
        } throws: {
            ($0 as? CoreError)?.code == .agentBlocked && "\($0)".contains("paused")
        }
        await #expect {
            try await operations.exec(agent: "nobody", argv: ["true"], timeout: nil, output: { _, _ in })
        } throws: {
            ($0 as? CoreError)?.code == .notFound && "\($0)".contains("no agent nobody has been applied")
        }
        fixture.fakes.machines.crash("greeter")
        await #expect {
            try await operations.exec(agent: "greeter", argv: ["true"], timeout: nil, output: { _, _ in })
        } throws: {
            ($0 as? CoreError)?.code == .machineNotRunning
        }
    }

    @Test func killStopsAtOnceAndIsRecordedUntilLifted() async throws {
        let fixture = try Fixture()
        try fixture.agent("rogue")
        try fixture.commit()
        _ = try await fixture.apply()
        let operations = Operations(fixture.ports)
        try await operations.kill(
            agent: "rogue", reason: "leaking tokens", actor: "ana", repository: nil, warn: { _ in })
        #expect(!fixture.fakes.machines.isRunning("rogue"))
        #expect(try fixture.fakes.state.killSwitch("rogue")?.reason == "leaking tokens")
        // Killing again keeps the first reason and who, and says so.
        let earlier = try await operations.kill(
            agent: "rogue", reason: "another reason", actor: "bo", repository: nil, warn: { _ in })
        #expect(earlier?.reason == "leaking tokens" && earlier?.actor == "ana")
        #expect(try fixture.fakes.state.killSwitch("rogue")?.actor == "ana")
        // A name nobody knows is refused, unless forced.
        await #expect {
            try await operations.kill(
                agent: "rouge", reason: "typo", actor: "ana", repository: fixture.repo.path, warn: { _ in })
        } throws: {
            ($0 as? CoreError)?.code == .notFound && "\($0)".contains("kill --force rouge")
        }
        #expect(try fixture.fakes.state.killSwitch("rouge") == nil)
        try await operations.kill(
            agent: "future", reason: "not yet", actor: "ana", repository: fixture.repo.path, force: true, warn: { _ in }
        )
        #expect(try fixture.fakes.state.killSwitch("future") != nil)
        let event = try #require(fixture.fakes.history.all.filter { $0.message.contains("rogue-kill") }.last)
        #expect(
            event.files.first?.path.hasPrefix("events/") == true && event.message.hasPrefix("kill rogue-kill by ana"))
        #expect(event.location.repository == fixture.repo.path, "recorded where the last apply read")
        let report = try await StatusReport.collect(
            repository: fixture.repo.path, ref: "HEAD", path: "", agent: nil, ports: fixture.ports)
        #expect(report.rows.first?.health?.state == .killed)
        #expect(report.rows.first?.health?.detail == "leaking tokens, by ana")
        let plan = try #require(try await Planning(fixture.ports).plan(fixture.target, options: PlanOptions()).document)
        #expect(plan.plan.actions.first?.action == .blocked && !plan.plan.hasChanges)
        #expect(plan.plan.actions.first?.notes.first == "killed by ana: leaking tokens (agentry unkill rogue lifts it)")

        let blocked = try await fixture.apply()
        #expect(blocked.steps.first?.detail.contains("blocked by the kill switch") == true)
        #expect(!fixture.fakes.machines.isRunning("rogue"))
        #expect(try await operations.unkill(agent: "rogue", actor: "ana", repository: nil, warn: { _ in }))
        #expect(
            try await !operations.unkill(agent: "rogue", actor: "ana", repository: nil, warn: { _ in }),
            "unkilling an agent that is not killed changes nothing")
        _ = try await fixture.apply()
        #expect(fixture.fakes.machines.isRunning("rogue"))
    }

    @Test func statusSeparatesSyncFromHealthAndNamesWhatItComparedWith() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.agent("later")
        let commit = try fixture.commit()
        var options = ApplyOptions(actor: "ci")
        options.only = ["greeter"]
        _ = try await fixture.apply(options)
        fixture.fakes.machines.crash("greeter")
        let report = try await StatusReport.collect(
            repository: fixture.repo.path, ref: "HEAD", path: "", agent: nil, ports: fixture.ports)
        let greeter = try #require(report.rows.first { $0.name == "greeter" })
        #expect(greeter.sync == .inSync && greeter.health?.state == .died)
        #expect(greeter.health?.detail?.hasPrefix("killed by signal 9 at 2027-01-15T08:00:00Z") == true)
        #expect(report.rows.first { $0.name == "later" }?.sync == .notApplied)
        #expect(report.rows.first { $0.name == "later" }?.health == nil)
        #expect(report.commit == commit && report.repository == fixture.repo.path)
        let table = report.table
        #expect(table.split(separator: "\n").first?.hasPrefix("AGENT") == true && table.contains("died"))
        #expect(table.contains("Compared with \(fixture.repo.path) at HEAD (\(commit.prefix(12)))"))
        let json = try decodeJSON(report.json)
        let rows = try #require(json["agents"] as? [[String: Any]])
        #expect(rows.first?["sync"] as? String == "inSync" && rows.first?["health"] as? String == "died")
        #expect(rows.last?["sync"] as? String == "notApplied")
        #expect(json["commit"] as? String == commit && json["formatVersion"] as? Int == 2)

        let one = try await StatusReport.collect(
            repository: fixture.repo.path, ref: "HEAD", path: "", agent: "later", ports: fixture.ports)
        #expect(one.rows.map(\.name) == ["later"])
        await #expect {
            try await StatusReport.collect(
                repository: fixture.repo.path, ref: "HEAD", path: "", agent: "nobody", ports: fixture.ports)
        } throws: { ($0 as? CoreError)?.code == .notFound }
    }
}

/// One operation at a time per agent; different agents in parallel.
@Suite struct AgentLanesTests {
    @Test func operationsOnOneAgentTakeTurnsAndOthersDoNot() async throws {
        let lanes = AgentLanes()
        let log = Mutex<[String]>([])
        let inside = Mutex<[String: Int]>([:])
        let overlapSeen = Mutex(false)
        let operation: @Sendable (String, Int) async throws -> Void = { agent, index in
            try await lanes.withLane(agent) {
                let now = inside.withLock { counts -> Int in
                    counts[agent, default: 0] += 1
                    return counts[agent]!
                }
                if now > 1 { overlapSeen.withLock { $0 = true } }
                log.withLock { $0.append("\(agent)\(index) in") }
                for _ in 0..<5 { await Task.yield() }
                log.withLock { $0.append("\(agent)\(index) out") }
                inside.withLock { $0[agent, default: 0] -= 1 }
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<6 {
                group.addTask { try await operation("a", index) }
                group.addTask { try await operation("b", index) }
            }
            try await group.waitForAll()
        }
        #expect(!overlapSeen.withLock { $0 }, "two operations held one agent's lane at once")
        let entries = log.withLock { $0 }
        #expect(entries.count == 24)
        let busyA = await lanes.isBusy("a")
        let busyB = await lanes.isBusy("b")
        #expect(!busyA && !busyB)
        // Each agent's entries alternate in, out.
        for agent in ["a", "b"] {
            let own = entries.filter { $0.hasPrefix(agent) }
            for (index, entry) in own.enumerated() { #expect(entry.hasSuffix(index % 2 == 0 ? " in" : " out")) }
        }
    }

    @Test func aFailingOperationReleasesItsLane() async throws {
        let lanes = AgentLanes()
        await #expect(throws: CoreError.self) {
            try await lanes.withLane("a") { () async throws -> Int in throw CoreError(.internalFailure, "boom") }
        }
        let value = try await lanes.withLane("a") { 1 }
        #expect(value == 1)
    }

    /// Names a guest lists for `cp` become host paths only when they stay under the destination.
    @Test func onlyPlainRelativeNamesFromAGuestBecomeHostPaths() {
        for safe in ["a.txt", "deep/b.bin", "a..b", ".hidden/x"] { #expect(Copy.isSafeRelative(safe), "\(safe)") }
        for unsafe in [
            "", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "new\nline", "tab\there", "del\u{7F}",
        ] {
            #expect(!Copy.isSafeRelative(unsafe), "\(unsafe.debugDescription)")
        }
        #expect(Copy.guestPath("notes") == "/agent/notes" && Copy.guestPath("/tmp/x") == "/tmp/x")
        #expect(Copy.guestPath("") == "/agent")
        for gitPart in [".git/config", "a/.GIT/hooks/pre-commit", ".Git"] {
            #expect(Copy.isSafeRelative(gitPart) && !Copy.isSafeFromGuest(gitPart), "\(gitPart)")
        }
        #expect(Copy.isSafeFromGuest("a/.gitignore") && Copy.isSafeFromGuest("x.git"))
    }
}
