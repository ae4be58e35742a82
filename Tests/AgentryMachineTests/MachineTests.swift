import AgentryCore
import AgentryRender
import Foundation
import TestSupport
import Testing

@testable import AgentryMachine

/// Real microVMs through the machine backend the core uses: the minimal image built from Debian's
/// packages, booted under QEMU (TCG in CI).
@Suite(.serialized) struct MachineTests {
    static let state = try! TemporaryDirectory("agentry-machine")

    static let backend: QEMUBackend = {
        let environment = ProcessInfo.processInfo.environment
        let guest = Agentry.binary.deletingLastPathComponent().appendingPathComponent("agentry-guest").path
        return QEMUBackend(
            stateDirectory: state.path, guestAgent: guest, executable: Agentry.binary.path,
            commands: HostCommands(environment: environment), environment: environment, progress: { _ in })
    }()

    func spec(_ name: String, disk: UInt64 = 64 << 20) -> MachineSpec {
        MachineSpec(name: name, base: "minimal", packages: [], cpus: 1, memoryMiB: 256, diskBytes: disk, egress: .none)
    }

    @Test func bootsRunsCommandsAndKeepsItsDisk() throws {
        let backend = Self.backend
        let machine = spec("boots")
        defer { backend.stop(machine.name, graceful: false) }
        #expect(try backend.prepare(machine).freshDisk)
        let channel = try backend.start(machine)
        let hello = try #require(try channel.waitUntilReady(timeout: .seconds(60), booting: true))
        #expect(hello.kernel.hasSuffix("cloud-amd64"))
        #expect(hello.disk == "mounted", "the host formats the environment disk; the guest mounts it")
        #expect(backend.isRunning(machine.name))

        var output: [UInt8] = []
        let result = try channel.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]) { _, data in output += data }
        #expect(result.status == 3)
        #expect(String(decoding: output, as: UTF8.self).contains("out"))

        try channel.putFile("/agent/notes/hello.txt", Array("kept\n".utf8), mode: 0o644)
        #expect(try channel.getFile("/agent/notes/hello.txt") == Array("kept\n".utf8))
        let timed = try channel.exec(["sleep", "30"], timeout: .seconds(1)) { _, _ in }
        #expect(timed.timedOut)

        // Power off cleanly, boot again: the disk (and the file) survive.
        backend.stop(machine.name, graceful: true)
        #expect(!backend.isRunning(machine.name))
        #expect(try !backend.prepare(machine).freshDisk)
        do {
            let again = try backend.start(machine)
            let hello2 = try #require(try again.waitUntilReady(timeout: .seconds(60), booting: true))
            #expect(hello2.disk == "mounted")
            #expect(try again.getFile("/agent/notes/hello.txt") == Array("kept\n".utf8))
        }
        // Once that channel is closed, a new one to the running machine answers (a ping, not a hello):
        // QEMU serves one client on the control socket at a time.
        let other = try backend.connect(machine.name, timeout: .seconds(10))
        #expect(try other.getFile("/agent/notes/hello.txt") == Array("kept\n".utf8))
    }
}

/// The machine supervisor: the control channel shared by several clients, commands of a client
/// that goes away killed, the machine's end recorded, a supervisor that dies replaced by adoption.
@Suite(.serialized) struct SupervisorTests {
    var backend: QEMUBackend { MachineTests.backend }
    var directory: String { MachineTests.state.path + "/agents/shared" }

