import AgentryCore
import AgentryRender
import AgentryTesting
import Foundation
import Synchronization
import TestSupport
import Testing

/// Run's logic against fake machines: records, secrets, timeouts, installs, refusals.
@Suite struct RunTests {
    @Test func aRunIsRecordedWithItsLogArtifactsAndMemory() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        let commit = try fixture.commit()
        let seen = Mutex<[String]>([])
        fixture.fakes.machines.setHarness { command in
            seen.withLock {
                $0 = command.argv + [command.environment["MODEL"] ?? "-", command.environment["AGENTRY_RUN_ID"] ?? "-"]
            }
            return .init(
                stdout: "hello from the harness\n", stderr: "to-err\n", status: 3,
                writes: [
                    "/agent/out/result.txt": Array("42\n".utf8),
                    "/agent/out/big.bin": [UInt8](repeating: 0, count: 300_000),
                    "/agent/memory/notes.md": Array("kept\n".utf8),
                ])
        }
        let output = Mutex<[UInt8]>([])
        let outcome = try await Runner(
            fixture.ports, progress: { _ in }, output: { _, bytes in output.withLock { $0 += bytes } }
        )
        .run(
            .init(
                agent: "greeter", target: fixture.target, prompt: nil, timeout: nil, actor: "ana",
                historyBranch: "agentry/history"))
        let record = outcome.record
        #expect(
            seen.withLock { $0 }.prefix(3) == ["/bin/sh", "-c", "echo hello there"],
            "the prompt is rendered into the command")
        #expect(seen.withLock { $0 }[3] == "m" && seen.withLock { $0 }[4] == record.runID)
        #expect(String(decoding: output.withLock { $0 }, as: UTF8.self).contains("hello from the harness"))
        #expect(
            record.exitStatus == 3 && !record.timedOut && record.desiredCommit == commit && record.triggeredBy == "ana")
        #expect(record.artifacts.map(\.path) == ["out/big.bin", "out/result.txt"])
        #expect(record.artifacts.first { $0.path == "out/big.bin" }?.stored == false, "large artifacts by digest only")
        #expect(record.memoryFiles == 1)

        let commitFiles = try #require(fixture.fakes.history.all.last).files.map(\.path)
        #expect(commitFiles.contains("runs/greeter/\(record.runID)/record.yaml"))
        #expect(commitFiles.contains("runs/greeter/\(record.runID)/artifacts/result.txt"))
        #expect(commitFiles.contains("runs/greeter/\(record.runID)/memory/notes.md"))
        let history = HistoryQueries(fixture.ports)
        let location = HistoryLocation(repository: fixture.repo.path, branch: "agentry/history")
        let shown = try history.run(String(record.runID.prefix(15)), in: location)
        #expect(shown.record.exitStatus == 3 && shown.log.contains("to-err"))
        #expect(try history.latestLog(agent: "greeter", in: location) == shown.log)
        #expect(try fixture.fakes.state.agent("greeter")?.lastRunAt == record.endedAt)
        #expect(try fixture.fakes.state.events(agent: "greeter", limit: 1).first?.kind == "run")
    }

    @Test func secretsReachTheHarnessAndNothingElse() async throws {
        let token = "tok-\(UUID().uuidString)"
        let fixture = try Fixture(secrets: ["ci/api-token": token])
        try fixture.agent("greeter", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        let fileSeen = Mutex<String?>(nil)
        let machines = fixture.fakes.machines
        fixture.fakes.machines.setHarness { command in
            let folder = command.environment["AGENTRY_SECRETS_DIR"] ?? ""
            fileSeen.withLock { $0 = machines.text("greeter", folder + "/API_TOKEN") }
            let value = command.environment["API_TOKEN"] ?? ""
            return .init(
                stdout: "token=\(value)\n", writes: ["/agent/out/leak.txt": Array("the token is \(value)\n".utf8)])
        }
        let output = Mutex("")
        let outcome = try await Runner(
            fixture.ports, progress: { _ in },
            output: { _, bytes in output.withLock { $0 += String(decoding: bytes, as: UTF8.self) } }
        ).run(
            .init(agent: "greeter", target: fixture.target, prompt: nil, timeout: nil, actor: "ana", historyBranch: "h")
        )
        #expect(fileSeen.withLock { $0 } == token, "the secret is a file in the run's tmpfs folder")
        #expect(output.withLock { $0 } == "token=***\n")
        for file in try #require(fixture.fakes.history.all.last).files {
            #expect(!String(decoding: file.bytes, as: UTF8.self).contains(token), "\(file.path)")
        }
        #expect(outcome.record.artifacts.first?.stored == true)
        let left = fixture.fakes.machines.machine("greeter")?.files.keys.filter { $0.hasPrefix("/run/secrets") } ?? []
        #expect(left.isEmpty, "the secrets folder is gone after the run: \(left)")
    }

    @Test func aMissingSecretFailsTheRunBeforeTheHarnessStarts() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        let started = Mutex(false)
        fixture.fakes.machines.setHarness { _ in
            started.withLock { $0 = true }
            return .init()
        }
        await #expect {
            try await fixture.run("greeter")
        } throws: { error in
            guard let error = error as? CoreError else { return false }
            return error.code == .secretUnavailable && error.message.contains("ci/api-token")
        }
        #expect(!started.withLock { $0 })
        #expect(!fixture.fakes.history.all.contains { $0.files.contains { $0.path.hasPrefix("runs/") } })
    }

    @Test func aTimeoutIsRecordedAsOne() async throws {
        let fixture = try Fixture()
        try fixture.agent("sleeper")
        try fixture.commit()
        let asked = Mutex<Duration?>(nil)
        let clock = fixture.fakes.clock
        fixture.fakes.machines.setHarness { command in
            asked.withLock { $0 = command.timeout }
            clock.advance(by: 1.5)
            return .init(stdout: "started\n", status: 137, timedOut: true)
        }
        let outcome = try await fixture.run("sleeper", timeout: .milliseconds(1500))
        #expect(asked.withLock { $0 } == .milliseconds(1500))
        #expect(outcome.record.timedOut && outcome.record.exitStatus == 137)
        let log = try HistoryQueries(fixture.ports).latestLog(
            agent: "sleeper", in: HistoryLocation(repository: fixture.repo.path, branch: "agentry/history"))
        #expect(log.contains("[agentry: timed out after 1s500ms; the process tree was killed]"), "\(log)")
        #expect(outcome.record.commitMessage.contains("timed out after 1.5s"))
    }

    @Test func aHarnessInstallsOncePerDiskAndRevision() async throws {
        let fixture = try Fixture()
        try fixture.write(
            "harnesses/tool.yaml",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata: {name: tool}
            spec:
              type: custom
              version: "1.0"
              install: {script: "echo installing"}
              command: ["tool"]
              supports: {apis: [chat-completions]}

            """)
        try fixture.agent("builder")
        try fixture.write(
            "agents/builder.yaml",
            try String(contentsOf: fixture.repo.url.appendingPathComponent("agents/builder.yaml"), encoding: .utf8)
                .replacingOccurrences(of: "harness: shell", with: "harness: tool"))
        try fixture.commit()
        _ = try await fixture.run("builder")
        _ = try await fixture.run("builder")
        let installs = try fixture.fakes.state.events(agent: "builder", limit: 50).filter { $0.kind == "install" }
        #expect(installs.count == 1, "\(installs.map(\.message))")
        #expect(installs.first?.message.hasPrefix("installed tool 1.0") == true)
    }

    @Test func pausedAndKilledAgentsRefuseToRun() async throws {
        let fixture = try Fixture()
        try fixture.agent("sleepy", lifecycle: "paused")
        try fixture.agent("rogue")
        try fixture.commit()
        await #expect { try await fixture.run("sleepy") } throws: {
            ($0 as? CoreError)?.code == .agentBlocked && "\($0)".contains("sleepy is paused")
        }
        _ = try await fixture.apply()
        try await Operations(fixture.ports).kill(
            agent: "rogue", reason: "leaking data", actor: "oncall", repository: nil, warn: { _ in })
        await #expect { try await fixture.run("rogue") } throws: {
            ($0 as? CoreError)?.code == .agentBlocked && "\($0)".contains("killed (leaking data, by oncall)")
        }
        await #expect { try await fixture.run("nobody") } throws: { ($0 as? CoreError)?.code == .notFound }
    }

    /// A run waits for another apply's writer lock (moving on a fake clock), then gives up saying so.
    @Test func aRunWaitsForAnotherWriterThenGivesUp() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        fixture.fakes.state.lockedByAnotherProcess = true
        let before = fixture.fakes.clock.now()
        await #expect { try await fixture.run("greeter") } throws: { ($0 as? CoreError)?.code == .stateLocked }
        #expect(fixture.fakes.clock.now().timeIntervalSince(before) >= 60, "it waited a minute of the clock")
    }

    @Test func aRunOfAMachineThatStopsAnsweringFailsWithoutHanging() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        let machines = fixture.fakes.machines
        machines.setHarness { command in
            machines.crash(command.machine)
            return .init(status: 0)
        }
        await #expect { try await fixture.run("greeter") } throws: { ($0 as? CoreError)?.code == .machineFailed }
    }
}
