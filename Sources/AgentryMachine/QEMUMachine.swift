import AgentryBasics
import AgentryCore
import AgentryRender
import AgentryWire
import CGuestSupport
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public enum Accelerator: String, Sendable, Codable {
    case kvm, tcg
}

/// What a machine is made of.
public struct MachineConfiguration: Sendable {
    public var name: String
    /// The agent's folder in the state directory: disk, sockets, pidfile, serial log.
    public var directory: String
    public var image: GuestImage
    public var cpus: Int
    public var memoryMiB: Int
    public var diskBytes: UInt64
    /// User-mode networking (`egress: all`); no network device otherwise.
    public var network: Bool
    /// With a network: only these hosts, through the supervisor's egress proxy (nil: unrestricted).
    public var allowlist: EgressAllowlist?
    /// The connector QEMU starts for each guest connection to the proxy (`socat`).
    public var proxyConnector: String?
    /// `egress: all`: the network is not restricted to the proxy and the gateway.
    public var unrestricted = false
    /// With a model: the connector QEMU starts for each guest connection to the model gateway.
    public var gatewayConnector: String?
    /// The harness layer, a read-only disk the guest overlays under its root (debian-12).
    public var layer: HarnessLayer?
    public var accelerator: Accelerator

    public init(
        name: String, directory: String, image: GuestImage, cpus: Int, memoryMiB: Int, diskBytes: UInt64, network: Bool,
        accelerator: Accelerator
    ) {
        self.name = name
        self.directory = directory
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.diskBytes = diskBytes
        self.network = network
        self.accelerator = accelerator
    }

    /// The machine for an Environment's `egress`: none, all, or an allowlist (hosts, model-only).
    public mutating func restrict(to allowlist: EgressAllowlist, connector: String) {
        network = true
        self.allowlist = allowlist
        proxyConnector = connector
    }
}

/// A persistent QEMU microVM per agent: `microvm` machine type, virtio-mmio devices, the environment
/// disk as a qcow2 file that survives restarts, the control port and QMP as unix sockets, the serial
/// console to a file. QEMU runs detached, under its `MachineSupervisor` (which records how it ends and
/// shares its control channel), so agentry can exit and find it again by pidfile. Everything is by
/// the machine's folder; host programs run through `commands`, the supervisor is `executable`.
public struct QEMUMachine: Sendable {
    let commands: HostCommands
    /// The agentry executable, whose `machine-supervisor` command supervises machines.
    let executable: String

    public init(commands: HostCommands, executable: String) {
        self.commands = commands
        self.executable = executable
    }

    public static func disk(_ directory: String) -> String { directory + "/env.qcow2" }
    public static func controlSocket(_ directory: String) -> String { directory + "/ctl.sock" }
    public static func qmpSocket(_ directory: String) -> String { directory + "/qmp.sock" }
    public static func serialLog(_ directory: String) -> String { directory + "/serial.log" }
    /// The guest's console, read by the machine's supervisor (see `MachineSupervisor.ConsoleLog`).
    public static func consoleSocket(_ directory: String) -> String { directory + "/console.sock" }
    static func pidFile(_ directory: String) -> String { directory + "/vm.pid" }
    public static func egressAllowFile(_ directory: String) -> String { directory + "/egress.allow" }
    /// Where the supervisor serves the machine's egress proxy (`EgressService`).
    public static func egressSocket(_ directory: String) -> String { directory + "/egress.sock" }
    /// The model gateway of the machine's runs (served by the process running the run).
    public static func gatewaySocket(_ directory: String) -> String { directory + "/gateway.sock" }
    static func qemuLog(_ directory: String) -> String { directory + "/qemu.log" }

