import AgentryMachine
import AgentryWire
import Foundation
import Testing
import TestSupport

/// Real microVMs: the minimal image built from Debian's packages, booted under QEMU (TCG in CI).
@Suite(.serialized) struct MachineTests {
    static let state = try! TemporaryDirectory("agentry-machine")

    static let image: GuestImage = {
        let guest = Agentry.binary.deletingLastPathComponent().appendingPathComponent("agentry-guest").path
        return try! ImageBuilder.build(
            "minimal", imagesDirectory: state.path + "/images", guestAgent: guest, progress: { _ in })
    }()

    func configuration(_ name: String, disk: UInt64 = 64 << 20) -> MachineConfiguration {
        MachineConfiguration(
            name: name, directory: Self.state.path + "/agents/\(name)", image: Self.image, cpus: 1, memoryMiB: 256,
            diskBytes: disk, network: false, accelerator: .tcg)
    }

    @Test func bootsRunsCommandsAndKeepsItsDisk() throws {
        let machine = configuration("boots")
        defer { QEMUMachine.stop(machine.directory, graceful: false) }
        #expect(try QEMUMachine.ensureDisk(machine))
        _ = try QEMUMachine.start(machine)
        let channel = try QEMUMachine.connect(machine.directory, name: machine.name, timeout: .seconds(60), booting: true)
        guard case .hello(_, _, let kernel, _, let disk)? = channel.hello else {
            Issue.record("no hello: \(String(describing: channel.hello))")
            return
        }
        #expect(kernel.hasSuffix("cloud-amd64"))
        #expect(disk == "mounted", "the host formats the environment disk; the guest mounts it")

        var output: [UInt8] = []
        let result = try channel.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]) { _, data in output += data }
        #expect(result.status == 3)
        #expect(String(decoding: output, as: UTF8.self).contains("out"))

        try channel.putFile("/agent/notes/hello.txt", Array("kept\n".utf8))
        #expect(try channel.getFile("/agent/notes/hello.txt") == Array("kept\n".utf8))
        let timed = try channel.exec(["sleep", "30"], timeout: .seconds(1)) { _, _ in }
        #expect(timed.timedOut)

        // Power off cleanly, boot again: the disk (and the file) survive.
        QEMUMachine.stop(machine.directory, graceful: true)
        #expect(QEMUMachine.runningPID(machine.directory) == nil)
        #expect(try !QEMUMachine.ensureDisk(machine))
        _ = try QEMUMachine.start(machine)
        let again = try QEMUMachine.connect(machine.directory, name: machine.name, timeout: .seconds(60), booting: true)
        guard case .hello(_, _, _, _, let disk2)? = again.hello else {
            Issue.record("no hello after restart")
            return
        }
        #expect(disk2 == "mounted")
        #expect(try again.getFile("/agent/notes/hello.txt") == Array("kept\n".utf8))
    }
}
