import AgentryModel
import Foundation

/// Shell work in the guest, in one place: the PATHs commands get, quoting, and the scripts agentry
/// runs there for itself. Every command costs a process start, which is emulated work under TCG, so
/// each script folds its steps into one `sh -c`.
public enum GuestShell {
    /// The system's folders only: agentry's own scripts.
    public static let systemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    /// What harnesses and operators get: the installed harnesses' venv and npm folders first.
    public static let runPath =
        "\(HarnessLayerRecipe.venv)/bin:\(HarnessLayerRecipe.npmPrefix)/bin:" + systemPath

    /// `text` as one single-quoted shell word.
    public static func quote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

/// The scripts agentry runs in a guest, as text.
public enum GuestScripts {
    /// Where a configuration archive waits in the guest's tmpfs before it is unpacked.
    public static let configurationStaging = "/run/agentry-config.tar"
    public static let unpackStaging = "/run/agentry-unpack.tar"

    /// Applies the configuration archive at `staging` whose digest is `digest`: the files of the
    /// previous push (listed in `.agentry/files`) are removed first, with the folders that held only
    /// them, then the archive is unpacked. A no-op when that configuration is already there.
    public static func applyConfiguration(staging: String = configurationStaging, digest: String) -> String {
        let own = AgentLayout.own
        return """
            cd \(AgentLayout.home)
            current=; [ -f \(own)/config.digest ] && read -r current < \(own)/config.digest
            if [ "$current" != \(digest) ]; then
                if [ -f \(own)/files ]; then
                    while IFS= read -r file; do
                        [ -n "$file" ] || continue
                        rm -f -- "$file"
                        # and the folders that held only what agentry wrote
                        folder=$(dirname -- "$file")
                        while [ "$folder" != . ] && rmdir -- "$folder" 2>/dev/null; do folder=$(dirname -- "$folder"); done
                    done < \(own)/files
                fi
                tar -xf \(staging)
                echo \(digest) > \(own)/config.digest
            fi
            rm -f \(staging)

            """
    }

    /// Unpacks the archive at `staging` into the home, keeping what is there.
    public static func unpack(staging: String = unpackStaging) -> String {
        "cd \(AgentLayout.home) && tar -xf \(staging) && rm -f \(staging)"
    }

    /// The rest of a run's preparation after the configuration: the install check (prints
    /// `installed` or `not-installed`), the run's secrets folder (0700) and an empty output folder.
    public static func prepareRun(
        installMarker: String?, secretFolder: String, outputFolder: String, memoryFolder: String
    )
        -> String
    {
        var script = ""
        if let installMarker { script += "[ -f \(installMarker) ] && echo installed || echo not-installed\n" }
        script += "umask 077\nmkdir -p \(secretFolder)\numask 022\n"
        script += "rm -rf -- \(GuestShell.quote(outputFolder))\n"
        script += "mkdir -p -- \(GuestShell.quote(outputFolder)) \(GuestShell.quote(memoryFolder))\n"
        return script
    }

    public static func removeSecrets(_ secretFolder: String) -> String { "rm -rf -- \(secretFolder)" }

    /// The cgroup a run's harness and everything it starts live in: a process that leaves the
    /// harness's session (`setsid`, a double fork) stays in it, so the run's end reaches it.
    public static let runGroup = "/sys/fs/cgroup/agentry-run"

    /// Ends every process of the run's cgroup and waits (briefly) until they are gone.
    public static func endRun() -> String {
        """
        if [ -f \(runGroup)/cgroup.kill ]; then
            echo 1 > \(runGroup)/cgroup.kill 2>/dev/null || true
            i=0
            while [ -n "$(cat \(runGroup)/cgroup.procs 2>/dev/null)" ] && [ $i -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
        fi

        """
    }

    /// Before a run: the cgroup ready (cgroup2 mounted once per boot), and what an earlier run that
    /// was interrupted left behind ended: its processes, and its secrets folder.
    public static func clearEarlierRuns() -> String {
        """
        if [ ! -f /sys/fs/cgroup/cgroup.procs ]; then mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true; fi
        mkdir -p \(runGroup) 2>/dev/null || true

        """ + endRun() + "find /run/secrets -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + 2>/dev/null || true\n"
    }

    /// The name the run-group wrapper gives itself (its `$0`).
    public static let runGroupWrapper = "agentry-run"

    /// `command`, started inside the run's cgroup (as is all it starts).
    public static func inRunGroup(_ command: [String]) -> [String] {
        ["/bin/sh", "-c", "echo $$ > \(runGroup)/cgroup.procs 2>/dev/null; exec \"$@\"", runGroupWrapper] + command
    }

