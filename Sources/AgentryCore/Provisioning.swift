import AgentryBasics
import AgentryModel
import AgentryRender
import AgentryWire

#if canImport(Glibc)
    import Glibc
#endif

/// Puts a rendered agent's files into its machine: one archive over the control channel, unpacked
/// in the home after the previous push's files are removed. Two round trips whatever the file count.
enum Provisioner {
    static func archive(_ files: [BundleFile]) throws -> [UInt8] {
        var archive = TarWriter()
        for file in files { try archive.add(file) }
        return archive.finish()
    }

    /// Puts `files` into the guest as one tar at `staging` (a tmpfs path) and returns its digest.
    static func putArchive(_ files: [BundleFile], at staging: String, over channel: any GuestChannel) throws -> String {
        let bytes = try archive(files)
        try channel.putFile(staging, bytes, mode: 0o600)
        return SHA256.hex(bytes)
    }

    /// Puts the configuration archive into the guest and returns the shell snippet that applies it
    /// (a no-op when the same configuration is already there).
    static func stage(_ rendered: RenderedAgent, over channel: any GuestChannel) throws -> String {
        let digest = try putArchive(rendered.files, at: GuestScripts.configurationStaging, over: channel)
        return GuestScripts.applyConfiguration(digest: digest)
    }

    /// `fresh`: the disk was made by this apply, so nothing of agentry's is on it yet.
    static func push(_ rendered: RenderedAgent, over channel: any GuestChannel, fresh: Bool = false) throws {
        // Starting a shell in the guest is the expensive part (emulated under TCG), so the common
        // cases go without one: the same configuration already there (a restart), or none of
        // agentry's files there yet (a new disk), where plain file puts do.
        let digest = SHA256.hex(try archive(rendered.files))
        let home = AgentLayout.home + "/"
        let current = fresh ? nil : try? channel.getFile(home + AgentLayout.own + "/config.digest")
        if let current, String(decoding: current, as: UTF8.self) == digest + "\n" { return }
        // No digest: a new disk, unless an interrupted push left its files (then the manifest says).
        if current == nil, !rendered.files.contains(where: { $0.linkTarget != nil }),
            fresh || (try? channel.getFile(home + AgentLayout.own + "/files")) == nil
        {
            for file in rendered.files { try channel.putFile(home + file.path, file.bytes, mode: file.mode) }
            try channel.putFile(home + AgentLayout.own + "/config.digest", Array((digest + "\n").utf8), mode: 0o644)
            return
        }
        try GuestCommand.shell(
            "set -e\n" + (try stage(rendered, over: channel)), over: channel, what: "writing the agent's configuration")
    }

    /// Unpacks `files` (paths relative to the home) into the agent's home, keeping what is there.
    static func unpack(_ files: [BundleFile], over channel: any GuestChannel, what: String) throws {
        _ = try putArchive(files, at: GuestScripts.unpackStaging, over: channel)
        try GuestCommand.shell(GuestScripts.unpack(), over: channel, what: what)
    }
}

/// Commands agentry runs in a guest for itself.
enum GuestCommand {
    /// The most standard output agentry keeps from one of its own commands.
    static let outputLimit = 64 << 10
    /// How much of its error output is kept for the message.
    static let errorTail = 4096

    /// Runs `script` with `sh -c` in the guest and returns its standard output; fails with its
    /// error output, saying what it was doing (`what`, else the script's start).
    @discardableResult
    static func shell(
        _ script: String, over channel: any GuestChannel, path: String = GuestShell.systemPath,
        timeout: Duration = .seconds(60), what: String? = nil
    ) throws -> [UInt8] {
        var out: [UInt8] = []
        var errors: [UInt8] = []
        // agentry's own scripts say little: more than this is a flood from the guest (a binary
        // planted on the PATH), and the command is killed rather than held in the host's memory.
        let flood = Interruption()
        let result = try channel.exec(
            ["/bin/sh", "-c", script], environment: ["PATH=" + path, "HOME=" + AgentLayout.home],
            directory: AgentLayout.home,
            stdin: [], timeout: timeout, interruption: flood,
            output: { stream, bytes in
                if stream == .stdout {
                    if out.count + bytes.count > Self.outputLimit { flood.interrupt(SIGKILL) } else { out += bytes }
                } else {
                    errors = Array((errors + bytes).suffix(Self.errorTail))
                }
            })
        let doing = what ?? "`\(script.prefix(80))`"
        if flood.isInterrupted {
            throw CoreError(
                .machineFailed,
                "\(doing): the machine printed more than \(Self.outputLimit / 1024) KiB where agentry expects a few lines; the command was killed"
            )
        }
        guard result.status == 0 else {
            throw CoreError(
                .machineFailed,
                "\(doing) failed in the machine (exit \(result.status)): \(String(decoding: errors.suffix(400), as: UTF8.self))"
            )
        }
        return out
    }
}
