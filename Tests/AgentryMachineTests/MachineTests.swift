import AgentryCore
import AgentryMachine
import AgentryRender
import Foundation
import TestSupport
import Testing

/// Real microVMs through the machine backend the core uses: the minimal image built from Debian's
/// packages, booted under QEMU (TCG in CI).
@Suite(.serialized) struct MachineTests {
    static let state = try! TemporaryDirectory("agentry-machine")

    static let backend: QEMUBackend = {
        let environment = ProcessInfo.processInfo.environment
        let guest = Agentry.binary.deletingLastPathComponent().appendingPathComponent("agentry-guest").path
        return QEMUBackend(
            stateDirectory: state.path, guestAgent: guest, proxyExecutable: Agentry.binary.path,
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