    /// The command `inRunGroup` wraps, when `argv` is such a wrapper.
    public static func runGroupCommand(_ argv: [String]) -> [String]? {
        guard argv.count > 4, argv[0] == "/bin/sh", argv[1] == "-c", argv[3] == runGroupWrapper else { return nil }
        return Array(argv[4...])
    }

    /// In one command: removes the run's secrets, then prints the files of `folders` (relative to
    /// the home) up to `smallestLimit` bytes as a tar on standard output, and for larger ones their
    /// digest and size on standard error (`sha256sum` and `wc -c` lines; see `CollectListing`).
    public static func collect(folders: [String], smallestLimit: Int, secretFolder: String) -> String {
        let kib = smallestLimit / 1024
        let existing = folders.map(GuestShell.quote).joined(separator: " ")
        // The run's secrets go, and whatever the harness left running (it must not write on).
        var script = "rm -rf -- \(secretFolder)\n" + endRun()
        script += "cd \(AgentLayout.home) || exit 0\nlist=/run/agentry-collect.$$\n"
        script += """
            set --
            for folder in \(existing); do [ -d "$folder" ] && set -- "$@" "$folder"; done
            : > $list
            if [ $# -gt 0 ]; then
                find "$@" -type f -size -\(kib + 1)k > $list
                find "$@" -type f -size +\(kib)k > $list.big
                if [ -s $list.big ]; then
                    while IFS= read -r f; do sha256sum "$f"; wc -c "$f"; done < $list.big >&2
                fi
                rm -f $list.big
            fi

            """
        // (busybox's tar has no -T: the names become the shell's arguments.)
        script +=
            "set --\nwhile IFS= read -r f; do set -- \"$@\" \"$f\"; done < $list\nrm -f $list\n[ $# -eq 0 ] || tar -cf - \"$@\"\n"
        return script
    }

    /// Runs a harness's own `install.script` in a `minimal` machine (a debian-12 machine gets its
    /// harness in a layer made on the host) and leaves `marker` behind.
    public static func install(_ harness: Harness, marker: String) -> String {
        let quote = GuestShell.quote
        var script = "set -e\n"
        if let custom = harness.install.script { script += custom + "\n" }
        script +=
            "mkdir -p \(AgentLayout.home)/\(AgentLayout.own)/installed && echo \(quote(harness.version ?? "")) > \(marker)\n"
        return script
    }
}

/// A harness's installation on an environment disk: done once per disk and harness revision, which
/// a marker file in `.agentry/installed/` remembers.
public enum HarnessInstall {
    /// The installation's revision; nil when the harness installs nothing.
    public static func digest(_ harness: Harness) -> String? {
        let steps = harness.install
        guard !steps.apt.isEmpty || !steps.pip.isEmpty || !steps.npm.isEmpty || steps.script != nil else { return nil }
        let parts = [
            harness.metadata.name, harness.version ?? "", steps.apt.joined(separator: ","),
            steps.pip.joined(separator: ","),
            steps.npm.joined(separator: ","), steps.script ?? "",
        ]
        return String(SHA256.hex(parts.joined(separator: "\n")).prefix(16))
    }

    /// The marker's path in the guest; nil when the harness installs nothing.
    public static func marker(_ harness: Harness) -> String? {
        digest(harness).map { "\(AgentLayout.home)/\(AgentLayout.own)/installed/\(harness.metadata.name)-\($0)" }
    }

    /// Whether it downloads packages (and so needs the debian-12 base and a network).
    public static func downloads(_ harness: Harness) -> Bool {
        !harness.install.apt.isEmpty || !harness.install.pip.isEmpty || !harness.install.npm.isEmpty
    }
}

/// The standard error of the collect script: `sha256sum` lines ("DIGEST  PATH") and `wc -c`
/// lines ("SIZE PATH") for the files too large for the archive. Untrusted: lines that are neither
/// are skipped.
public enum CollectListing {
    public static func parse(_ text: String) -> (digests: [String: String], sizes: [String: Int]) {
        var digests: [String: String] = [:]
        var sizes: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.trimmingCharacters(in: .whitespaces).split(
                separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2 else { continue }
            let path = parts[1].trimmingCharacters(in: .whitespaces)
            if parts[0].count == 64, parts[0].allSatisfy(\.isHexDigit) {
                digests[path] = String(parts[0])
            } else if let size = Int(parts[0]) {
                sizes[path] = size
            }
        }
        return (digests, sizes)
    }
}

/// A harness's installation, made once on the host and shared by every agent that uses it: a
/// read-only ext4 image holding only what the installation added to or changed in the debian-12
/// root. The guest mounts it as the lower layer of overlays on /usr, /etc, /opt and /var, under the
/// environment disk, so the harness is on the machine's PATH while the disk keeps only the agent's
/// own changes, and switching harness swaps the layer without touching the disk.
public enum HarnessLayerRecipe {
    /// Bumped when the way layers are made changes, so cached layers are made again.
    public static let recipeVersion = "harness-layer-1"

