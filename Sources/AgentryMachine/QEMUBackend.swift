import AgentryBasics
import AgentryCore
import AgentryRender
import Foundation
import Synchronization

/// The machine backend on this host: one QEMU microVM per agent in `<state>/agents/<name>/`
/// (environment disk, sockets, pidfile, serial log), images in `<state>/images/`. Images and the
/// accelerator are found once per process and shared by every agent (image builds are serialised:
/// two agents on a new image wait for one build).
public final class QEMUBackend: MachineBackend {
    let stateDirectory: String
    let guestAgent: String
    /// The agentry executable: machines' supervisor and egress proxy.
    let executable: String
    let machine: QEMUMachine
    let images: ImageBuilder
    let forcedAccelerator: Accelerator?
    let progress: @Sendable (String) -> Void
    private let found = Mutex(Found())
    private let building = Mutex(())

    struct Found {
        var images: [String: GuestImage] = [:]
        var layers: [String: HarnessLayer] = [:]
        var accelerator: Accelerator?
    }

    /// `guestAgent`: the guest agent executable packed into images; `executable`: the agentry
    /// executable, whose `machine-supervisor` runs each machine and whose `egress-proxy` QEMU starts
    /// for machines with an allowlist.
    public init(
        stateDirectory: String, guestAgent: String, executable: String, commands: HostCommands,
        environment: [String: String], progress: @escaping @Sendable (String) -> Void
    ) {
        self.stateDirectory = stateDirectory
        self.guestAgent = guestAgent
        self.executable = executable
        self.machine = QEMUMachine(commands: commands, executable: executable)
        self.images = ImageBuilder(commands: commands, environment: environment)
        self.forcedAccelerator = environment["AGENTRY_ACCELERATOR"].flatMap(Accelerator.init(rawValue:))
        self.progress = progress
    }

    /// The machine's folder. Names are checked again here, where they become paths: a name that
    /// is not a DNS label (a damaged or hostile state database) never leaves `agents/`.
    /// Every unix socket a machine's folder holds.
    static func sockets(_ directory: String) -> [String] {
        [
            QEMUMachine.controlSocket(directory), QEMUMachine.qmpSocket(directory), MachineSupervisor.socket(directory),
            QEMUMachine.consoleSocket(directory), QEMUMachine.egressSocket(directory),
            QEMUMachine.gatewaySocket(directory),
        ]
    }
    /// How many bytes the longest socket adds to the machine's folder.
    static let longestSocketName = sockets("").map(\.utf8.count).max()!

    func directory(_ name: String) -> String {
        let safe = ResourceName.isValid(name) ? name : ".invalid/name-" + Hex.string(Array(name.utf8).prefix(32))
        return stateDirectory + "/agents/" + safe
    }
    var imagesDirectory: String { stateDirectory + "/images" }

    public func isRunning(_ name: String) -> Bool { QEMUMachine.runningPID(directory(name)) != nil }

    public func observe(_ name: String) -> MachineObservation {
        let directory = directory(name)
        // No machine folder, no machine (one stat for an agent never started here).
        var folder = stat()
        if stat(directory, &folder) != 0 && errno == ENOENT { return MachineObservation(process: .absent) }
        if let pid = QEMUMachine.runningPID(directory) {
            return MachineObservation(
                process: .running, resources: QEMUMachine.resources(pid: pid), allowlist: egressAllowlist(name))
        }
        if let exit = MachineSupervisor.recordedExit(directory) {
            let end = MachineEnd(
                status: exit.status, signal: exit.signal,
                at: Timestamp.parse(exit.at).map { Date(timeIntervalSince1970: $0) }, requested: exit.stopRequested)
            return MachineObservation(process: .ended(end))
        }
        return MachineObservation(process: diskExists(name) ? .stopped : .absent)
    }

    /// Where the model gateway of an agent's runs listens (its machine's guests reach it there).
    public func gatewaySocket(_ name: String) -> String { QEMUMachine.gatewaySocket(directory(name)) }

