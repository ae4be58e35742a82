import AgentryBasics
import AgentryModel
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The `debian-12` base: a Debian bookworm root filesystem made by `debootstrap --variant=minbase`
/// (plus an Environment's `packages.apt`), packed as a raw ext4 image. It boots with the `minimal`
/// image's kernel and initramfs, whose /init mounts the agent's environment disk (a qcow2 overlay on
/// this image) and switches root into it. Images are cached by content: the recipe, the suite, the
/// mirror and the sorted package list name the image, so each Environment's package set is built
/// once, and a changed list builds a new image without touching disks made from the old one.
extension ImageBuilder {
    static let debianRecipeVersion = "debian-12-2"
    static let suite = "bookworm"
    /// Always installed: resize2fs grows the root to the agent's disk size; certificates for HTTPS;
    /// Python with its venv module, which the harnesses installed with pip run on (their layers
    /// then hold only the harness).
    static let basePackages = ["e2fsprogs", "ca-certificates", "python3", "python3-venv"]

    /// Debian package names (policy §5.6.1), so nothing else reaches debootstrap's command line.
    static func isPackageName(_ name: String) -> Bool {
        guard name.utf8.count >= 2, let first = name.unicodeScalars.first,
            ("a"..."z").contains(first) || ("0"..."9").contains(first)
        else { return false }
        return name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("0"..."9").contains($0) || "+-.".unicodeScalars.contains($0)
        }
    }

    /// The `.crt` files of the host's local certificate authorities (`/usr/local/share/ca-certificates`,
    /// or `$AGENTRY_GUEST_CA_DIR`; an empty value trusts none).
    func localAuthorities() -> [(String, [UInt8])] {
        let folder = environment["AGENTRY_GUEST_CA_DIR"] ?? "/usr/local/share/ca-certificates"
        guard !folder.isEmpty, let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
            return []
        }
        return names.filter { $0.hasSuffix(".crt") }.sorted().compactMap { name in
            FileManager.default.contents(atPath: folder + "/" + name).map { (name, Array($0)) }
        }
    }

    /// The Debian mirror apt uses on this host (`AGENTRY_DEBIAN_MIRROR` overrides it).
    public func mirror() -> String {
        if let explicit = environment["AGENTRY_DEBIAN_MIRROR"], !explicit.isEmpty { return explicit }
        for file in ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ").map(String.init)
                let uris =
                    words.first == "URIs:"
                    ? Array(words.dropFirst()) : words.first == "deb" ? words.filter { $0.hasPrefix("http") } : []
                if let uri = uris.first(where: { $0.hasPrefix("http") && !$0.contains("security") }) { return uri }
            }
        }
        return "http://deb.debian.org/debian"
    }

    /// Builds (or finds) the root filesystem for `packages` and returns the bootable image.
    func buildDebian(
        packages: [String], imagesDirectory: String, guestAgent: String, refresh: Bool = false,
        progress: (String) -> Void
    ) throws -> GuestImage {
        let boot = try build(
            EnvironmentBase.minimal.rawValue, imagesDirectory: imagesDirectory, guestAgent: guestAgent,
            refresh: refresh,
            progress: progress)
        if let bad = packages.first(where: { !Self.isPackageName($0) }) {
            throw MachineError(
                .invalidInput,
                "\"\(bad)\" is not a Debian package name (packages.apt takes names such as python3 or git)")
        }
        let wanted = Array(Set(Self.basePackages + packages)).sorted()
        let mirror = self.mirror()
        let authorities = self.localAuthorities()
        var hasher = SHA256()
        hasher.update("\(Self.debianRecipeVersion)\n\(Self.suite)\n\(mirror)\n" + wanted.joined(separator: ","))
        for (name, bytes) in authorities {
            hasher.update(name)
            hasher.update(bytes)
        }
        let digest = Hex.string(hasher.finalize())
        let name = "debian-12-\(digest.prefix(16))"
        let directory = imagesDirectory + "/" + name
        let rootfs = directory + "/rootfs.raw"
        let manager = FileManager.default
        func image() -> GuestImage {
            var image = GuestImage(
                base: EnvironmentBase.debian12.rawValue, directory: boot.directory, kernelVersion: boot.kernelVersion,
                digest: digest, rootfs: rootfs)
            image.directory = directory
            return image
        }
        if manager.fileExists(atPath: directory + "/manifest"), manager.fileExists(atPath: rootfs) {
            if packages.isEmpty {
                try? "\(name)\n".write(
                    toFile: imagesDirectory + "/debian-12.current", atomically: true, encoding: .utf8)
            }
            return image()
        }
        guard geteuid() == 0 else {
            throw MachineError(
                .imageFailed,
                "building the debian-12 image runs debootstrap, which needs root; run `agentry image build debian-12` as root"
            )
        }
        guard commands.locate("debootstrap") != nil else {
            throw MachineError(.imageFailed, "debootstrap is not installed (apt-get install debootstrap)")
        }
        let work = imagesDirectory + "/.build-\(UUID().uuidString)"
        defer { try? manager.removeItem(atPath: work) }
        let cache = imagesDirectory + "/cache/debs"
        try manager.createDirectory(atPath: cache, withIntermediateDirectories: true)
        try manager.createDirectory(atPath: work, withIntermediateDirectories: true)
        let extra = wanted.filter { !Self.basePackages.contains($0) }
        progress(
            "debootstrap \(Self.suite) from \(mirror)" + (extra.isEmpty ? "" : " with \(extra.joined(separator: ", "))")
        )
        var step = 0
        let result = try commands.run(
            "debootstrap",
            [
                "--variant=minbase", "--include=" + wanted.joined(separator: ","), "--cache-dir=" + cache, Self.suite,
                work + "/root", mirror,
            ],
            package: "debootstrap", timeout: .seconds(1800),
            lines: { line in
                // debootstrap prints hundreds of lines; show its phases.
                let perPackage = [
                    "I: Retrieving ", "I: Validating ", "I: Unpacking ", "I: Extracting ", "I: Configuring ",
                ]
                if perPackage.contains(where: line.hasPrefix), !line.contains(" the ") {
                    step += 1
                    if step % 40 != 0 { return }
                }
                if line.hasPrefix("I: ") || line.hasPrefix("E: ") || line.hasPrefix("W: ") {
                    progress("debootstrap: " + line.dropFirst(3))
                }
            })
        guard result.status == 0 else {
            let lines = result.output.split(separator: "\n")
            let failure = lines.last(where: { $0.hasPrefix("E: ") }) ?? lines.last ?? ""
            let missing = lines.compactMap { line -> String? in
                guard
                    line.contains("Couldn't find package")
                        || line.contains("Package") && line.contains("has no installation candidate")
                else { return nil }
                return String(line)
            }
            throw MachineError(
                .imageFailed,
                "debootstrap could not build the debian-12 root filesystem (exit \(result.status)): \(failure)"
                    + (missing.isEmpty ? "" : "\n" + missing.joined(separator: "\n")))
        }
        let root = work + "/root"
        // The guest's DHCP client writes /run/resolv.conf; the guest agent is started from /run.
        try? manager.removeItem(atPath: root + "/etc/resolv.conf")
        try manager.createSymbolicLink(atPath: root + "/etc/resolv.conf", withDestinationPath: "/run/resolv.conf")
        try "agent\n".write(toFile: root + "/etc/hostname", atomically: true, encoding: .utf8)
        try manager.createDirectory(atPath: root + "/agent", withIntermediateDirectories: true)
        try "# the root is mounted by agentry's initramfs\n".write(
            toFile: root + "/etc/fstab", atomically: true, encoding: .utf8)
        for leftover in (try? manager.contentsOfDirectory(atPath: root + "/var/cache/apt/archives")) ?? []
        where leftover.hasSuffix(".deb") {
            try? manager.removeItem(atPath: root + "/var/cache/apt/archives/" + leftover)
        }

        // The host's local certificate authorities (a TLS-inspecting proxy's, a company's own) are
        // trusted in the guest too, or HTTPS from the guest (pip, npm, the model) fails where the
        // host's works.
        if !authorities.isEmpty {
            let folder = root + "/usr/local/share/ca-certificates"
            try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, bytes) in authorities {
                try Data(bytes).write(to: URL(fileURLWithPath: folder + "/" + name))
            }
            try commands.check(
                "chroot", [root, "update-ca-certificates"], package: "coreutils", timeout: .seconds(120),
                what: "adding the host's certificate authorities to the image")
            progress("trusting the host's certificate authorities: \(authorities.map(\.0).joined(separator: ", "))")
        }

        // Sized for its content plus room for what the first runs install; each agent's disk grows
        // it to the Environment's `resources.disk`.
        let used = try commands.check("du", ["-sx", "--block-size=1M", root], what: "measuring the root filesystem")
        let usedMiB = Int(used.split(separator: "\t").first.map(String.init) ?? "") ?? 1024
        let sizeMiB = max(1024, usedMiB * 3 / 2 + 256)
        progress("packing the root filesystem (\(usedMiB) MiB used, \(sizeMiB) MiB image)")
        let staged = work + "/image"
        try manager.createDirectory(atPath: staged, withIntermediateDirectories: true)
        try commands.check(
            "mkfs.ext4",
            [
                "-q", "-F", "-L", "root", "-d", root, "-E", "lazy_itable_init=1,lazy_journal_init=1",
                staged + "/rootfs.raw", "\(sizeMiB)M",
            ],
            package: "e2fsprogs", timeout: .seconds(900), what: "packing the debian-12 root filesystem")
        // Agents' disks use it as their backing file: it must never change.
        chmod(staged + "/rootfs.raw", 0o444)
        try
            "digest=\(digest)\nsuite=\(Self.suite)\nmirror=\(mirror)\npackages=\(wanted.joined(separator: ","))\nrecipe=\(Self.debianRecipeVersion)\nkernel=\(boot.kernelVersion)\n"
            .write(toFile: staged + "/manifest", atomically: true, encoding: .utf8)
        if manager.fileExists(atPath: directory) { try manager.removeItem(atPath: directory) }
        try manager.moveItem(atPath: staged, toPath: directory)
        if packages.isEmpty {
            try "\(name)\n".write(toFile: imagesDirectory + "/debian-12.current", atomically: true, encoding: .utf8)
        }
        progress("built \(name)")
        return image()
    }
}