    /// The QEMU process serving this folder, if it is alive (by pidfile, checked against its command line).
    public static func runningPID(_ directory: String) -> Int32? {
        guard let text = try? String(contentsOfFile: Self.pidFile(directory), encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0
        else { return nil }
        let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        let arguments = String(decoding: cmdline, as: UTF8.self)
        return arguments.contains(Self.controlSocket(directory)) ? pid : nil
    }

    /// What a running QEMU was started with, read from its command line.
    public static func resources(pid: Int32) -> MachineResources? {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return nil }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        func value(_ option: String) -> String? {
            arguments.firstIndex(of: option).flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
        }
        guard let memory = value("-m").flatMap({ Int($0.hasSuffix("M") ? String($0.dropLast()) : $0) }),
            let cpus = value("-smp").flatMap({ Int($0) })
        else { return nil }
        let network: MachineResources.Network
        let netdev = value("-netdev") ?? ""
        if netdev.isEmpty {
            network = .none
        } else if !netdev.contains("restrict=on") {
            network = .unrestricted
        } else {
            // Restricted: through the proxy, or (only the gateway forwarded) no egress at all.
            network = netdev.contains("guestfwd=tcp:\(EgressProxyAddress.guestAddress):") ? .allowlist : .none
        }
        var resources = MachineResources(cpus: cpus, memoryMiB: memory, network: network)
        resources.gateway = netdev.contains("guestfwd=tcp:\(GatewayAddress.guestAddress):")
        resources.layer = (value("-append") ?? "").split(separator: " ").first { $0.hasPrefix("agentry.layer=") }
            .map { String($0.dropFirst("agentry.layer=".count)) }
        return resources
    }

