import AgentryBasics
import AgentryModel
import AgentryRender
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A harness layer made on the host (see `HarnessLayerRecipe`).
public struct HarnessLayer: Sendable, Equatable {
    /// `HarnessLayerRecipe.key`: names the layer to the guest and in the machine's command line.
    public var key: String
    /// The read-only ext4 image.
    public var path: String
}

extension ImageBuilder {
    /// Makes (or finds) the layer of `install` on the debian-12 `image`; `key` from `HarnessLayerRecipe.key`.
    /// An installation that fails throws with the end of its output, and leaves nothing behind.
    func buildHarnessLayer(
        _ install: InstallSteps, key: String, image: GuestImage, imagesDirectory: String, name: String,
        progress: (String) -> Void
    ) throws -> HarnessLayer {
        let manager = FileManager.default
        let directory = "\(imagesDirectory)/layers/\(key)-\(image.digest.prefix(16))"
        let layer = HarnessLayer(key: key, path: directory + "/layer.raw")
        if manager.fileExists(atPath: directory + "/manifest"), manager.fileExists(atPath: layer.path) { return layer }
        guard geteuid() == 0 else {
            throw MachineError(
                .imageFailed,
                "building the harness layer of \(name) runs its installation in a chroot, which needs root")
        }
        try manager.createDirectory(atPath: imagesDirectory + "/layers", withIntermediateDirectories: true)
        let work = "\(imagesDirectory)/layers/.build-\(UUID().uuidString)"
        let root = work + "/root"
        var mounted: [String] = []
        var layerMount: String?
        func unmount(_ point: String) {
            if (try? commands.run("umount", [point]))?.status != 0 { _ = try? commands.run("umount", ["-l", point]) }
        }
        func unmountLayer() {
            layerMount.map(unmount)
            layerMount = nil
        }
        func unmountAll() {
            mounted.reversed().forEach(unmount)
            mounted.removeAll()
        }
        defer {
            unmountAll()
            unmountLayer()
            // Never remove through a mount that is still there (the host's caches are bound in).
            if !Self.hasMounts(under: work) { try? manager.removeItem(atPath: work) }
        }
        let started = ContinuousClock.now
        progress("building the harness layer of \(name) on the host (\(key))")
        let base = try unpackedRoot(image, imagesDirectory: imagesDirectory)
        try manager.createDirectory(atPath: root, withIntermediateDirectories: true)

        // The installation writes into an overlay over the unpacked root, so its upper folder is
        // exactly what it added or changed; where the host allows no mounts, into a copy, compared
        // with the root afterwards.
        // `AGENTRY_LAYER_MOUNTS=0`: no mounts at all, as in a container that forbids them.
        let mounts = commands.environment["AGENTRY_LAYER_MOUNTS"] != "0"
        // Where the host can mount the layer's own (sparse) filesystem, the overlay's upper folder
        // is in it: the installation writes the layer itself, and nothing is copied afterwards.
        let fileSystem = work + "/layer-fs"
        try manager.createDirectory(atPath: fileSystem, withIntermediateDirectories: true)
        if mounts,
            (try? commands.run(
                "mkfs.ext4",
                [
                    "-q", "-F", "-L", "harness", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard",
                    work + "/layer.raw", "\(Self.directLayerGiB)G",
                ]))?.status == 0,
            (try? commands.run("mount", ["-o", "loop", work + "/layer.raw", fileSystem]))?.status == 0
        {
            layerMount = fileSystem
        } else {
            try? manager.removeItem(atPath: work + "/layer.raw")
        }
        let direct = layerMount != nil
        let upper = (direct ? fileSystem : work) + "/upper"
        let overlayWork = (direct ? fileSystem : work) + "/overlay-work"
        try manager.createDirectory(atPath: upper, withIntermediateDirectories: true)
        try manager.createDirectory(atPath: overlayWork, withIntermediateDirectories: true)
        let overlay =
            mounts
            && (try? commands.run(
                "mount",
                [
                    "-t", "overlay", "overlay", "-o",
                    "lowerdir=\(base),upperdir=\(upper),workdir=\(overlayWork)", root,
                ]))?.status == 0
        var before: [String: FileSignature] = [:]
        if overlay {
            mounted.append(root)
        } else {
            try commands.check(
                "cp", ["-a", base + "/.", root], package: "coreutils", timeout: .seconds(600),
                what: "copying the debian-12 root for the harness installation")
            before = try FileSignature.walk(root)
        }

        // The chroot gets the kernel's views, the host's name servers, and the host's download
        // caches (kept across builds), bound in.
        func bind(_ source: String, _ target: String) {
            try? manager.createDirectory(atPath: root + target, withIntermediateDirectories: true)
            guard mounts else { return }
            if (try? commands.run("mount", ["--bind", source, root + target]))?.status == 0 {
                mounted.append(root + target)
            }
        }
        try? manager.createDirectory(atPath: root + "/proc", withIntermediateDirectories: true)
        bind("/dev", "/dev")
        let caches = imagesDirectory + "/cache"
        for (cache, target) in [
            ("debs", "/var/cache/apt/archives"), ("apt-lists", "/var/lib/apt/lists"), ("pip", "/var/cache/agentry-pip"),
        ] {
            try manager.createDirectory(atPath: "\(caches)/\(cache)/partial", withIntermediateDirectories: true)
            bind("\(caches)/\(cache)", target)
        }
        if !mounted.contains(root + "/dev") {
            // Without mounts (a container that forbids them): the few devices an installation uses.
            for (device, minor) in [("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)] {
                mknod(root + "/dev/" + device, mode_t(S_IFCHR) | 0o666, dev_t(1 << 8 | minor))
            }
        }
        try manager.createDirectory(atPath: root + "/run", withIntermediateDirectories: true)
        let resolv = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        try resolv.write(toFile: root + "/run/resolv.conf", atomically: true, encoding: .utf8)

        var tail: [String] = []
        let environment =
            [
                "PATH=" + GuestShell.systemPath, "HOME=/root", "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
            ] + HarnessLayerRecipe.lentEnvironment(commands.environment)
        // The installation is the repository's code running as root on the host: a chroot alone
        // does not hold root. It runs without the capabilities that leave one (chroot, mounts,
        // ptrace, raw devices, modules, signals to others) and can gain none back; where mounts are
        // allowed, also in its own process, IPC and host-name namespaces with a /proc of its own.
        let confined =
            [root, "/usr/bin/setpriv", "--bounding-set", HarnessLayerRecipe.droppedCapabilities, "--nnp", "--"]
            + ["/usr/bin/env", "-i"] + environment + ["/bin/sh", "-c", HarnessLayerRecipe.script(install)]
        let result = try commands.run(
            mounts ? "unshare" : "chroot",
            mounts
                ? ["--pid", "--fork", "--kill-child", "--ipc", "--uts", "--mount-proc=\(root)/proc", "chroot"]
                    + confined
                : confined,
            package: mounts ? "util-linux" : "coreutils", timeout: .seconds(1800),
            lines: { line in
                tail = Array((tail + [String(line.prefix(1000))]).suffix(30))
                if !line.trimmingCharacters(in: .whitespaces).isEmpty { progress("install: " + line.prefix(300)) }
            })
        guard result.status == 0 else {
            throw MachineError(
                .imageFailed,
                "installing the harness \(name) failed (exit \(result.status)) while building its layer on the host:\n"
                    + tail.joined(separator: "\n"))
        }
        unmountAll()

        // Only what the installation added or changed, in the folders the guest overlays, linked
        // (not copied) into the folder the layer is packed from. An overlay's whiteouts (character
        // devices 0:0) are left out: a layer is the lowest, there is nothing under it to hide.
        let source = overlay ? upper : root
        let after = try FileSignature.walk(source)
        func kept(_ path: String, _ signature: FileSignature) -> Bool {
            guard let top = path.split(separator: "/").first, HarnessLayerRecipe.folders.contains(String(top)),
                !HarnessLayerRecipe.excluded(path), signature.mode & S_IFMT != S_IFCHR
            else { return false }
            return before[path] != signature
        }
        let changed = after.filter { kept($0.key, $0.value) }.keys.sorted()
        let usedMiB: Int
        if direct {
            // The upper folder is the layer: what it should not hold goes, the rest moves to the
            // filesystem's root (a rename), and the overlay's bookkeeping is removed.
            for (path, signature) in after.sorted(by: { $0.key > $1.key }) where !kept(path, signature) {
                let full = upper + "/" + path
                if signature.mode & S_IFMT == S_IFDIR {
                    if !changed.contains(where: { $0.hasPrefix(path + "/") }) { try? manager.removeItem(atPath: full) }
                } else {
                    unlink(full)
                }
            }
            for folder in HarnessLayerRecipe.folders where manager.fileExists(atPath: upper + "/" + folder) {
                try manager.moveItem(atPath: upper + "/" + folder, toPath: fileSystem + "/" + folder)
            }
            try manager.removeItem(atPath: upper)
            try manager.removeItem(atPath: overlayWork)
            try? manager.removeItem(atPath: fileSystem + "/lost+found")
            let used = try commands.check("du", ["-sx", "--block-size=1M", fileSystem], what: "measuring the layer")
            usedMiB = Int(used.split(separator: "\t").first.map(String.init) ?? "") ?? 0
            unmountLayer()
        } else {
            let staged = work + "/stage"
            try manager.createDirectory(atPath: staged, withIntermediateDirectories: true)
            for path in changed {
                try Self.stage(path, from: source, into: staged, signature: after[path]!)
            }
            let used = try commands.check(
                "du", ["-sx", "--block-size=1M", staged], what: "measuring the harness layer")
            usedMiB = Int(used.split(separator: "\t").first.map(String.init) ?? "") ?? 256
            let sizeMiB = usedMiB + usedMiB / 8 + 32
            try commands.check(
                "mkfs.ext4",
                [
                    "-q", "-F", "-L", "harness", "-O", "^has_journal", "-d", staged, "-E",
                    "lazy_itable_init=1", work + "/layer.raw", "\(sizeMiB)M",
                ],
                package: "e2fsprogs", timeout: .seconds(900), what: "packing the harness layer")
        }
        chmod(work + "/layer.raw", 0o444)
        try
            "key=\(key)\nimage=\(image.digest)\nfiles=\(changed.count)\nsize=\(usedMiB)M\nrecipe=\(HarnessLayerRecipe.recipeVersion)\n"
            .write(toFile: work + "/manifest", atomically: true, encoding: .utf8)
        let final = work + "/final"
        try manager.createDirectory(atPath: final, withIntermediateDirectories: true)
        try manager.moveItem(atPath: work + "/layer.raw", toPath: final + "/layer.raw")
        try manager.moveItem(atPath: work + "/manifest", toPath: final + "/manifest")
        // Another build of the same layer may have finished first: its layer is as good as this one.
        if !manager.fileExists(atPath: directory + "/manifest") {
            try? manager.removeItem(atPath: directory)
            try manager.moveItem(atPath: final, toPath: directory)
        }
        progress(
            "built the harness layer of \(name): \(changed.count) files, \(usedMiB) MiB, in \((ContinuousClock.now - started).goStyle)"
        )
        return layer
    }

    /// The size of a layer written in place: a sparse file, so only what the harness holds takes room.
    static let directLayerGiB = 8

    /// The image's root filesystem unpacked (once per image; never written to afterwards), which
    /// each layer's installation starts from.
    func unpackedRoot(_ image: GuestImage, imagesDirectory: String) throws -> String {
        guard let rootfs = image.rootfs else {
            throw MachineError(.invalidInput, "a harness layer needs the debian-12 base")
        }
        let manager = FileManager.default
        let unpacked = "\(imagesDirectory)/layers/.root-\(image.digest.prefix(16))"
        if manager.fileExists(atPath: unpacked + "/etc/debian_version") { return unpacked }
        let temporary = "\(imagesDirectory)/layers/.root-\(UUID().uuidString)"
        defer { try? manager.removeItem(atPath: temporary) }
        try manager.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        try commands.check(
            "debugfs", ["-R", "rdump / \(temporary)", rootfs], package: "e2fsprogs", timeout: .seconds(600),
            what: "unpacking the debian-12 root for harness installations")
        if !manager.fileExists(atPath: unpacked + "/etc/debian_version") {
            try? manager.removeItem(atPath: unpacked)
            try manager.moveItem(atPath: temporary, toPath: unpacked)
        }
        return unpacked
    }

    /// Puts one entry of the installation into the staging folder: a folder made with its mode and
    /// owner, a file hard-linked, a symbolic link made again; missing parents are made plain.
    static func stage(_ path: String, from source: String, into staged: String, signature: FileSignature) throws {
        let target = staged + "/" + path
        let parent = (target as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        switch signature.mode & S_IFMT {
        case S_IFDIR:
            if mkdir(target, signature.mode & 0o7777) != 0 && errno != EEXIST {
                throw MachineError(.imageFailed, "cannot stage \(path): \(String(cString: strerror(errno)))")
            }
            chmod(target, signature.mode & 0o7777)
            chown(target, signature.owner, signature.group)
        case S_IFLNK:
            let destination = try FileManager.default.destinationOfSymbolicLink(atPath: source + "/" + path)
            unlink(target)
            if symlink(destination, target) != 0 {
                throw MachineError(.imageFailed, "cannot stage \(path): \(String(cString: strerror(errno)))")
            }
            lchown(target, signature.owner, signature.group)
        default:
            if link(source + "/" + path, target) != 0 {
                throw MachineError(.imageFailed, "cannot stage \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Whether anything is mounted at or below `folder`.
    static func hasMounts(under folder: String) -> Bool {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return true }
        return mounts.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 1 && (fields[1] == folder || fields[1].hasPrefix(folder + "/"))
        }
    }
}

/// What tells a file apart before and after an installation, without reading it.
struct FileSignature: Equatable {
    var inode: UInt64
    var size: Int64
    var modified: Int64
    var mode: UInt32
    var owner: UInt32
    var group: UInt32

    /// Every entry under `root` by its path relative to it (symbolic links are not followed).
    static func walk(_ root: String) throws -> [String: FileSignature] {
        var found: [String: FileSignature] = [:]
        var pending = [""]
        while let relative = pending.popLast() {
            let folder = relative.isEmpty ? root : root + "/" + relative
            guard let stream = opendir(folder) else { continue }
            defer { closedir(stream) }
            while let entry = readdir(stream) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name == "." || name == ".." { continue }
                let path = relative.isEmpty ? name : relative + "/" + name
                var info = stat()
                guard lstat(root + "/" + path, &info) == 0 else { continue }
                found[path] = FileSignature(
                    inode: UInt64(info.st_ino), size: Int64(info.st_size),
                    modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
                    mode: info.st_mode, owner: info.st_uid, group: info.st_gid)
                if info.st_mode & S_IFMT == S_IFDIR, relative.isEmpty ? !["proc", "sys", "dev"].contains(name) : true {
                    pending.append(path)
                }
            }
        }
        return found
    }
}
