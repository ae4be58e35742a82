// PID 1's work before the guest agent serves: what a shell /init used to do, without starting a
// process per step (under TCG every process start is emulated work on the boot's critical path).

import CGuestSupport
import Glibc

enum Boot {
    static let moduleFolder = "/lib/modules"

    /// Runs `argv` and waits for it; its status, or -1 when it could not start.
    @discardableResult
    static func run(_ argv: [String]) -> Int32 {
        let cArgv = argv.map { strdup($0) } + [nil]
        defer { cArgv.forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, argv[0], nil, nil, cArgv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    static func mount(_ source: String, _ target: String, _ type: String, _ flags: UInt = 0, _ data: String? = nil)
        -> Bool
    {
        mkdir(target, 0o755)
        if agentry_mount(source, target, type, flags, data) == 0 { return true }
        log("cannot mount \(type) on \(target): \(String(cString: strerror(errno)))")
        return false
    }

    static func write(_ path: String, _ text: String) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return }
        var text = text
        text.withUTF8 { _ = Glibc.write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
    }

    static func loadModules(_ list: String) {
        for name in text(list).split(separator: "\n") where !name.isEmpty {
            let descriptor = open("\(moduleFolder)/\(name).ko", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                log("cannot open module \(name)")
                continue
            }
            if agentry_finit_module(descriptor) != 0 && errno != EEXIST {
                log("cannot load module \(name): \(String(cString: strerror(errno)))")
            }
            close(descriptor)
        }
    }

    /// The kernel command line's `agentry.*` values.
    static func parameters() -> [String: String] {
        var values: [String: String] = [:]
        for word in text("/proc/cmdline").split(separator: " ") where word.hasPrefix("agentry.") {
            let parts = word.dropFirst("agentry.".count).split(separator: "=", maxSplits: 1)
            values[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return values
    }

    /// Mounts, loads the virtio modules, mounts the environment disk (at /agent, or as the new
    /// root for debian-12), a tmpfs for secrets, brings up the network when there is one, and for a
    /// debian-12 root switches into it and starts the guest agent again there.
    static func start() {
        for folder in ["/proc", "/sys", "/dev", "/run", "/tmp", "/agent"] { mkdir(folder, 0o755) }
        if access("/proc/self", F_OK) != 0 { _ = mount("proc", "/proc", "proc") }
        _ = mount("sysfs", "/sys", "sysfs")
        _ = mount("devtmpfs", "/dev", "devtmpfs")
        // Pseudo-terminals, for `agentry exec -t`.
        mkdir("/dev/pts", 0o755)
        _ = mount("devpts", "/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666,mode=0620")
        _ = mount("run", "/run", "tmpfs", 0, "mode=0755")
        _ = mount("tmp", "/tmp", "tmpfs", 0, "mode=1777")
        loadModules("\(moduleFolder)/order")
        let parameters = parameters()
        if let name = parameters["name"], !name.isEmpty { _ = sethostname(name, name.utf8.count) }
        let root = parameters["root"] == "1"
        var disk = "none"
        // The environment disk is the writable one; a harness layer is read-only.
        let disks = (0..<26).map { "vd" + String(UnicodeScalar(UInt8(97 + $0))) }.filter {
            access("/sys/block/\($0)", F_OK) == 0
        }
        let readOnly = { (name: String) in text("/sys/block/\(name)/ro").hasPrefix("1") }
        let environmentDisk = disks.first { !readOnly($0) }.map { "/dev/" + $0 } ?? "/dev/vda"
        if access(environmentDisk, F_OK) == 0 {
            if root {
                disk = mount(environmentDisk, "/newroot", "ext4") ? "root" : "failed"
                if disk == "root", let key = parameters["layer"], let layer = disks.first(where: readOnly) {
                    mountLayer("/dev/" + layer, key: key)
                }
            } else if agentry_mount(environmentDisk, "/agent", "ext4", 0, nil) == 0 {
                disk = "mounted"
            } else if !hasExtSuperblock(environmentDisk),
                run(["/bin/busybox", "mke2fs", "-q", "-F", "-L", "agent", environmentDisk]) == 0,
                mount(environmentDisk, "/agent", "ext2")
            {
                // Only a disk with no filesystem at all is formatted: one that fails to mount keeps
                // the agent's files for an operator to look at.
                disk = "formatted"
            } else {
                log("cannot mount the environment disk: \(String(cString: strerror(errno)))")
                disk = "failed"
            }
        }
        write("/run/agentry-disk", disk + "\n")
        _ = mount("secrets", "/run/secrets", "tmpfs", 0, "mode=0700,size=8m")
        if parameters["net"] == "1" {
            loadModules("\(moduleFolder)/order.net")
            run(["/bin/busybox", "ip", "link", "set", "lo", "up"])
            if run(["/bin/busybox", "ip", "link", "set", "eth0", "up"]) == 0 {
                run(["/bin/busybox", "udhcpc", "-q", "-n", "-i", "eth0", "-s", "/bin/udhcpc.script"])
            }
        }
        setenv("HOME", "/agent", 1)
        guard root, disk == "root" else { return }
        // debian-12: grow the root to the disk (online, a no-op once done), move the mounts into it,
        // switch root and start again from a copy of this program on the tmpfs.
        copy("/sbin/agentry-guest", to: "/run/agentry-guest")
        mkdir("/newroot/agent", 0o755)
        for folder in ["dev", "proc", "sys", "run", "tmp"] {
            mkdir("/newroot/" + folder, 0o755)
            if agentry_move_mount("/" + folder, "/newroot/" + folder) != 0 { log("cannot move /\(folder)") }
        }
        if access("/newroot/sbin/resize2fs", X_OK) == 0 {
            run(["/bin/busybox", "chroot", "/newroot", "/sbin/resize2fs", environmentDisk])
        }
        guard agentry_switch_root("/newroot") == 0 else {
            log("cannot switch root: \(String(cString: strerror(errno)))")
            return
        }
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("agentry-guest"), strdup("--booted"), nil]
        execv("/run/agentry-guest", argv)
        log("cannot start /run/agentry-guest: \(String(cString: strerror(errno)))")
    }

    /// The harness layer (a read-only ext4 disk made on the host) goes under the root's /usr, /etc,
    /// /opt and /var as the lower layer of an overlay whose upper layer is the environment disk's own
    /// folder: what the harness installed shows through wherever the disk has nothing of its own.
    static func mountLayer(_ device: String, key: String) {
        loadModules("\(moduleFolder)/order.layer")
        let layer = "/run/agentry-layer"
        guard mount(device, layer, "ext4", UInt(MS_RDONLY)) else { return }
        write("/run/agentry-layer.key", key + "\n")
        mkdir("/newroot/.agentry-layer-work", 0o700)
        for folder in ["usr", "etc", "opt", "var"] where access("\(layer)/\(folder)", F_OK) == 0 {
            let work = "/newroot/.agentry-layer-work/" + folder
            mkdir(work, 0o700)
            mkdir("/newroot/" + folder, 0o755)
            _ = mount(
                "overlay", "/newroot/" + folder, "overlay", 0,
                "lowerdir=\(layer)/\(folder),upperdir=/newroot/\(folder),workdir=\(work)")
        }
    }

    /// Whether the device holds an ext2/3/4 superblock (magic 0xEF53 at byte 1080).
    static func hasExtSuperblock(_ device: String) -> Bool {
        let descriptor = open(device, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var magic: [UInt8] = [0, 0]
        return pread(descriptor, &magic, 2, 1080) == 2 && magic == [0x53, 0xEF]
    }

    static func copy(_ from: String, to destination: String) {
        guard let bytes = readWholeFile(from, limit: 64 << 20) else { return }
        let descriptor = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        guard descriptor >= 0 else { return }
        bytes.withUnsafeBufferPointer { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
        close(descriptor)
    }
}
