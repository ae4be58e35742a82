import AgentryBasics
import AgentryModel
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A bootable guest: a kernel and an initramfs holding busybox, the virtio modules and the guest
/// agent; for `debian-12`, also a root filesystem image that each agent's environment disk overlays.
public struct GuestImage: Sendable, Equatable {
    public var base: String
    public var directory: String
    public var kernelVersion: String
    /// Content digest of everything that went into the image.
    public var digest: String
    public var kernel: String
    public var initrd: String
    /// A raw ext4 image of a Debian root filesystem; nil for `minimal`, whose root is the initramfs.
    public var rootfs: String?

    public init(base: String, directory: String, kernelVersion: String, digest: String, rootfs: String? = nil) {
        self.base = base
        self.directory = directory
        self.kernelVersion = kernelVersion
        self.digest = digest
        self.kernel = directory + "/vmlinuz"
        self.initrd = directory + "/initrd.img"
        self.rootfs = rootfs
    }
}

/// Builds guest images from Debian's packages into `<state>/images`, cached by content.
///
/// The `minimal` recipe: Debian's cloud kernel (`linux-image-cloud-amd64`, downloaded with
/// `apt-get download` and unpacked, never installed on the host), the virtio modules it builds as
/// modules (virtio, virtio_ring, virtio_mmio, virtio_blk, virtio_console, and virtio_net with its
/// failover helpers), `busybox-static` with its applet links, and the guest agent as `/init`, packed
/// as an uncompressed newc cpio (under TCG, decompressing the initramfs is emulated work on every boot).
public struct ImageBuilder: Sendable {
    let commands: HostCommands
    /// The host's environment (`AGENTRY_DEBIAN_MIRROR`, `AGENTRY_GUEST_CA_DIR`).
    let environment: [String: String]

    public init(commands: HostCommands, environment: [String: String]) {
        self.commands = commands
        self.environment = environment
    }

    /// Bumped when the recipe changes, so cached images are rebuilt.
    static let recipeVersion = "minimal-8"

    static let modules = [
        "drivers/virtio/virtio.ko", "drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio_mmio.ko",
        "drivers/block/virtio_blk.ko", "drivers/char/virtio_console.ko", "net/core/failover.ko",
        "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko", "fs/overlayfs/overlay.ko",
    ]

    static let initScript = "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\nexec /sbin/agentry-guest\n"

    static let dhcpScript = """
        #!/bin/sh
        [ "$1" = bound ] || [ "$1" = renew ] || exit 0
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "$router"
        for server in $dns; do echo "nameserver $server"; done > /run/resolv.conf
        """

