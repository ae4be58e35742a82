import AgentryBasics
import AgentryRender
import AgentryWire
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One small host process per machine, started detached with it, that QEMU runs under:
///
/// - **The machine's exit, recorded.** QEMU is its child, so its exit status is known and written to
///   `exit.json` (status, signal, time, whether agentry asked it to stop): a machine that died says
///   how and when, instead of merely being gone.
/// - **The control channel, shared.** QEMU's control socket takes one client; the supervisor is that
///   client and serves any number of its own on `guest.sock`, with the same protocol. Request ids
///   are renumbered so clients never collide, replies and output go back to whoever asked, a booting
///   guest is never written to before it says hello (bytes queued for an unopened port make QEMU spin),
///   and the guest's hello is kept for clients that connect later. A client that goes away (a run
///   interrupted, agentry killed) has the commands it started killed in the guest.
/// - **Bounded.** Frames are at most `Wire.maxFrame`; the guest is read no faster than its
///   `GuestAllowance` (frames and bytes a second); a client that does not read its replies is
///   dropped past `clientBacklog`; clients are not read while the guest is not reading.
///
/// A supervisor can also adopt a QEMU it did not start (started by an earlier agentry, or whose
/// supervisor died): it then watches the process by pid and resynchronises with a ping.
public enum MachineSupervisor {
    static let clientBacklog = 32 << 20
    static let upstreamBacklog = 64 << 20
    static let heldMessages = 256

    // MARK: - Files of the machine's folder

    public static func socket(_ directory: String) -> String { directory + "/guest.sock" }
    static func pidFile(_ directory: String) -> String { directory + "/supervisor.pid" }
    public static func exitFile(_ directory: String) -> String { directory + "/exit.json" }
    public static func stopRequestFile(_ directory: String) -> String { directory + "/stop-requested" }
    static func logFile(_ directory: String) -> String { directory + "/supervisor.log" }

    static func lockFile(_ directory: String) -> String { directory + "/supervisor.lock" }

    /// Whether a supervisor holds this machine now (starting it, running it, or writing down how it
    /// ended). Each supervisor holds an flock on `supervisor.lock` for as long as it runs, so there
    /// is never more than one per machine, and one that died releases it at once.
    public static func isHeld(_ directory: String) -> Bool {
        let descriptor = open(lockFile(directory), O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        if flock(descriptor, LOCK_EX | LOCK_NB) == 0 {
            flock(descriptor, LOCK_UN)
            return false
        }
        return true
    }

    /// Waits until no supervisor holds the machine; false at the deadline.
    static func waitUntilReleased(_ directory: String, within timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while isHeld(directory) {
            guard ContinuousClock.now < deadline else { return false }
            usleep(20_000)
        }
        return true
    }

    /// The supervisor serving this folder, if it is alive.
    public static func runningPID(_ directory: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile(directory), encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0
        else { return nil }
        let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        return String(decoding: cmdline, as: UTF8.self).contains("machine-supervisor") ? pid : nil
    }

    /// How the machine's QEMU ended, as its supervisor recorded it.
    public struct Exit: Sendable, Equatable, Codable {
        /// The exit code, or nil when it was killed by a signal or not watched as a child.
        public var status: Int32?
        public var signal: Int32?
        /// RFC 3339.
        public var at: String
        /// agentry asked it to stop (a pause, a kill, a restart).
        public var stopRequested: Bool
    }

    public static func recordedExit(_ directory: String) -> Exit? {
        guard let data = FileManager.default.contents(atPath: exitFile(directory)) else { return nil }
        return try? JSONDecoder().decode(Exit.self, from: data)
    }

    // MARK: - Starting

    /// `agentry machine-supervisor start`: starts the supervisor in a session of its own and waits
    /// until it says QEMU is up (0) or failed (1, with QEMU's words), as `qemu -daemonize` would.
    /// `adopt`: QEMU already runs; the supervisor attaches to it.
    public static func start(executable: String, directory: String, adopt: Bool, qemu: [String]) -> Int32 {
        var ready: [Int32] = [0, 0]
        guard pipe(&ready) == 0 else { return report("cannot make a pipe: \(UnixSocket.lastError)") }
        let arguments = ["machine-supervisor", "run", "--dir", directory] + (adopt ? ["--adopt"] : []) + ["--"] + qemu
        let log = logFile(directory)
        let spawned = Result {
            try HostProcess.spawn(
                executable, arguments, environment: HostProcess.helperEnvironment(ProcessInfo.processInfo.environment),
                newSession: true
            ) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_adddup2(&actions, ready[1], 1)
                posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            }
        }
        close(ready[1])
        defer { close(ready[0]) }
        guard case .success = spawned else { return report("cannot start the machine supervisor: \(spawned)") }
        // Its first line says how QEMU's start went; the supervisor goes on in its own session.
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(ready[0], &byte, 1) == 1 && byte != 0x0A { line.append(byte) }
        let word = String(decoding: line, as: UTF8.self)
        if word.hasPrefix("started") {
            print(word)
            return 0
        }
        return report(word.isEmpty ? "the machine supervisor ended before QEMU started (see \(log))" : word)
    }

