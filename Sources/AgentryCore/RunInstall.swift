import AgentryModel
import AgentryRender
import Foundation

extension Runner {
    /// On a debian-12 machine the harness was installed on the host, into the layer the machine
    /// mounts (`apply` made it). A `minimal` machine has no package manager: a harness's own
    /// `install.script` runs in it once per environment disk and harness revision (a marker in
    /// `.agentry/installed/` says it was done; the event log records it).
    func install(_ bundle: AgentBundle, channel: any GuestChannel, actor: String) throws {
        let harness = bundle.harness
        guard bundle.environment?.base != .debian12 else { return }
        guard let marker = HarnessInstall.marker(harness), let digest = HarnessInstall.digest(harness) else { return }
        if HarnessInstall.downloads(harness) {
            throw CoreError(
                .invalidRepository,
                "the harness \(harness.metadata.name) installs with apt, pip or npm, which need the debian-12 base; the environment \(bundle.environment?.metadata.name ?? "-") is minimal"
            )
        }
        progress("installing the harness \(harness.metadata.name) \(harness.version ?? "") (once per environment disk)")
        var tail: [UInt8] = []
        // The installation's own output, a line at a time, as progress.
        var pending: [UInt8] = []
        let result = try channel.exec(
            ["/bin/sh", "-c", GuestScripts.install(harness, marker: marker)],
            environment: ["PATH=" + GuestShell.runPath, "HOME=" + AgentLayout.home],
            timeout: .seconds(1800),
            output: { _, bytes in
                tail = Array((tail + bytes).suffix(2000))
                pending += bytes
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[..<newline].prefix(1000), as: UTF8.self)
                    if !line.trimmingCharacters(in: .whitespaces).isEmpty { progress("install: " + line) }
                    pending.removeSubrange(...newline)
                }
                // A line without an end is shown in pieces: what is held stays bounded.
                if pending.count > 4096 {
                    progress("install: " + String(decoding: pending.prefix(1000), as: UTF8.self) + "…")
                    pending.removeAll()
                }
            })
        guard result.status == 0 else {
            throw CoreError(
                .machineFailed,
                "installing the harness \(harness.metadata.name) failed (exit \(result.status)):\n\(String(decoding: tail, as: UTF8.self))"
            )
        }
        _ = try? ports.state.withWriterLock(waitingUpTo: .seconds(10)) {
            try? ports.state.append(
                EventRecord(
                    time: ports.clock.now(), agent: bundle.name, kind: "install", actor: actor,
                    message: "installed \(harness.metadata.name) \(harness.version ?? "") (\(digest))"))
        }
    }
}