    /// The top-level folders a layer may add to; the guest overlays these.
    public static let folders = ["usr", "etc", "opt", "var"]

    /// Where pip installs (a virtual environment) and npm installs; the runs' PATH has both.
    public static let venv = "/opt/agentry/venv"
    public static let npmPrefix = "/opt/agentry/npm"

    /// The key of the layer for an installation on a root: nil when there is nothing to install.
    public static func key(_ install: InstallSteps, base: String, packages: [String]) -> String? {
        guard !install.apt.isEmpty || !install.pip.isEmpty || !install.npm.isEmpty || install.script != nil else {
            return nil
        }
        let parts = [
            recipeVersion, base, packages.sorted().joined(separator: ","), install.apt.joined(separator: ","),
            install.pip.joined(separator: ","), install.npm.joined(separator: ","), install.script ?? "",
        ]
        return String(SHA256.hex(parts.joined(separator: "\n")).prefix(16))
    }

    /// The installation as one shell script, run as root in the chroot: apt (with Python and its
    /// venv module when pip is used, npm when npm is), pip into one virtual environment, npm into one
    /// prefix, then the harness's own script.
    public static func script(_ install: InstallSteps) -> String {
        let quote = GuestShell.quote
        var script = "set -e\npackages=\(quote(Array(Set(install.apt)).sorted().joined(separator: " ")))\n"
        // What pip and npm need, unless the root has it already.
        var needed: [String] = []
        if !install.pip.isEmpty { needed += ["python3", "python3-venv"] }
        if !install.npm.isEmpty { needed += ["nodejs", "npm"] }
        for package in needed {
            script +=
                "dpkg-query -W -f='${Status}' \(package) 2>/dev/null | grep -q 'ok installed' || packages=\"$packages \(package)\"\n"
        }
        script +=
            "if [ -n \"$packages\" ]; then\n  set -f\n  apt-get update -qq\n  apt-get install -y -qq --no-install-recommends $packages\n  set +f\nfi\n"
        if !install.pip.isEmpty {
            script += "python3 -m venv \(venv)\n"
            script +=
                "\(venv)/bin/pip install -q --disable-pip-version-check --cache-dir /var/cache/agentry-pip \(install.pip.map(quote).joined(separator: " "))\n"
        }
        if !install.npm.isEmpty {
            script += "npm install -g -q --prefix \(npmPrefix) \(install.npm.map(quote).joined(separator: " "))\n"
        }
        if let custom = install.script { script += custom + "\n" }
        return script
    }

    /// The capabilities an installation runs without (setpriv's `--bounding-set`): whatever would let
    /// root leave the chroot or reach the host's processes and devices. It keeps what apt, dpkg and
    /// pip need (chown, file ownership and modes, setuid to apt's user).
    public static let droppedCapabilities = [
        "sys_admin", "sys_module", "sys_ptrace", "sys_rawio", "sys_boot", "sys_chroot", "mknod", "net_admin",
        "net_raw", "sys_time", "kill", "mac_admin", "mac_override", "audit_control", "audit_write", "syslog",
        "sys_pacct", "lease", "linux_immutable", "wake_alarm", "block_suspend", "bpf", "perfmon",
        "checkpoint_restore", "sys_nice", "sys_resource", "sys_tty_config", "audit_read", "ipc_owner",
    ].map { "-" + $0 }.joined(separator: ",")

    /// What the host's environment lends the installation: its proxies and pip's index settings
    /// (a mirror, a local wheelhouse), nothing else.
    public static func lentEnvironment(_ host: [String: String]) -> [String] {
        let names = [
            "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_INDEX_URL",
            "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
        ]
        return names.compactMap { name in host[name].map { "\(name)=\($0)" } }
    }

    /// What the layer leaves out: the chroot's own mounts, caches, logs and the agent's home.
    public static func excluded(_ path: String) -> Bool {
        let prefixes = [
            "var/cache/apt/", "var/lib/apt/lists/", "var/cache/agentry-pip/", "var/log/", "var/cache/debconf/",
            "var/tmp/",
        ]
        if prefixes.contains(where: { path.hasPrefix($0) || path + "/" == $0 }) { return true }
        return path == "etc/resolv.conf" || path == "etc/hostname"
            || path.hasSuffix("-old")
                && path.hasPrefix("var/lib/dpkg/")
    }
}