    public func diskExists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: diskLocation(name)) }

    public func diskLocation(_ name: String) -> String { QEMUMachine.disk(directory(name)) }

    /// A unix socket's path must fit the kernel's `sun_path` (107 bytes and a NUL).
    static let socketPathLimit = 107

    public func pathProblem(_ name: String) -> String? {
        let directory = directory(name)
        // Asked for every agent of a plan: the strings are made only for a path that is too long.
        guard directory.utf8.count + Self.longestSocketName > Self.socketPathLimit else { return nil }
        let longest = Self.sockets(directory).max { $0.utf8.count < $1.utf8.count }!
        return
            "the machine's socket \(longest) is \(longest.utf8.count) bytes, more than unix sockets take (\(Self.socketPathLimit)); use a state directory at most \(stateDirectory.utf8.count - (longest.utf8.count - Self.socketPathLimit)) bytes long (--state-dir, AGENTRY_STATE_DIR)"
    }

    public func provide(_ spec: MachineSpec) throws {
        _ = try configuration(spec)
    }

    public func prepare(_ spec: MachineSpec) throws -> PreparedMachine {
        if let problem = pathProblem(spec.name) { throw MachineError(.invalidInput, problem) }
        let configuration = try configuration(spec)
        let fresh = try machine.ensureDisk(configuration)
        return PreparedMachine(freshDisk: fresh, accelerator: configuration.accelerator.rawValue)
    }

    public func start(_ spec: MachineSpec) throws -> any GuestChannel {
        let configuration = try configuration(spec)
        _ = try machine.start(configuration)
        return try machine.channel(configuration.directory, deadline: .now + .seconds(10))
    }

    public func connect(_ name: String, timeout: Duration) throws -> any GuestChannel {
        try machine.connect(directory(name), name: name, timeout: timeout)
    }

    public func stop(_ name: String, graceful: Bool) {
        machine.stop(directory(name), graceful: graceful)
    }

    public func removeDisk(_ name: String) throws {
        try? FileManager.default.removeItem(atPath: diskLocation(name))
    }

    public func remove(_ name: String, keepDisk: Bool, owner: String?) throws {
        let directory = directory(name)
        if keepDisk {
            // The machine's runtime files go; the disk stays (deletionPolicy: retain), marked with
            // who it belonged to.
            for file in ["serial.log", "qemu.log", "exit.json", "supervisor.log"] {
                try? FileManager.default.removeItem(atPath: directory + "/" + file)
            }
            let retired = Retired(owner: owner ?? "", at: Timestamp.rfc3339(Date().timeIntervalSince1970))
            try JSONEncoder().encode(retired).write(to: URL(fileURLWithPath: directory + "/retired.json"))
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    struct Retired: Codable {
        var owner: String
        var at: String
    }

    public func claimDisk(_ name: String, owner: String?) throws -> DiskClaim {
        let directory = directory(name)
        let marker = directory + "/retired.json"
        guard let data = FileManager.default.contents(atPath: marker) else { return .none }
        let retired = try? JSONDecoder().decode(Retired.self, from: data)
        if let retired, !retired.owner.isEmpty, retired.owner == owner {
            try FileManager.default.removeItem(atPath: marker)
            return .kept
        }
        let folder = stateDirectory + "/agents/.retired"
        let aside = folder + "/\(name)-\(Timestamp.compact(Date().timeIntervalSince1970))-\(Hex.random(bytes: 3))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: directory, toPath: aside)
        return .setAside(aside)
    }

    public func retainedDisks() -> [RetainedDisk] {
        let agents = stateDirectory + "/agents"
        var disks: [RetainedDisk] = []
        func size(_ folder: String) -> Int64 {
            let attributes = try? FileManager.default.attributesOfItem(atPath: QEMUMachine.disk(folder))
            return (attributes?[.size] as? NSNumber)?.int64Value ?? 0
        }
        func retired(_ folder: String) -> Retired? {
            FileManager.default.contents(atPath: folder + "/retired.json").flatMap {
                try? JSONDecoder().decode(Retired.self, from: $0)
            }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: agents)) ?? []
        where ResourceName.isValid(name) {
            guard let marker = retired(agents + "/" + name) else { continue }
            disks.append(
                RetainedDisk(
                    id: name, agent: name, owner: marker.owner, retiredAt: marker.at, bytes: size(agents + "/" + name),
                    setAside: false))
        }
        let aside = agents + "/.retired"
        for folder in (try? FileManager.default.contentsOfDirectory(atPath: aside)) ?? [] where !folder.hasPrefix(".") {
            let marker = retired(aside + "/" + folder)
            let agent = folder.split(separator: "-").dropLast(3).joined(separator: "-")
            disks.append(
                RetainedDisk(
                    id: folder, agent: agent.isEmpty ? folder : agent, owner: marker?.owner ?? "",
                    retiredAt: marker?.at ?? "", bytes: size(aside + "/" + folder), setAside: true))
        }
        return disks.sorted { ($0.agent, $0.id) < ($1.agent, $1.id) }
    }

    public func removeRetainedDisk(_ id: String) throws {
        guard let disk = retainedDisks().first(where: { $0.id == id }) else {
            throw MachineError(.invalidInput, "no retained disk \(id) (see `agentry disks`)")
        }
        let folder = disk.setAside ? stateDirectory + "/agents/.retired/" + id : directory(id)
        if !disk.setAside, isRunning(id) {
            throw MachineError(.invalidInput, "\(id) has a running machine: its disk is in use")
        }
        do {
            try FileManager.default.removeItem(atPath: folder)
        } catch {
            throw MachineError(.diskFailed, "cannot remove \(folder): \(error.localizedDescription)")
        }
    }

    public func consoleTail(_ name: String) -> String { QEMUMachine.serialTail(directory(name)) }

    public func egressAllowlist(_ name: String) -> EgressAllowlist? {
        (try? String(contentsOfFile: QEMUMachine.egressAllowFile(directory(name)), encoding: .utf8)).map(
            EgressAllowlist.init(text:))
    }

    public func setEgressAllowlist(_ name: String, _ allowlist: EgressAllowlist) throws {
        try allowlist.text.write(
            toFile: QEMUMachine.egressAllowFile(directory(name)), atomically: true, encoding: .utf8)
    }

    public func buildImage(base: String) throws -> String {
        try building.withLock { _ in
            try images.build(
                base, imagesDirectory: imagesDirectory, guestAgent: guestAgent, refresh: true, progress: progress
            ).directory
        }
    }

    final class RunLock: RunLease {
        let descriptor: HeldDescriptor

        init(_ descriptor: Int32) { self.descriptor = HeldDescriptor(descriptor) }

        func release() { descriptor.release() }
    }

    public func lockRun(
        _ name: String, for holder: RunLockHolder, deadline: ContinuousClock.Instant?, interruption: Interruption?,
        waiting: (String) -> Void
    ) throws -> any RunLease {
        let folder = directory(name)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let path = folder + "/run.lock"
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw MachineError(.diskFailed, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        var told = false
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let other = Self.holder(descriptor)?.description ?? "another process"
            if !told {
                waiting("\(name) is busy with \(other); waiting for it to end")
                told = true
            }
            if interruption?.isInterrupted == true || deadline.map({ ContinuousClock.now >= $0 }) == true {
                close(descriptor)
                throw MachineError(
                    .guestFailed,
                    interruption?.isInterrupted == true
                        ? "interrupted while waiting for \(other) on \(name)"
                        : "\(name) is still busy with \(other); try again once it ends")
            }
            usleep(100_000)
        }
        let text = Array("\(holder.pid) \(holder.kind.rawValue)\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pwrite(descriptor, text, text.count, 0)
        return RunLock(descriptor)
    }

    public func runLockHolder(_ name: String) -> RunLockHolder? {
        let descriptor = open(directory(name) + "/run.lock", O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        if flock(descriptor, LOCK_EX | LOCK_NB) == 0 {
            flock(descriptor, LOCK_UN)
            return nil
        }
        return Self.holder(descriptor) ?? RunLockHolder(.run, pid: 0)
    }

    /// What a held run lock says of its holder: `pid kind`.
    static func holder(_ descriptor: Int32) -> RunLockHolder? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(descriptor, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        let words = String(decoding: buffer[0..<count], as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard let pid = words.first.flatMap({ Int32($0) }) else { return nil }
        return RunLockHolder(words.count > 1 && words[1] == "apply" ? .apply : .run, pid: pid)
    }

    /// The machine for a spec: its image (built when missing), the accelerator (probed once).
    func configuration(_ spec: MachineSpec) throws -> MachineConfiguration {
        let image = try image(base: spec.base, packages: spec.packages)
        var configuration = MachineConfiguration(
            name: spec.name, directory: directory(spec.name), image: image, cpus: spec.cpus, memoryMiB: spec.memoryMiB,
            diskBytes: spec.diskBytes, network: spec.egress.hasNetwork || spec.gateway,
            accelerator: accelerator(image))
        configuration.unrestricted = spec.egress == .unrestricted
        if spec.egress.allowlist != nil || spec.gateway {
            guard let socat = machine.commands.locate("socat") else {
                throw MachineError(
                    .toolMissing,
                    "socat is not installed; machines reach their egress proxy and model gateway through it (apt-get install socat)"
                )
            }
            if let allowlist = spec.egress.allowlist { configuration.restrict(to: allowlist, connector: socat) }
            if spec.gateway { configuration.gatewayConnector = socat }
        }
        if let install = spec.install, let key = spec.layer, image.rootfs != nil {
            configuration.layer = try layer(install, key: key, image: image, harness: spec.harness ?? spec.name)
        }
        return configuration
    }

    /// The harness layer for an installation on an image, made on the host when missing.
    func layer(_ install: InstallSteps, key: String, image: GuestImage, harness: String) throws -> HarnessLayer {
        let cacheKey = "layer " + key + " " + image.digest
        if let layer = found.withLock({ $0.layers[cacheKey] }) { return layer }
        return try building.withLock { _ in
            if let layer = found.withLock({ $0.layers[cacheKey] }) { return layer }
            let layer = try images.buildHarnessLayer(
                install, key: key, image: image, imagesDirectory: imagesDirectory, name: harness, progress: progress)
            found.withLock { $0.layers[cacheKey] = layer }
            return layer
        }
    }

    func image(base: String, packages: [String]) throws -> GuestImage {
        let key = base + " " + packages.joined(separator: ",")
        if let image = found.withLock({ $0.images[key] }) { return image }
        return try building.withLock { _ in
            if let image = found.withLock({ $0.images[key] }) { return image }
            let image = try images.build(
                base, packages: packages, imagesDirectory: imagesDirectory, guestAgent: guestAgent, progress: progress)
            found.withLock { $0.images[key] = image }
            return image
        }
    }

    func accelerator(_ image: GuestImage) -> Accelerator {
        if let accelerator = found.withLock({ $0.accelerator }) { return accelerator }
        return building.withLock { _ in
            if let accelerator = found.withLock({ $0.accelerator }) { return accelerator }
            let accelerator = AcceleratorProbe.detect(
                image: image, stateDirectory: stateDirectory, machine: machine, forced: forcedAccelerator, log: progress
            )
            found.withLock { $0.accelerator = accelerator }
            return accelerator
        }
    }
}