    /// Guests (and the supervisor relaying for them) run at a lower CPU priority than agentry's
    /// own work: a busy guest, under TCG above all, must not slow the service's answers, other
    /// agents' control channels or a CLI command. Nice 10 by default (a guest still gets every
    /// cycle nobody else wants); `AGENTRY_MACHINE_NICE=0..19` sets it, 0 turning it off. Set before
    /// QEMU starts and before any thread does, so that all of them inherit it.
    ///
    /// Where the kernel groups processes by session for CPU time (`sched_autogroup`, on by default
    /// in Debian), a nice value counts only within the session, and each session gets an equal
    /// share: the supervisor leads a session of its own, so its session's nice is set as well.
    /// Without it, eight busy guests left the service one ninth of the CPU and 17 ms waits to be
    /// scheduled, whatever their nice.
    static func yieldToTheHost(_ environment: [String: String]) {
        let nice = environment["AGENTRY_MACHINE_NICE"].flatMap { Int32($0) }.map { min(19, max(0, $0)) } ?? 10
        guard nice > 0 else { return }
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
        // Only a session of its own: another's (the caller's) must keep its share.
        guard getsid(0) == getpid() else { return }
        let descriptor = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        _ = "\(nice)".withCString { write(descriptor, $0, strlen($0)) }
    }

    static func report(_ message: String) -> Int32 {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        return 1
    }

