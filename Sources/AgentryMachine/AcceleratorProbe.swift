import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Chooses KVM or TCG by actually booting: some hosts expose a `/dev/kvm` that ordinary guests hang
/// on (nested hosts), so the presence of the device proves nothing. The answer is remembered per
/// host boot and image in `<state>/accelerator`; `AGENTRY_ACCELERATOR=kvm|tcg` overrides it.
public enum AcceleratorProbe {
    /// `forced`: what `AGENTRY_ACCELERATOR` says, if anything.
    public static func detect(
        image: GuestImage, stateDirectory: String, machine: QEMUMachine, forced: Accelerator?, log: (String) -> Void
    ) -> Accelerator {
        // The probe boots the kernel and initramfs alone, whatever root filesystem the agent uses.
        var image = image
        image.rootfs = nil
        if let forced { return forced }
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { return .tcg }
        let bootID =
            (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let key = "\(bootID) \(image.digest)"
        let remembered = stateDirectory + "/accelerator"
        if let text = try? String(contentsOfFile: remembered, encoding: .utf8) {
            let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 1)
            if parts.count == 2, String(parts[1]) == key, let accelerator = Accelerator(rawValue: String(parts[0])) {
                return accelerator
            }
        }
        log("probing KVM with a test boot")
        let directory = stateDirectory + "/probe"
        try? FileManager.default.removeItem(atPath: directory)
        var result = Accelerator.tcg
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let configuration = MachineConfiguration(
                name: "probe", directory: directory, image: image, cpus: 1, memoryMiB: 128, diskBytes: 64 << 20,
                network: false, accelerator: .kvm)
            _ = try machine.ensureDisk(configuration)
            _ = try machine.start(configuration)
            if let channel = try? machine.channel(directory, deadline: .now + .seconds(20)),
                (try? channel.waitUntilReady(deadline: .now + .seconds(20), booting: true)) != nil
            {
                result = .kvm
            }
        } catch {
            // QEMU's own words are in the message; its last line says the most.
            let lines = "\(error)".split(separator: "\n")
            log(
                "KVM does not work here (\(lines.last.map { $0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "| ", with: "") } ?? "")); using TCG"
            )
        }
        machine.stop(directory, graceful: false)
        try? FileManager.default.removeItem(atPath: directory)
        try? "\(result.rawValue) \(key)\n".write(toFile: remembered, atomically: true, encoding: .utf8)
        log("accelerator: \(result.rawValue)")
        return result
    }
}