    /// The image already built for `base`, if any.
    public static func current(_ base: String, imagesDirectory: String) -> GuestImage? {
        let marker = imagesDirectory + "/\(base).current"
        guard
            let name = try? String(contentsOfFile: marker, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines),
            !name.isEmpty
        else { return nil }
        let directory = imagesDirectory + "/" + name
        guard let manifest = try? String(contentsOfFile: directory + "/manifest", encoding: .utf8) else { return nil }
        let fields = Dictionary(
            manifest.split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            }, uniquingKeysWith: { a, _ in a })
        let image = GuestImage(
            base: base, directory: directory, kernelVersion: fields["kernel"] ?? "", digest: fields["digest"] ?? "")
        guard FileManager.default.fileExists(atPath: image.kernel), FileManager.default.fileExists(atPath: image.initrd)
        else { return nil }
        return image
    }

    /// Builds (or finds, by content) the image for `base`. `progress` gets one line per step. With
    /// `refresh`, asks apt for the current kernel package even when the local inputs did not change
    /// (`agentry image build` does; apply only builds what is missing or stale).
    /// `packages`: the Environment's `packages.apt`, for `debian-12` (built into its root image).
    public func build(
        _ base: String, packages: [String] = [], imagesDirectory: String, guestAgent: String, refresh: Bool = false,
        progress: (String) -> Void
    ) throws -> GuestImage {
        if base == EnvironmentBase.debian12.rawValue {
            return try buildDebian(
                packages: packages, imagesDirectory: imagesDirectory, guestAgent: guestAgent, refresh: refresh,
                progress: progress)
        }
        guard base == EnvironmentBase.minimal.rawValue else {
            throw MachineError(.invalidInput, "unknown image base \(base); the bases are minimal and debian-12")
        }
        let manager = FileManager.default
        let cache = imagesDirectory + "/cache"
        try manager.createDirectory(atPath: cache, withIntermediateDirectories: true)
        guard manager.isExecutableFile(atPath: guestAgent) else {
            throw MachineError(
                .imageFailed,
                "the guest agent (agentry-guest) is missing: agentry looked beside its own executable (\(guestAgent)), in $AGENTRY_GUEST and in /usr/lib/agentry/agentry-guest; build it with `swift build --product agentry-guest` or install both binaries with reconciler/install.sh"
            )
        }
        guard let busybox = ["/bin/busybox", "/usr/bin/busybox"].first(where: manager.isExecutableFile(atPath:)) else {
            throw MachineError(.imageFailed, "busybox is not installed (apt-get install busybox-static)")
        }

        // Hashing the inputs (and asking apt) costs more than a boot: skip both while the local
        // inputs are the files seen last time.
        let stamp = [busybox, guestAgent].map(Self.fileStamp).joined(separator: " ") + " \(Self.recipeVersion)"
        if !refresh, let image = Self.current(base, imagesDirectory: imagesDirectory),
            (try? String(contentsOfFile: image.directory + "/stamp", encoding: .utf8)) == stamp
        {
            return image
        }
        progress("resolving the kernel package (linux-image-cloud-amd64)")
        let kernelPackage = try resolveKernelPackage()
        let deb = try downloadedPackage(kernelPackage, into: cache, progress: progress)
        let busyboxBytes = try Data(contentsOf: URL(fileURLWithPath: busybox))
        let guestBytes = try strippedCopy(of: guestAgent, in: cache)
        var hasher = SHA256()
        hasher.update(Self.recipeVersion)
        hasher.update(kernelPackage)
        hasher.update(Self.initScript)
        hasher.update(Self.dhcpScript)
        hasher.update(Array(busyboxBytes))
        hasher.update(Array(guestBytes))
        let digest = Hex.string(hasher.finalize())
        let name = "\(base)-\(digest.prefix(16))"
        let directory = imagesDirectory + "/" + name
        if let image = Self.current(base, imagesDirectory: imagesDirectory), image.digest == digest {
            try? stamp.write(toFile: image.directory + "/stamp", atomically: true, encoding: .utf8)
            progress("image \(name) is up to date")
            return image
        }

        progress("unpacking \(kernelPackage)")
        let work = imagesDirectory + "/.build-\(UUID().uuidString)"
        defer { try? manager.removeItem(atPath: work) }
        try manager.createDirectory(atPath: work + "/kernel", withIntermediateDirectories: true)
        try commands.check(
            "dpkg-deb", ["-x", deb, work + "/kernel"], package: "dpkg", what: "unpacking \(kernelPackage)")
        let modulesRoot = work + "/kernel/lib/modules"
        guard let version = try manager.contentsOfDirectory(atPath: modulesRoot).first else {
            throw MachineError(.imageFailed, "\(kernelPackage) holds no kernel modules")
        }
        let vmlinuz = work + "/kernel/boot/vmlinuz-\(version)"
        guard manager.fileExists(atPath: vmlinuz) else {
            throw MachineError(.imageFailed, "\(kernelPackage) holds no vmlinuz")
        }

        progress("packing the initramfs (busybox, virtio modules, agentry-guest)")
        var archive = CPIOWriter()
        for folder in [
            "bin", "sbin", "lib", "lib/modules", "dev", "proc", "sys", "run", "tmp", "agent", "etc", "newroot",
        ] {
            archive.directory(folder)
        }
        archive.symlink("etc/resolv.conf", target: "/run/resolv.conf")
        // PID 1 is the guest agent itself (it mounts, loads modules and mounts the disk, see the
        // guest's Boot.swift); busybox's applets are links made here, not by `busybox --install`
        // at every boot. The Swift runtime reads /proc/self/exe as it starts, so /proc is mounted
        // by a two-line /init first.
        archive.file("init", Array(Self.initScript.utf8), mode: 0o755)
        archive.file("bin/busybox", Array(busyboxBytes), mode: 0o755)
        for folder in ["usr", "usr/bin", "usr/sbin"] { archive.directory(folder) }
        let applets = try commands.check(
            busybox, ["--list-full"], package: "busybox-static", what: "listing busybox's applets")
        for applet in applets.split(separator: "\n").map(String.init) where !applet.isEmpty && applet != "bin/busybox" {
            let folder = (applet as NSString).deletingLastPathComponent
            guard ["bin", "sbin", "usr/bin", "usr/sbin"].contains(folder), applet != "sbin/agentry-guest" else {
                continue
            }
            archive.symlink(applet, target: "/bin/busybox")
        }
        archive.file("bin/udhcpc.script", Array(Self.dhcpScript.utf8) + [0x0A], mode: 0o755)
        archive.file("sbin/agentry-guest", Array(guestBytes), mode: 0o755)
        var dependencies: [String: [String]] = [:]
        for module in Self.modules {
            let path = "\(modulesRoot)/\(version)/kernel/\(module)"
            guard let bytes = manager.contents(atPath: path) else {
                throw MachineError(.imageFailed, "\(kernelPackage) has no \(module); the image recipe needs it")
            }
            let name = String((module as NSString).lastPathComponent.dropLast(3))
            dependencies[name] = Self.moduleDependencies(Array(bytes))
            archive.file("lib/modules/\(name).ko", Array(bytes), mode: 0o644)
        }
        // Load order from each module's own `depends=`, so it holds for any kernel version.
        let disk = try Self.loadOrder(["virtio_blk", "virtio_console", "virtio_mmio"], dependencies)
        let network = try Self.loadOrder(["virtio_net"], dependencies).filter { !disk.contains($0) }
        archive.file("lib/modules/order", Array((disk.joined(separator: "\n") + "\n").utf8), mode: 0o644)
        archive.file("lib/modules/order.net", Array((network.joined(separator: "\n") + "\n").utf8), mode: 0o644)
        // Overlays, for a harness layer under a debian-12 root.
        let overlay = try Self.loadOrder(["overlay"], dependencies).filter { !disk.contains($0) }
        archive.file("lib/modules/order.layer", Array((overlay.joined(separator: "\n") + "\n").utf8), mode: 0o644)
        archive.device("dev/console", major: 5, minor: 1)

        let staged = work + "/image"
        try manager.createDirectory(atPath: staged, withIntermediateDirectories: true)
        try Data(archive.finish()).write(to: URL(fileURLWithPath: staged + "/initrd.img"))
        try manager.copyItem(atPath: vmlinuz, toPath: staged + "/vmlinuz")
        try "digest=\(digest)\nkernel=\(version)\npackage=\(kernelPackage)\nrecipe=\(Self.recipeVersion)\n"
            .write(toFile: staged + "/manifest", atomically: true, encoding: .utf8)
        try stamp.write(toFile: staged + "/stamp", atomically: true, encoding: .utf8)
        if manager.fileExists(atPath: directory) { try manager.removeItem(atPath: directory) }
        try manager.moveItem(atPath: staged, toPath: directory)
        try "\(name)\n".write(toFile: imagesDirectory + "/\(base).current", atomically: true, encoding: .utf8)
        progress("built \(name) (kernel \(version))")
        return GuestImage(base: base, directory: directory, kernelVersion: version, digest: digest)
    }

    /// Identity of a file without reading it: path, size, modification time, inode.
    static func fileStamp(_ path: String) -> String {
        var status = stat()
        guard stat(path, &status) == 0 else { return path + ":missing" }
        return "\(path):\(status.st_size):\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec):\(status.st_ino)"
    }

    /// The guest agent without its symbols (a debug build carries megabytes of them into every boot).
    func strippedCopy(of path: String, in folder: String) throws -> Data {
        let copy = TemporaryName.beside(folder + "/agentry-guest", "stripped")
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        if commands.locate("strip") != nil {
            _ = try? commands.run("strip", ["--strip-all", copy], timeout: .seconds(60))
        }
        return try Data(contentsOf: URL(fileURLWithPath: copy))
    }

    /// The `depends=` entry of a kernel module's modinfo section.
    static func moduleDependencies(_ bytes: [UInt8]) -> [String] {
        let marker = Array("depends=".utf8)
        var index = 0
        while index + marker.count < bytes.count {
            if bytes[index] == marker[0], Array(bytes[index..<(index + marker.count)]) == marker,
                index == 0 || bytes[index - 1] == 0
            {
                var end = index + marker.count
                while end < bytes.count, bytes[end] != 0 { end += 1 }
                let list = String(decoding: bytes[(index + marker.count)..<end], as: UTF8.self)
                return list.split(separator: ",").map(String.init)
            }
            index += 1
        }
        return []
    }

    /// Dependencies first, each module once.
    static func loadOrder(_ wanted: [String], _ dependencies: [String: [String]]) throws -> [String] {
        var order: [String] = []
        func visit(_ name: String, _ path: [String]) throws {
            if order.contains(name) { return }
            guard !path.contains(name) else {
                throw MachineError(.imageFailed, "kernel modules depend on each other in a cycle: \(path)")
            }
            guard let needs = dependencies[name] else {
                throw MachineError(
                    .imageFailed, "kernel module \(name) is needed (by \(path.last ?? "the image")) but not packed")
            }
            for need in needs { try visit(need, path + [name]) }
            order.append(name)
        }
        for name in wanted { try visit(name, []) }
        return order
    }

    /// `linux-image-cloud-amd64` is a metapackage: the real package is its dependency.
    func resolveKernelPackage() throws -> String {
        let output = try commands.run("apt-cache", ["depends", "linux-image-cloud-amd64"], package: "apt")
        let dependency = output.output.split(separator: "\n").lazy.compactMap { line -> String? in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("Depends: linux-image-") else { return nil }
            return String(trimmed.dropFirst("Depends: ".count))
        }.first
        guard let dependency else {
            throw MachineError(
                .imageFailed,
                "cannot find the package linux-image-cloud-amd64 in the apt lists; run `apt-get update` (as root) and try again"
            )
        }
        return dependency
    }

    func downloadedPackage(_ package: String, into cache: String, progress: (String) -> Void) throws -> String {
        let manager = FileManager.default
        if let existing = try manager.contentsOfDirectory(atPath: cache).first(where: {
            $0.hasPrefix(package + "_") && $0.hasSuffix(".deb")
        }) {
            return cache + "/" + existing
        }
        progress("downloading \(package)")
        let result = try commands.run(
            "apt-get", ["download", package], package: "apt", timeout: .seconds(600), directory: cache)
        guard result.status == 0,
            let file = try manager.contentsOfDirectory(atPath: cache).first(where: {
                $0.hasPrefix(package + "_") && $0.hasSuffix(".deb")
            })
        else {
            let tail = result.output.split(separator: "\n").suffix(4).joined(separator: "\n")
            throw MachineError(.imageFailed, "cannot download the package \(package) (apt-get download):\n\(tail)")
        }
        return cache + "/" + file
    }
}