    /// Creates the environment disk if it does not exist; checks it if it does.
    public func ensureDisk(_ configuration: MachineConfiguration) throws -> Bool {
        let path = Self.disk(configuration.directory)
        try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: path) {
            // A running machine holds the image's lock; it was checked when that machine started.
            if Self.runningPID(configuration.directory) != nil { return false }
            let check = try commands.run(
                "qemu-img", ["check", "-q", path], package: "qemu-utils", timeout: .seconds(60))
            guard check.status == 0 else {
                throw MachineError(
                    .diskFailed,
                    "the environment disk \(path) is corrupt (qemu-img check: \(check.output.split(separator: "\n").first ?? "")); repair it with `qemu-img check -r all \(path)` or move it aside to start with an empty disk"
                )
            }
            return false
        }
        if let rootfs = configuration.image.rootfs {
            // debian-12: a copy-on-write overlay of the image's root filesystem (instant, shared base),
            // as large as the Environment asks; the guest grows the filesystem on boot.
            var status = stat()
            let baseSize = stat(rootfs, &status) == 0 ? UInt64(status.st_size) : 0
            try commands.check(
                "qemu-img",
                [
                    "create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfs, path,
                    "\(max(baseSize, configuration.diskBytes))",
                ],
                package: "qemu-utils", timeout: .seconds(60), what: "creating the environment disk")
            return true
        }
        // Formatted on the host (mkfs.ext4 is native there, emulated in a TCG guest), once per size:
        // a formatted empty disk is kept beside the images and copied (a qcow2 of an empty ext4 is
        // a few hundred KiB, so the copy is instant where formatting took a tenth of a second).
        let templates = (configuration.image.directory as NSString).deletingLastPathComponent + "/disks"
        let template = templates + "/ext4-\(configuration.diskBytes).qcow2"
        if !FileManager.default.fileExists(atPath: template) {
            try FileManager.default.createDirectory(atPath: templates, withIntermediateDirectories: true)
            let staging = TemporaryName.beside(template)
            try formatDisk(staging, bytes: configuration.diskBytes, scratch: templates)
            guard rename(staging, template) == 0 else {
                unlink(staging)
                throw MachineError(.diskFailed, "cannot create \(template): \(String(cString: strerror(errno)))")
            }
        }
        let staging = path + ".new"
        try? FileManager.default.removeItem(atPath: staging)
        do {
            try FileManager.default.copyItem(atPath: template, toPath: staging)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            let reason = (error as NSError).userInfo[NSUnderlyingErrorKey].map { "\($0)" } ?? error.localizedDescription
            throw MachineError(
                .diskFailed,
                "cannot create the environment disk \(path): \(reason.contains("28") || reason.lowercased().contains("space") ? "no space left on the host's disk" : reason)"
            )
        }
        guard rename(staging, path) == 0 else {
            throw MachineError(.diskFailed, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// An empty ext4 filesystem (label `agent`) of `bytes`, as a qcow2 at `path`: a sparse raw file
    /// formatted with mkfs.ext4, converted (only the metadata takes space).
    func formatDisk(_ path: String, bytes: UInt64, scratch: String) throws {
        let raw = TemporaryName.beside(scratch + "/format.raw")
        defer { unlink(raw) }
        let descriptor = open(raw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0, ftruncate(descriptor, off_t(bytes)) == 0 else {
            if descriptor >= 0 { close(descriptor) }
            throw MachineError(.diskFailed, "cannot create \(raw): \(String(cString: strerror(errno)))")
        }
        close(descriptor)
        try commands.check(
            "mkfs.ext4", ["-q", "-F", "-L", "agent", "-E", "lazy_itable_init=1,lazy_journal_init=1", raw],
            package: "e2fsprogs", timeout: .seconds(120), what: "formatting the environment disk")
        try commands.check(
            "qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, path], package: "qemu-utils",
            timeout: .seconds(120),
            what: "creating the environment disk")
    }

    public static func arguments(_ configuration: MachineConfiguration) -> [String] {
        let directory = configuration.directory
        var append = "console=ttyS0 reboot=t panic=-1 quiet agentry.name=\(configuration.name)"
        if configuration.network { append += " agentry.net=1" }
        if configuration.image.rootfs != nil { append += " agentry.root=1" }
        if let layer = configuration.layer { append += " agentry.layer=\(layer.key)" }
        var arguments = ["-M", "microvm"]
        switch configuration.accelerator {
        case .kvm:
            arguments += ["-accel", "kvm", "-cpu", "host"]
        case .tcg:
            arguments += ["-accel", "tcg,tb-size=64", "-cpu", "max"]
            // Under TCG the guest's TSC is the host's, but the kernel's quick PIT calibration is
            // timing-sensitive under emulation: when it fails the guest has no other reference and
            // hangs in early boot (seen in about one boot in six on a loaded host). Tell it the rate.
            if let khz = HostTSC.kilohertz { append += " tsc_early_khz=\(khz)" }
        }
        // Paths go into option values, where QEMU reads a comma as the next option: doubled, a
        // comma in the state directory is part of the path.
        let option = { (path: String) in path.replacingOccurrences(of: ",", with: ",,") }
        arguments += [
            "-m", "\(configuration.memoryMiB)M", "-smp", "\(configuration.cpus)",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", configuration.image.kernel, "-initrd", configuration.image.initrd, "-append", append,
            // The console goes to the supervisor, which keeps the boot in serial.log and nothing a
            // run could print to it (an unread socket drops output: a guest never blocks on it).
            "-chardev", "socket,id=console,path=\(option(Self.consoleSocket(directory))),server=on,wait=off",
            "-serial", "chardev:console",
            "-qmp", "unix:\(option(Self.qmpSocket(directory))),server=on,wait=off",
            "-drive", "id=env,file=\(option(Self.disk(directory))),format=qcow2,if=none,cache=writeback",
            "-device", "virtio-blk-device,drive=env",
        ]
        if let layer = configuration.layer {
            // Shared by every machine of the harness: QEMU never writes it (the guest sees it read-only).
            arguments += [
                "-drive", "id=harness,file=\(option(layer.path)),format=raw,if=none,readonly=on",
                "-device", "virtio-blk-device,drive=harness",
            ]
        }
        arguments += [
            "-device", "virtio-serial-device",
            "-chardev", "socket,id=ctl,path=\(option(Self.controlSocket(directory))),server=on,wait=off",
            "-device", "virtserialport,chardev=ctl,name=\(Wire.portName)",
            "-pidfile", Self.pidFile(directory),
        ]
        if configuration.allowlist == nil { unlink(Self.egressAllowFile(directory)) }
        if configuration.network {
            var netdev = "user,id=net"
            // Nothing leaves but what QEMU forwards (the proxy, the gateway), unless egress is `all`.
            if !configuration.unrestricted { netdev += ",restrict=on" }
            if let connector = configuration.gatewayConnector {
                // The model gateway: each guest connection to 10.0.2.101:80 goes to the socket the
                // run's gateway serves (nothing answers between runs).
                let command =
                    "\(GuestShell.quote(connector)) STDIO UNIX-CONNECT:\(GuestShell.quote(Self.gatewaySocket(directory)))"
                    .replacingOccurrences(of: ",", with: ",,")
                netdev += ",guestfwd=tcp:\(GatewayAddress.guestAddress):\(GatewayAddress.guestPort)-cmd:\(command)"
            }
            if let allowlist = configuration.allowlist, let connector = configuration.proxyConnector {
                // Nothing leaves but what the proxy relays. QEMU starts the connector for each guest
                // connection to 10.0.2.100:3128; it joins the supervisor's proxy, which bounds what
                // all of them cost. The allowlist is read from a file for each request, so a harness
                // installation can widen it for its package registries while it runs.
                try? allowlist.text.write(toFile: Self.egressAllowFile(directory), atomically: true, encoding: .utf8)
                let command =
                    "\(GuestShell.quote(connector)) STDIO UNIX-CONNECT:\(GuestShell.quote(Self.egressSocket(directory)))"
                    .replacingOccurrences(of: ",", with: ",,")
                netdev +=
                    ",guestfwd=tcp:\(EgressProxyAddress.guestAddress):\(EgressProxyAddress.guestPort)-cmd:\(command)"
            }
            arguments += ["-netdev", netdev, "-device", "virtio-net-device,netdev=net"]
        }
        return arguments
    }

    /// Starts the machine detached, under its supervisor, and returns its pid. The guest is not yet
    /// ready: connect right away and wait for its hello.
    public func start(_ configuration: MachineConfiguration) throws -> Int32 {
        let directory = configuration.directory
        if let pid = Self.runningPID(directory) { return pid }
        // Another supervisor may be starting this machine right now (an apply killed half-way
        // left it going): wait for it rather than start a second QEMU on the same disk.
        if MachineSupervisor.isHeld(directory) {
            let deadline = ContinuousClock.now + .seconds(60)
            while MachineSupervisor.isHeld(directory) && ContinuousClock.now < deadline {
                if let pid = Self.runningPID(directory) { return pid }
                usleep(50_000)
            }
            if let pid = Self.runningPID(directory) { return pid }
        }
        // The supervisor of a machine that just died may still be writing down how it ended.
        Self.cleanUp(directory)
        // A fresh serial log per boot, so errors quote this boot only.
        _ = FileManager.default.createFile(atPath: Self.serialLog(directory), contents: nil)
        guard let qemu = commands.locate("qemu-system-x86_64") else {
            throw MachineError(
                .toolMissing, "qemu-system-x86_64 is not installed (install it: apt-get install qemu-system-x86)")
        }
        let result = try commands.run(
            executable,
            ["machine-supervisor", "start", "--dir", directory, "--", qemu] + Self.arguments(configuration),
            timeout: .seconds(90))
        guard result.status == 0, let pid = Self.runningPID(directory) else {
            let tail = result.output.split(separator: "\n").suffix(6).joined(separator: "\n")
            throw MachineError(.bootFailed, "QEMU did not start the machine \(configuration.name):\n\(tail)")
        }
        return pid
    }

    /// A channel to the guest through the machine's supervisor. A machine running without one (started
    /// by an earlier agentry, or its supervisor died) gets one that adopts it first.
    public func channel(_ directory: String, deadline: ContinuousClock.Instant) throws -> ControlChannel {
        if !MachineSupervisor.isHeld(directory), Self.runningPID(directory) != nil {
            let result = try commands.run(
                executable, ["machine-supervisor", "start", "--dir", directory, "--adopt", "--"], timeout: .seconds(30))
            // Another agentry may have adopted it a moment before: then its supervisor serves us.
            guard result.status == 0 || MachineSupervisor.isHeld(directory) else {
                throw MachineError(
                    .guestFailed, "cannot supervise the running machine in \(directory): \(result.output)")
            }
        }
        return try ControlChannel.connect(MachineSupervisor.socket(directory), deadline: deadline)
    }

    /// Connects to the guest agent and waits for it to answer, or fails quoting the serial log.
    public func connect(_ directory: String, name: String, timeout: Duration) throws -> ControlChannel {
        let deadline = ContinuousClock.now + timeout
        let channel = try channel(directory, deadline: deadline)
        guard try channel.waitUntilReady(deadline: deadline, booting: false) != nil else {
            throw MachineError(
                .bootFailed,
                "the machine \(name) did not report in within \(timeout.goStyle); the end of its serial log:\n\(Self.serialTail(directory))"
            )
        }
        return channel
    }

    public static func serialTail(_ directory: String, lines: Int = 15) -> String {
        let text = (try? String(contentsOfFile: Self.serialLog(directory), encoding: .utf8)) ?? ""
        let tail = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines)
        return tail.map { "  | " + $0 }.joined(separator: "\n")
    }

    /// Stops the machine: a clean power-off through the guest agent when `graceful`, then QMP `quit`,
    /// then SIGKILL, each with a deadline. Returns when QEMU and its supervisor are gone; the
    /// supervisor records the stop as one agentry asked for.
    public func stop(_ directory: String, graceful: Bool) {
        guard let pid = Self.runningPID(directory) else { return }
        FileManager.default.createFile(atPath: MachineSupervisor.stopRequestFile(directory), contents: nil)
        if graceful, let channel = try? channel(directory, deadline: .now + .seconds(2)),
            (try? channel.waitUntilReady(deadline: .now + .seconds(3))) != nil
        {
            try? channel.shutdown()
            if Self.waitForExit(pid, within: .seconds(10)) { return Self.cleanUp(directory) }
        }
        try? QMP.quit(Self.qmpSocket(directory))
        if Self.waitForExit(pid, within: .seconds(5)) { return Self.cleanUp(directory) }
        kill(pid, SIGKILL)
        _ = Self.waitForExit(pid, within: .seconds(5))
        Self.cleanUp(directory)
    }

    /// Once QEMU is gone: its supervisor records the exit and leaves (a moment later), then the
    /// machine's sockets and pidfile go.
    static func cleanUp(_ directory: String) {
        if !MachineSupervisor.waitUntilReleased(directory, within: .seconds(3)),
            let supervisor = MachineSupervisor.runningPID(directory)
        {
            kill(supervisor, SIGKILL)
            _ = MachineSupervisor.waitUntilReleased(directory, within: .seconds(2))
        }
        let files = [
            Self.controlSocket(directory), Self.qmpSocket(directory), Self.pidFile(directory),
            MachineSupervisor.socket(directory),
        ]
        for path in files { try? FileManager.default.removeItem(atPath: path) }
    }

    static func waitForExit(_ pid: Int32, within timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if kill(pid, 0) != 0 { return true }
            // A zombie (of its supervisor, of init) still answers kill(0): check its state.
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                stat.split(separator: " ").dropFirst(2).first == "Z"
            {
                return true
            }
            usleep(20_000)
        }
        return kill(pid, 0) != 0
    }
}

/// The host's TSC rate, measured once against the monotonic clock.
enum HostTSC {
    static let kilohertz: Int? = {
        var start = timespec()
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let ticksStart = agentry_rdtsc()
        usleep(20_000)
        clock_gettime(CLOCK_MONOTONIC, &end)
        let ticksEnd = agentry_rdtsc()
        let nanoseconds = Double(end.tv_sec - start.tv_sec) * 1e9 + Double(end.tv_nsec - start.tv_nsec)
        guard nanoseconds > 0, ticksEnd > ticksStart else { return nil }
        let khz = Double(ticksEnd - ticksStart) / nanoseconds * 1e6
        return khz > 100_000 ? Int(khz.rounded()) : nil
    }()
}

/// A minimal QMP client: capabilities negotiation and one command.
enum QMP {
    static func quit(_ path: String) throws {
        _ = try command(path, "quit")
    }

    static func command(_ path: String, _ name: String) throws -> String {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw MachineError(.guestFailed, "socket failed") }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(107).enumerated() { buffer[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { throw MachineError(.guestFailed, "cannot connect to QMP at \(path)") }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func line() -> String {
            var bytes: [UInt8] = []
            var byte: UInt8 = 0
            while recv(descriptor, &byte, 1, 0) == 1 {
                if byte == 0x0A { break }
                bytes.append(byte)
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        func write(_ text: String) {
            var text = text + "\n"
            text.withUTF8 { _ = Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        _ = line()  // greeting
        write(#"{"execute":"qmp_capabilities"}"#)
        _ = line()
        write(#"{"execute":"\#(name)"}"#)
        var reply = line()
        while reply.contains("\"event\"") { reply = line() }
        return reply
    }
}