    /// `agentry machine-supervisor run`: the supervisor itself. Returns its exit status when QEMU is gone.
    public static func run(directory: String, adopt: Bool, qemu: [String]) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        yieldToTheHost(ProcessInfo.processInfo.environment)
        // One supervisor per machine, for as long as it runs (the descriptor is never closed).
        let lock = open(lockFile(directory), O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            return tell("failed: another supervisor already runs the machine in \(directory)")
        }
        try? "\(getpid())\n".write(toFile: pidFile(directory), atomically: true, encoding: .utf8)
        unlink(exitFile(directory))
        var machine: Supervised
        // The machine's egress proxy, when its egress is an allowlist: served before QEMU starts, so
        // the guest's first connection finds it.
        var egress: EgressService?
        if FileManager.default.fileExists(atPath: QEMUMachine.egressAllowFile(directory)) {
            let allowFile = QEMUMachine.egressAllowFile(directory)
            do {
                egress = try EgressService(socket: QEMUMachine.egressSocket(directory)) {
                    EgressAllowlist(text: (try? String(contentsOfFile: allowFile, encoding: .utf8)) ?? "")
                }
            } catch {
                return tell("failed: \(error)")
            }
        }
        defer { egress?.stop() }
        if adopt {
            guard let pid = QEMUMachine.runningPID(directory) else { return tell("failed: there is no QEMU to adopt") }
            machine = .adopted(pid)
        } else {
            unlink(stopRequestFile(directory))
            guard
                let executable = HostProcess.locate(qemu.first ?? "", path: ProcessInfo.processInfo.environment["PATH"])
            else { return tell("failed: \(qemu.first ?? "qemu") is not installed (apt-get install qemu-system-x86)") }
            let log = QEMUMachine.qemuLog(directory)
            do {
                let pid = try HostProcess.spawn(
                    executable, Array(qemu.dropFirst()),
                    environment: HostProcess.helperEnvironment(ProcessInfo.processInfo.environment)
                ) { actions in
                    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                    posix_spawn_file_actions_adddup2(&actions, 1, 2)
                }
                machine = .child(pid)
            } catch {
                return tell("failed: \(error)")
            }
        }
        // QEMU creates its control socket as it starts; connect as soon as it is there.
        let deadline = ContinuousClock.now + .seconds(60)
        var upstream: Int32?
        while upstream == nil {
            if let ended = machine.ended() {
                record(directory, ended)
                let tail = (try? String(contentsOfFile: QEMUMachine.qemuLog(directory), encoding: .utf8)) ?? ""
                return tell("failed: " + tail.split(separator: "\n").suffix(6).joined(separator: "\n  "))
            }
            upstream = UnixSocket.connect(QEMUMachine.controlSocket(directory))
            if upstream == nil {
                if ContinuousClock.now > deadline {
                    machine.kill()
                    return tell("failed: QEMU did not open its control socket within a minute")
                }
                usleep(10_000)
            }
        }
        guard let listener = UnixSocket.listen(socket(directory)) else {
            machine.kill()
            return tell("failed: cannot listen on \(socket(directory)): \(UnixSocket.lastError)")
        }
        let bound = inode(socket(directory))
        _ = tell("started \(machine.pid)")
        // Nobody reads our output from here on.
        let null = open("/dev/null", O_WRONLY)
        dup2(null, 1)
        close(null)
        let console = ConsoleLog(
            socket: UnixSocket.connect(QEMUMachine.consoleSocket(directory)), file: QEMUMachine.serialLog(directory),
            booted: adopt)
        let hub = Hub(upstream: upstream!, listener: listener, adopted: adopt, console: console)
        let ended = hub.serve(until: { machine.ended() })
        record(directory, ended)
        // Only what is still ours: a new supervisor may already be starting the machine again.
        if inode(socket(directory)) == bound { unlink(socket(directory)) }
        if runningPID(directory) == getpid() { unlink(pidFile(directory)) }
        return 0
    }

    static func inode(_ path: String) -> UInt64? {
        var status = stat()
        return lstat(path, &status) == 0 ? UInt64(status.st_ino) : nil
    }

    static func tell(_ line: String) -> Int32 {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count) }
        return line.hasPrefix("started") ? 0 : 1
    }

    /// The QEMU process, as a child (its status known) or adopted (only whether it lives).
    enum Supervised {
        case child(pid_t)
        case adopted(pid_t)

        var pid: pid_t {
            switch self {
            case .child(let pid), .adopted(let pid): return pid
            }
        }

        /// The exit, once the process is gone.
        func ended() -> (status: Int32?, signal: Int32?)? {
            switch self {
            case .child(let pid):
                var status: Int32 = 0
                let waited = waitpid(pid, &status, WNOHANG)
                guard waited == pid || (waited < 0 && errno == ECHILD) else { return nil }
                if waited < 0 { return (nil, nil) }
                return status & 0x7F == 0 ? ((status >> 8) & 0xFF, nil) : (nil, status & 0x7F)
            case .adopted(let pid):
                return Glibc.kill(pid, 0) == 0 ? nil : (nil, nil)
            }
        }

        func kill() {
            Glibc.kill(pid, SIGKILL)
            if case .child = self {
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
        }
    }

    static func record(_ directory: String, _ ended: (status: Int32?, signal: Int32?)) {
        let exit = Exit(
            status: ended.status, signal: ended.signal, at: Timestamp.rfc3339(Date().timeIntervalSince1970),
            stopRequested: FileManager.default.fileExists(atPath: stopRequestFile(directory)))
        if let data = try? JSONEncoder().encode(exit) {
            FileManager.default.createFile(atPath: exitFile(directory), contents: data)
        }
    }
}