/// Writes a cpio archive in the "newc" format the kernel unpacks as an initramfs.
struct CPIOWriter {
    private var bytes: [UInt8] = []
    private var inode = 1

    mutating func directory(_ path: String) {
        entry(path, mode: 0o040755, data: [])
    }

    mutating func file(_ path: String, _ data: [UInt8], mode: Int) {
        entry(path, mode: 0o100000 | mode, data: data)
    }

    mutating func symlink(_ path: String, target: String) {
        entry(path, mode: 0o120777, data: Array(target.utf8))
    }

    mutating func device(_ path: String, major: Int, minor: Int) {
        entry(path, mode: 0o020600, data: [], rdevMajor: major, rdevMinor: minor)
    }

    mutating func entry(_ path: String, mode: Int, data: [UInt8], rdevMajor: Int = 0, rdevMinor: Int = 0) {
        let name = Array(path.utf8) + [0]
        let fields = [inode, mode, 0, 0, 1, 0, data.count, 0, 0, rdevMajor, rdevMinor, name.count, 0]
        inode += 1
        bytes += Array("070701".utf8)
        for field in fields {
            let hex = String(field, radix: 16, uppercase: true)
            bytes += Array((String(repeating: "0", count: 8 - hex.count) + hex).utf8)
        }
        bytes += name
        pad()
        bytes += data
        pad()
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    mutating func finish() -> [UInt8] {
        entry("TRAILER!!!", mode: 0, data: [])
        return bytes
    }
}
