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
        .run(fixture.request("greeter"))
        let record = outcome.record
        #expect(
            seen.withLock { $0 }.prefix(3) == ["/bin/sh", "-c", "echo hello there"],
            "the prompt is rendered into the command")
        #expect(seen.withLock { $0 }[3] == "m" && seen.withLock { $0 }[4] == record.runID)
        #expect(String(decoding: output.withLock { $0 }, as: UTF8.self).contains("hello from the harness"))
        #expect(
            record.exitStatus == 3 && !record.timedOut && record.desiredCommit == commit && record.triggeredBy == "ana")
        #expect(record.outcome == .failed && record.phase == nil && record.reason == nil)
        #expect(record.prompt == RunRecord.Prompt("hello there", isDefault: true) && record.owner == "test")
        #expect(record.artifacts.map(\.path) == ["out/big.bin", "out/result.txt"])
        #expect(record.artifacts.first { $0.path == "out/big.bin" }?.stored == false, "large artifacts by digest only")
        #expect(record.memoryFiles == 1 && record.memoryStored)

        let commitFiles = try #require(fixture.fakes.history.all.last).files.map(\.path)
        #expect(commitFiles.contains("runs/greeter/\(record.runID)/record.yaml"))
        #expect(commitFiles.contains("runs/greeter/\(record.runID)/artifacts/result.txt"))
        #expect(commitFiles.contains("runs/greeter/\(record.runID)/memory/notes.md"))
        let history = HistoryQueries(fixture.ports)
        let location = HistoryLocation(repository: fixture.repo.path, branch: "agentry/history")
        let shown = try history.run(String(record.runID.prefix(15)), in: location)
        #expect(shown.record?.exitStatus == 3 && shown.log.contains("to-err") && shown.problem == nil)
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
        ).run(fixture.request("greeter"))
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
        let started = fixture.watchHarness()
        await #expect {
            try await fixture.run("greeter")
        } throws: { error in
            guard let error = error as? CoreError else { return false }
            return error.code == .secretUnavailable && error.message.contains("ci/api-token")
        }
        #expect(!started.withLock { $0 })
        // Recorded all the same: not started, in the secrets phase, saying why.
        let record = try #require(try fixture.records("greeter").first)
        #expect(record.outcome == .notStarted && record.phase == .secrets && record.exitStatus == nil)
        #expect(record.reason?.contains("ci/api-token") == true, "\(record.reason ?? "")")
        #expect(record.prompt?.text == "hello there")
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
        #expect(outcome.record.timedOut && outcome.record.exitStatus == 137 && outcome.record.outcome == .timedOut)
        #expect(outcome.record.phase == .harness)
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
        // Refused runs of agents are recorded; a name that is no agent gets no folder in history.
        #expect(try fixture.records("sleepy").first?.outcome == .notStarted)
        #expect(try fixture.records("rogue").first?.reason?.contains("leaking data") == true)
        #expect(try fixture.records("nobody").isEmpty)
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
        let outcome = try await fixture.run("greeter")
        #expect(outcome.record.outcome == .machineLost && outcome.record.phase == .harness)
        #expect(outcome.record.reason?.contains("machine") == true, "\(outcome.record.reason ?? "")")
        #expect(try fixture.records("greeter").first?.outcome == .machineLost)
    }

    /// `run` runs what was applied: a repository that moved on is mentioned, a `--ref` of another
    /// revision refused, and `--apply` applies it first.
    @Test func aRunIsOfTheAppliedRevision() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter", instructions: "First.")
        let first = try fixture.commit()
        _ = try await fixture.apply()
        try fixture.agent("greeter", instructions: "Second.")
        let second = try fixture.commit()
        let said = Mutex<[String]>([])
        let plain = try await fixture.run(
            "greeter", apply: false, progress: { line in said.withLock { $0.append(line) } })
        #expect(plain.record.desiredCommit == first)
        #expect(
            said.withLock { $0 }.contains {
                $0.contains(
                    "greeter is applied at \(first.prefix(12)); the repository is at \(second.prefix(12)): apply first")
            }, "\(said.withLock { $0 })")
        let instructions = fixture.fakes.machines.text("greeter", "/agent/AGENTS.md") ?? ""
        #expect(instructions.contains("First."), "the run did not deploy: \(instructions)")
        await #expect { try await fixture.run("greeter", apply: false, ref: "HEAD") } throws: {
            ($0 as? CoreError)?.code == .invalidArgument && "\($0)".contains("Only apply changes what runs")
        }
        #expect(try fixture.records("greeter").count == 1, "a refused --ref is not a run of the agent")
        // A --ref that holds the applied revision is the same run.
        _ = try await fixture.run("greeter", apply: false, ref: first)
        let applied = try await fixture.run("greeter", apply: true)
        #expect(applied.record.desiredCommit == second)
        #expect(fixture.fakes.machines.text("greeter", "/agent/AGENTS.md")?.contains("Second.") == true)
    }

    /// Ctrl-C during the harness: the run is recorded as interrupted, with what it printed.
    @Test func anInterruptedRunIsRecordedWithItsOutput() async throws {
        let fixture = try Fixture(secrets: ["ci/api-token": "tok-123456"])
        try fixture.agent("greeter", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        let interruption = Interruption()
        fixture.fakes.machines.setHarness { _ in
            interruption.interrupt(SIGINT)
            return .init(stdout: "working on it, token tok-123456\n", status: 0)
        }
        let outcome = try await fixture.run("greeter", interruption: interruption)
        let record = outcome.record
        #expect(record.outcome == .interrupted && record.phase == .harness && record.exitStatus == nil)
        #expect(record.reason?.contains("SIGINT") == true)
        let shown = try HistoryQueries(fixture.ports).run(record.runID, in: fixture.history)
        #expect(shown.log.contains("working on it, token ***"), "\(shown.log)")
        let left = fixture.fakes.machines.machine("greeter")?.files.keys.filter { $0.hasPrefix("/run/secrets/") } ?? []
        #expect(left.isEmpty, "the secrets folder is gone: \(left)")
    }

    /// Stopped before the harness starts: recorded as interrupted, and the harness never runs.
    @Test func aRunInterruptedBeforeItsHarnessNeverStartsIt() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        let started = fixture.watchHarness()
        let interruption = Interruption()
        interruption.interrupt(SIGTERM)
        let outcome = try await fixture.run("greeter", apply: false, interruption: interruption)
        #expect(outcome.record.outcome == .interrupted && outcome.record.reason?.contains("SIGTERM") == true)
        #expect(!started.withLock { $0 })
    }

    /// An agentry that died mid-run left its journal: the next run records that run as interrupted.
    @Test func aRunWhoseAgentryDiedIsRecordedByTheNext() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        let commit = try fixture.commit()
        _ = try await fixture.apply()
        var journal = RunJournal(
            agent: "greeter", runID: "20260101-000000-deadbeef", pid: 999_999,
            startedAt: Date(timeIntervalSince1970: 1_767_225_600),
            phase: "harness", owner: "test", commit: commit, revision: "r", actor: "bob", trigger: "manual", host: "h",
            historyRepository: fixture.repo.path, historyBranch: "agentry/history")
        journal.promptSHA256 = String(repeating: "e", count: 64)
        journal.promptBytes = 5
        journal.promptIsDefault = false
        try fixture.fakes.state.saveRunJournal(journal)
        let said = Mutex<[String]>([])
        _ = try await fixture.run("greeter", apply: false, progress: { line in said.withLock { $0.append(line) } })
        let records = try fixture.records("greeter")
        let lost = try #require(records.first { $0.runID == "20260101-000000-deadbeef" })
        #expect(lost.outcome == .interrupted && lost.phase == .harness && lost.triggeredBy == "bob")
        #expect(lost.reason?.contains("process 999999") == true)
        #expect(lost.prompt?.bytes == 5 && lost.prompt?.isDefault == false)
        #expect(records.count == 2)
        #expect(try fixture.fakes.state.runJournals().isEmpty)
        #expect(
            said.withLock { $0 }.contains {
                $0.contains("recorded run 20260101-000000-deadbeef of greeter as interrupted")
            })
    }

    /// A run of an agent with a run in progress waits for it, saying so.
    @Test func aSecondRunWaitsForTheFirst() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter")
        try fixture.commit()
        _ = try await fixture.apply()
        let held = fixture.fakes.machines.holdRunLock("greeter")
        let said = Mutex<[String]>([])
        let waiting = Task {
            try await fixture.run("greeter", apply: false, progress: { line in said.withLock { $0.append(line) } })
        }
        try await waitUntil("the second run says it waits") {
            said.withLock { $0 }.contains { $0.contains("busy with a run (process 4242)") && $0.contains("waiting") }
        }
        #expect(try fixture.records("greeter").isEmpty, "it has not run while the first holds the agent")
        held.release()
        let outcome = try await waiting.value
        #expect(outcome.record.outcome == .succeeded)
    }

    /// Thousands of artifacts: the record lists a bounded number, says how many more there were,
    /// and still reads.
    @Test func thousandsOfArtifactsStillGiveAReadableRecord() async throws {
        let fixture = try Fixture()
        try fixture.agent("writer")
        try fixture.commit()
        fixture.fakes.machines.setHarness { _ in
            var writes: [String: [UInt8]] = [:]
            for index in 0..<1500 {
                writes["/agent/out/file-\(String(format: "%04d", index)).txt"] = Array("\(index)\n".utf8)
            }
            return .init(writes: writes)
        }
        let outcome = try await fixture.run("writer")
        #expect(outcome.record.artifacts.count == RunRecord.listedArtifacts)
        #expect(outcome.record.artifactsOmitted == 1500 - RunRecord.listedArtifacts)
        let record = try #require(try fixture.records("writer").first)
        #expect(record.artifactsOmitted == 500 && record.artifacts.count == 1000)
    }

    /// Names git refuses or treats specially are stored by digest, the name kept in the record;
    /// a memory file so stored comes back under its own name.
    @Test func unsafeNamesAreStoredByDigest() async throws {
        let fixture = try Fixture()
        try fixture.agent("writer")
        try fixture.commit()
        let gitmodules = Array("[submodule \"x\"]\n\tpath = x\n\turl = ../x\n".utf8)
        fixture.fakes.machines.setHarness { _ in
            .init(writes: [
                "/agent/out/.gitmodules": gitmodules, "/agent/out/sub/.GIT/config": Array("[core]\n".utf8),
                "/agent/out/fine.txt": Array("fine\n".utf8), "/agent/memory/.gitattributes": Array("* text\n".utf8),
            ])
        }
        let record = try await fixture.run("writer").record
        let byPath = Dictionary(uniqueKeysWithValues: record.artifacts.map { ($0.path, $0) })
        #expect(byPath["out/fine.txt"]?.storedAs == nil)
        let stored = try #require(byPath["out/.gitmodules"]?.storedAs)
        #expect(stored == "_/" + SHA256.hex(gitmodules))
        #expect(byPath["out/sub/.GIT/config"]?.storedAs?.hasPrefix("_/") == true)
        let files = try #require(fixture.fakes.history.all.last).files.map(\.path)
        #expect(files.contains(record.folder + "/artifacts/" + stored))
        #expect(!files.contains { $0.lowercased().contains(".git") }, "\(files)")
        #expect(record.memoryRenamed.map(\.path) == [".gitattributes"])
        // Restored onto a new disk under its own name.
        fixture.fakes.machines.crash("writer")
        try fixture.fakes.machines.removeDisk("writer")
        _ = try await fixture.apply(ApplyOptions(actor: "ci", recreateMissingDisks: true))
        #expect(fixture.fakes.machines.text("writer", "/agent/memory/.gitattributes") == "* text\n")
    }

    /// A memory file holding a secret is kept out of the snapshot (never stored rewritten), and
    /// the record says so.
    @Test func memoryFilesWithSecretsAreLeftOutOfTheSnapshot() async throws {
        let fixture = try Fixture(secrets: ["ci/api-token": "tok-abcdef123"])
        try fixture.agent("writer", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        fixture.fakes.machines.setHarness { _ in
            .init(writes: [
                "/agent/memory/creds.txt": Array("token=tok-abcdef123\n".utf8),
                "/agent/memory/notes.md": Array("plain\n".utf8),
            ])
        }
        let record = try await fixture.run("writer").record
        #expect(record.memoryFiles == 1 && record.memoryStored)
        #expect(record.memoryExcluded == ["creds.txt (it held a secret)"])
        let files = try #require(fixture.fakes.history.all.last).files.map(\.path)
        #expect(files.contains(record.folder + "/memory/notes.md") && !files.contains { $0.hasSuffix("creds.txt") })
    }

    /// Artifacts and memory that cannot be stored: the record and log still are, saying so, and
    /// the earlier snapshot stays the one restored.
    @Test func whatCannotBeStoredIsSaidAndNeverShadowsAnEarlierSnapshot() async throws {
        let fixture = try Fixture()
        try fixture.agent("writer")
        try fixture.commit()
        fixture.fakes.machines.setHarness { _ in .init(writes: ["/agent/memory/notes.md": Array("first\n".utf8)]) }
        _ = try await fixture.run("writer")
        fixture.fakes.history.fileLimit.withLock { $0 = 2 }
        fixture.fakes.machines.setHarness { _ in
            .init(writes: [
                "/agent/memory/notes.md": Array("second\n".utf8), "/agent/out/report.md": Array("r\n".utf8),
            ])
        }
        let outcome = try await fixture.run("writer", apply: false)
        let record = try #require(try fixture.records("writer").first { $0.runID == outcome.record.runID })
        #expect(!record.memoryStored && record.memoryNote?.contains("could not be stored") == true)
        #expect(record.artifactsNote?.contains("could not be stored") == true)
        fixture.fakes.history.fileLimit.withLock { $0 = nil }
        fixture.fakes.machines.crash("writer")
        try fixture.fakes.machines.removeDisk("writer")
        _ = try await fixture.apply(ApplyOptions(actor: "ci", recreateMissingDisks: true))
        #expect(fixture.fakes.machines.text("writer", "/agent/memory/notes.md") == "first\n")
    }

    /// A name reused by another owner never gets the retired agent's disk or memory; its own
    /// owner coming back does.
    @Test func aReusedNameOfAnotherOwnerStartsAfresh() async throws {
        let fixture = try Fixture()
        try fixture.agent("reused", owner: "team-a")
        try fixture.commit()
        fixture.fakes.machines.setHarness { _ in .init(writes: ["/agent/memory/notes.md": Array("team a's\n".utf8)]) }
        _ = try await fixture.run("reused")
        try fixture.remove("agents/reused.yaml")
        try fixture.agent("other")
        try fixture.commit()
        _ = try await fixture.apply()
        try fixture.agent("reused", owner: "team-b")
        try fixture.commit()
        let outcome = try await fixture.apply()
        let step = try #require(fixture.step(outcome, "reused"))
        #expect(step.detail.contains("a disk retired by another owner set aside"), "\(step.detail)")
        #expect(step.detail.contains("memory not restored"), "\(step.detail)")
        #expect(fixture.fakes.machines.text("reused", "/agent/memory/notes.md") == nil)
    }

    /// A secret limited to other agents is refused before the run starts, naming the key and the
    /// rule; one limited to this agent's owner or a label of it is delivered.
    @Test func scopedSecretsReachOnlyTheAgentsTheyAreFor() async throws {
        let fixture = try Fixture()
        try fixture.agent("greeter", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        let secrets = Secrets(fixture.ports)
        try secrets.set("ci/api-token", value: Array("tok-scoped-1".utf8), scope: SecretScope(owners: ["platform"]))
        let started = fixture.watchHarness()
        await #expect {
            try await fixture.run("greeter")
        } throws: { error in
            "\(error)".contains("ci/api-token") && "\(error)".contains("limited to owner platform")
        }
        #expect(!started.withLock { $0 })
        try secrets.set("ci/api-token", value: Array("tok-scoped-1".utf8), scope: SecretScope(owners: ["test"]))
        #expect(try await fixture.run("greeter", apply: false).record.outcome == .succeeded)
        try secrets.set("ci/api-token", value: Array("tok-scoped-1".utf8), scope: SecretScope(agents: ["other"]))
        await #expect { try await fixture.run("greeter", apply: false) } throws: { "\($0)".contains("agent other") }
    }

    /// Values too short to redact safely are refused when set, and when a run finds one elsewhere.
    @Test func shortSecretValuesAreRefused() async throws {
        let fixture = try Fixture(secrets: ["ci/api-token": "short"])
        #expect(throws: CoreError.self) { try Secrets(fixture.ports).set("x/y", value: Array("1234567".utf8)) }
        try fixture.agent("greeter", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        await #expect { try await fixture.run("greeter") } throws: { "\($0)".contains("under 8 are refused") }
    }

    /// A secret in a file's name never reaches history: the name is redacted, the file stored by
    /// digest (a memory file so named is left out).
    @Test func secretsInFileNamesAreRedacted() async throws {
        let token = "tok-in-a-name-42"
        let fixture = try Fixture(secrets: ["ci/api-token": token])
        try fixture.agent("writer", extra: ["secrets:", "  - {env: API_TOKEN, ref: ci/api-token}"])
        try fixture.commit()
        fixture.fakes.machines.setHarness { _ in
            .init(writes: [
                "/agent/out/\(token).txt": Array("content\n".utf8), "/agent/memory/\(token)/notes": Array("n\n".utf8),
            ])
        }
        let record = try await fixture.run("writer").record
        #expect(record.artifacts.map(\.path) == ["out/***.txt"])
        #expect(record.artifacts.first?.storedAs?.hasPrefix("_/") == true)
        #expect(record.memoryExcluded == ["***/notes (its name held a secret)"])
        for file in try #require(fixture.fakes.history.all.last).files {
            #expect(!file.path.contains(token) && !String(decoding: file.bytes, as: UTF8.self).contains(token))
        }
    }
}