    @Test func clientsShareTheChannelAndTheMachinesEndIsRecorded() throws {
        let spec = MachineSpec(
            name: "shared", base: "minimal", packages: [], cpus: 1, memoryMiB: 256, diskBytes: 64 << 20, egress: .none)
        defer { backend.stop("shared", graceful: false) }
        _ = try backend.prepare(spec)
        let first = try backend.start(spec)
        #expect(try first.waitUntilReady(timeout: .seconds(60), booting: true) != nil)

        // A second client works while the first one's command runs.
        let started = ContinuousClock.now
        let second = try backend.connect("shared", timeout: .seconds(10))
        let backend = backend
        let background = Thread {
            let slow = try? backend.connect("shared", timeout: .seconds(10))
            _ = try? slow?.exec(["sh", "-c", "sleep 2; echo slow > /agent/slow"], timeout: .seconds(20)) { _, _ in }
        }
        background.start()
        var output: [UInt8] = []
        usleep(300_000)
        let quick = try second.exec(["echo", "quick"]) { _, bytes in output += bytes }
        #expect(quick.status == 0 && output == Array("quick\n".utf8))
        #expect(ContinuousClock.now - started < .seconds(2), "the second client did not wait for the first")

        // A client that leaves has its commands killed in the guest.
        do {
            let leaving = try #require(try backend.connect("shared", timeout: .seconds(10)) as? ControlChannel)
            try leaving.send(
                .exec(
                    id: 99, argv: ["sh", "-c", "sleep 3; echo late > /agent/late"], environment: ["PATH=/bin:/usr/bin"],
                    directory: "/agent", stdin: [], timeoutMillis: 0))
            usleep(500_000)
        }
        usleep(4_000_000)
        #expect((try? second.getFile("/agent/late")) == nil, "the command of a client that left still ran")
        #expect(try second.getFile("/agent/slow") == Array("slow\n".utf8))
        _ = first

        // A supervisor killed hard is replaced by one that adopts the running machine.
        let supervisor = try String(contentsOfFile: directory + "/supervisor.pid", encoding: .utf8)
        kill(Int32(supervisor.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
        usleep(200_000)
        let adopted = try backend.connect("shared", timeout: .seconds(20))
        #expect(try adopted.getFile("/agent/slow") == Array("slow\n".utf8))

        // QEMU killed: the supervisor says how it ended; a stop agentry asked for says so.
        let qemu = try String(contentsOfFile: directory + "/vm.pid", encoding: .utf8)
        kill(Int32(qemu.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(10)
        while MachineSupervisor.recordedExit(directory) == nil && ContinuousClock.now < deadline { usleep(50_000) }
        let died = try #require(MachineSupervisor.recordedExit(directory))
        #expect(!died.stopRequested && (died.signal == 9 || died.status == nil), "\(died)")

        _ = try backend.start(spec)
        #expect(MachineSupervisor.recordedExit(directory) == nil, "a new start forgets the old end")
        backend.stop("shared", graceful: true)
        let stopped = try #require(MachineSupervisor.recordedExit(directory))
        #expect(stopped.stopRequested && stopped.status == 0, "\(stopped)")
    }
}

/// What the backend keeps on the host for each agent, without booting anything: retired disks and
/// who they belonged to, the run lock, names that are not agent names.
@Suite struct MachineFolderTests {
    func backend(_ state: TemporaryDirectory) -> QEMUBackend {
        let environment = ProcessInfo.processInfo.environment
        return QEMUBackend(
            stateDirectory: state.path, guestAgent: "/nonexistent", executable: Agentry.binary.path,
            commands: HostCommands(environment: environment), environment: environment, progress: { _ in })
    }

    /// A retired disk comes back to an agent of its owner; one of another owner is set aside, never
    /// handed to the newcomer.
    @Test func aRetiredDiskGoesOnlyToItsOwner() throws {
        let state = try TemporaryDirectory("agentry-machine-folders")
        let backend = backend(state)
        for name in ["mine", "theirs"] {
            try state.write("agents/\(name)/env.qcow2", "the disk of \(name)\n")
            try backend.remove(name, keepDisk: true, owner: "team-a")
        }
        #expect(try backend.claimDisk("mine", owner: "team-a") == .kept)
        #expect(FileManager.default.fileExists(atPath: state.path + "/agents/mine/env.qcow2"))
        guard case .setAside(let place) = try backend.claimDisk("theirs", owner: "team-b") else {
            Issue.record("the disk of another owner was not set aside")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: state.path + "/agents/theirs"))
        #expect(try String(contentsOfFile: place + "/env.qcow2", encoding: .utf8) == "the disk of theirs\n")
        #expect(place.hasPrefix(state.path + "/agents/.retired/theirs-"))
        #expect(try backend.claimDisk("theirs", owner: "team-b") == .none)
    }

    /// One holder of an agent's run lock at a time, even within one process; a waiter is told who
    /// holds it (a run or an apply, and its process) and gives up at its deadline or when
    /// interrupted.
    @Test func theRunLockHasOneHolder() throws {
        let state = try TemporaryDirectory("agentry-machine-folders")
        let backend = backend(state)
        let run = RunLockHolder(.run, pid: getpid())
        #expect(backend.runLockHolder("busy") == nil)
        let held = try backend.lockRun("busy", for: run, deadline: nil, interruption: nil, waiting: { _ in })
        #expect(backend.runLockHolder("busy") == run)
        var told: [String] = []
        #expect(throws: MachineError.self) {
            try backend.lockRun(
                "busy", for: RunLockHolder(.apply, pid: 1), deadline: .now + .milliseconds(300), interruption: nil
            ) { told.append($0) }
        }
        #expect(told == ["busy is busy with a run (process \(getpid())); waiting for it to end"], "\(told)")
        let interruption = Interruption()
        interruption.interrupt(SIGINT)
        #expect(throws: MachineError.self) {
            try backend.lockRun("busy", for: run, deadline: nil, interruption: interruption, waiting: { _ in })
        }
        held.release()
        #expect(backend.runLockHolder("busy") == nil)
        let apply = RunLockHolder(.apply, pid: getpid())
        let step = try backend.lockRun("busy", for: apply, deadline: .now, interruption: nil, waiting: { _ in })
        #expect(backend.runLockHolder("busy") == apply)
        step.release()
    }

    /// A name that is not an agent name (from a damaged state database) never becomes a path
    /// outside the agents' folder.
    @Test func namesThatAreNotAgentNamesStayInside() throws {
        let state = try TemporaryDirectory("agentry-machine-folders")
        let backend = backend(state)
        for name in ["../../etc", "a/b", "..", "UPPER", ""] {
            let folder = URL(fileURLWithPath: backend.directory(name)).standardized.path
            #expect(folder.hasPrefix(state.path + "/agents/.invalid/"), "\(name) → \(folder)")
        }
    }
}
