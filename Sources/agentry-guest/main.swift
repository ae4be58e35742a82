// The guest agent: runs inside each agent's microVM as PID 1 (the initramfs's /init, see Boot.swift), speaks the control protocol
// (AgentryWire) with the host over the virtio-serial port `agentry.ctl`, runs commands with their
// output streamed and their status returned, moves files, and powers the machine off on request.
// Built as a static executable importing only Glibc: the initramfs has no libraries.

import AgentryWire
import CGuestSupport
import Glibc

let agentVersion = "0.1.0"

/// Writes a line to the serial console (the host keeps it as serial.log).
func log(_ text: String) {
    var line = "agentry-guest: " + text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Reads a regular file whole. Anything else (a FIFO, a device, a socket, a symbolic link as the
/// last component) planted on the disk is refused at once: opening never blocks and reading never
/// runs forever, so it cannot wedge PID 1.
/// Writes all of `bytes` to `descriptor`; false on an error.
func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBufferPointer { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }
}

func readWholeFile(_ path: String, limit: Int = Wire.maxFrame - 1024) -> [UInt8]? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    guard isRegularFile(descriptor) else { return nil }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while bytes.count <= limit {
        let count = read(descriptor, &chunk, chunk.count)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return bytes.count <= limit ? bytes : nil
}

/// Whether `descriptor` is a regular file; errno says why not (EINVAL for another kind of file).
func isRegularFile(_ descriptor: Int32) -> Bool {
    var status = stat()
    guard fstat(descriptor, &status) == 0 else { return false }
    guard status.st_mode & S_IFMT == S_IFREG else {
        errno = EINVAL
        return false
    }
    return true
}

func text(_ path: String) -> String {
    readWholeFile(path).map { String(decoding: $0, as: UTF8.self).trimmingNewlines() } ?? ""
}

extension String {
    func trimmingNewlines() -> String {
        var copy = Substring(self)
        while copy.last == "\n" || copy.last == " " { copy = copy.dropLast() }
        return String(copy)
    }
}

/// The control port's device: the virtio port whose name is `agentry.ctl` (no udev in the guest).
func findControlPort() -> String? {
    guard let directory = opendir("/sys/class/virtio-ports") else { return nil }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name.hasPrefix(".") { continue }
        if text("/sys/class/virtio-ports/\(name)/name") == Wire.portName { return "/dev/\(name)" }
    }
    return nil
}

func makeParents(_ path: String) {
    var current = ""
    for component in path.split(separator: "/").dropLast() {
        current += "/" + component
        mkdir(current, 0o755)
    }
}

/// One running command.
final class Job {
    let id: UInt32
    let pid: pid_t
    var stdout: Int32
    var stderr: Int32
    let deadline: Double?
    var timedOut = false
    var status: Int32?
    var exitedAt: Double?
    var sweptLeftovers = false
    /// The master of the command's pseudo-terminal (also `stdout`), -1 when it has none.
    var terminal: Int32 = -1
    /// Input the terminal has not taken yet.
    var typeahead: [UInt8] = []
    static let typeaheadLimit = 1 << 20

    init(id: UInt32, pid: pid_t, stdout: Int32, stderr: Int32, deadline: Double?) {
        self.id = id
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.deadline = deadline
    }

    var finished: Bool { status != nil && stdout < 0 && stderr < 0 }
}

/// The numeric entries of /proc.
func processIDs() -> [pid_t] {
    guard let directory = opendir("/proc") else { return [] }
    defer { closedir(directory) }
    var pids: [pid_t] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if let pid = pid_t(name), pid > 1 { pids.append(pid) }
    }
    return pids
}

/// Kills a command's whole process tree: its descendants (found while the leader still holds them),
/// everything in its process group or session, and anything else still holding its output pipes
/// (a child that called setsid and was reparented). Without the last, such a child would keep the
/// command from ever finishing.
func killTree(_ leader: pid_t, pipes: [Int32]) {
    kill(-leader, SIGKILL)
    var pipeNames: Set<String> = []
    for descriptor in pipes where descriptor >= 0 {
        var status = stat()
        if fstat(descriptor, &status) == 0 { pipeNames.insert("pipe:[\(status.st_ino)]") }
    }
    var parents: [pid_t: pid_t] = [:]
    var doomed: Set<pid_t> = [leader]
    let me = getpid()
    for pid in processIDs() where pid != me {
        // /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
        let stat = text("/proc/\(pid)/stat")
        guard let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 3, let parent = pid_t(fields[1]), let group = pid_t(fields[2]),
            let session = pid_t(fields[3])
        else { continue }
        parents[pid] = parent
        if group == leader || session == leader { doomed.insert(pid) }
        if !pipeNames.isEmpty, let fds = opendir("/proc/\(pid)/fd") {
            var buffer = [CChar](repeating: 0, count: 64)
            while let entry = readdir(fds) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                let length = readlink("/proc/\(pid)/fd/\(name)", &buffer, buffer.count - 1)
                if length > 0,
                    pipeNames.contains(
                        String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self))
                {
                    doomed.insert(pid)
                    break
                }
            }
            closedir(fds)
        }
    }
    // Descendants of anything doomed.
    var changed = true
    while changed {
        changed = false
        for (pid, parent) in parents where !doomed.contains(pid) && doomed.contains(parent) {
            doomed.insert(pid)
            changed = true
        }
    }
    for pid in doomed { kill(pid, SIGKILL) }
}

/// `name` as the command's environment finds it: a path as given, else the first executable of
/// that name in the environment's PATH (or the guest agent's).
func resolve(_ name: String, environment: [String]) -> String {
    if name.contains("/") { return name }
    let path =
        environment.last { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) }
        ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for folder in path.split(separator: ":") {
        let candidate = folder + "/" + name
        if access(candidate, X_OK) == 0 { return candidate }
    }
    return name
}

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

final class Agent {
    let port: Int32
    var decoder = FrameDecoder()
    var idleWait: useconds_t = 500
    var needsSync = false
    var jobs: [UInt32: Job] = [:]
    var jobsByPID: [pid_t: Job] = [:]

    init(port: Int32) {
        self.port = port
    }

    func send(_ message: Message) {
        let frame = message.frame()
        frame.withUnsafeBufferPointer { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(port, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR || errno == EAGAIN {
                        usleep(1000)
                        continue
                    }
                    return
                }
                offset += written
            }
        }
    }

    func hello() {
        var names = utsname()
        uname(&names)
        let release = withUnsafePointer(to: names.release) {
            $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) }
        }
        let uptime = Double(text("/proc/uptime").split(separator: " ").first ?? "0") ?? 0
        let disk = text("/run/agentry-disk")
        send(
            .hello(
                protocolVersion: Wire.protocolVersion, agentVersion: agentVersion, kernel: release,
                uptimeMillis: Int(uptime * 1000), disk: disk.isEmpty ? "none" : disk))
    }

    func handle(_ message: Message) {
        switch message {
        case .ping(let id):
            send(.pong(id: id))
        case .exec(let id, let argv, let environment, let directory, let stdin, let timeout):
            start(id: id, argv: argv, environment: environment, directory: directory, stdin: stdin, timeout: timeout)
        case .execTerminal(let id, let argv, let environment, let directory, let rows, let columns, let timeout):
            startTerminal(
                id: id, argv: argv, environment: environment, directory: directory, rows: rows, columns: columns,
                timeout: timeout)
        case .input(_, let target, let data):
            if let job = jobs[target] { type(data, into: job) }
        case .resize(_, let target, let rows, let columns):
            if let job = jobs[target], job.terminal >= 0 {
                _ = agentry_resize_terminal(job.terminal, Int32(clamping: rows), Int32(clamping: columns))
            }
        case .putFile(let id, let path, let mode, let data):
            makeParents(path)
            // Never blocks on a FIFO planted where the file goes, never writes through a device or a
            // symbolic link: only a regular file (made or truncated) is written.
            let descriptor = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW, mode_t(mode))
            guard descriptor >= 0 else {
                send(.failure(id: id, message: "cannot write \(path): \(String(cString: strerror(errno)))"))
                return
            }
            guard isRegularFile(descriptor), ftruncate(descriptor, 0) == 0 else {
                let reason = errno == EINVAL ? "not a regular file" : String(cString: strerror(errno))
                close(descriptor)
                send(.failure(id: id, message: "cannot write \(path): \(reason)"))
                return
            }
            var offset = 0
            var failed = false
            data.withUnsafeBufferPointer { buffer in
                while offset < buffer.count {
                    let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        failed = true
                        return
                    }
                    offset += written
                }
            }
            fchmod(descriptor, mode_t(mode))
            // Synced when the host has nothing more to say (below), not file by file: a push of
            // several files costs one flush, not one each.
            if !path.hasPrefix("/run/") && !path.hasPrefix("/tmp/") { needsSync = true }  // tmpfs needs none
            close(descriptor)
            send(
                failed
                    ? .failure(id: id, message: "cannot write \(path): \(String(cString: strerror(errno)))")
                    : .ok(id: id))
        case .getFile(let id, let path):
            if let data = readWholeFile(path) {
                send(.fileData(id: id, data: data))
            } else {
                let reason = errno == EINVAL ? "not a regular file" : String(cString: strerror(errno))
                send(.failure(id: id, message: "cannot read \(path): \(reason)"))
            }
        case .signal(let id, let target, let signal):
            if let job = jobs[target] {
                if Int32(signal) == SIGKILL {
                    killTree(job.pid, pipes: [job.stdout, job.stderr])
                } else {
                    kill(-job.pid, Int32(signal))
                }
                send(.ok(id: id))
            } else {
                send(.failure(id: id, message: "no running command \(target)"))
            }
        case .shutdown(let id):
            for job in jobs.values { killTree(job.pid, pipes: [job.stdout, job.stderr]) }
            sync()
            send(.ok(id: id))
            usleep(100_000)
            if getpid() == 1 {
                umount2("/agent", 0)
                agentry_power_off()
            }
            exit(0)
        default:
            log("ignoring a message the host should not send")
            if let id = message.id { send(.failure(id: id, message: "the guest agent does not take this request")) }
        }
    }

    func start(id: UInt32, argv: [String], environment: [String], directory: String, stdin: [UInt8], timeout: Int) {
        guard !argv.isEmpty else {
            send(.failure(id: id, message: "empty command"))
            return
        }
        // Standard input is an in-memory file holding all of it: writing it never blocks this agent
        // (a command that writes before it reads cannot wedge it), and the command sees its end.
        let input = agentry_memfd()
        var output: [Int32] = [0, 0]
        var errors: [Int32] = [0, 0]
        guard input >= 0, writeAll(input, stdin), lseek(input, 0, SEEK_SET) == 0 else {
            if input >= 0 { close(input) }
            send(.failure(id: id, message: "cannot hold the command's input: \(String(cString: strerror(errno)))"))
            return
        }
        guard agentry_pipe_cloexec(&output) == 0, agentry_pipe_cloexec(&errors) == 0 else {
            close(input)
            if output[0] > 0 {
                close(output[0])
                close(output[1])
            }
            send(.failure(id: id, message: "cannot make pipes: \(String(cString: strerror(errno)))"))
            return
        }
        launch(
            id: id, argv: argv, environment: environment, directory: directory, timeout: timeout,
            standard: .descriptors([input, output[1], errors[1]]), reading: (output[0], errors[0]), terminal: -1)
    }

    /// A command on a new pseudo-terminal: its session's controlling terminal, its three standard
    /// descriptors; what it writes comes back as standard output, and `input` frames are typed in.
    func startTerminal(
        id: UInt32, argv: [String], environment: [String], directory: String, rows: Int, columns: Int, timeout: Int
    ) {
        guard !argv.isEmpty else {
            send(.failure(id: id, message: "empty command"))
            return
        }
        var name = [CChar](repeating: 0, count: 128)
        let master = agentry_open_terminal(&name, UInt(name.count), Int32(clamping: rows), Int32(clamping: columns))
        guard master >= 0 else {
            send(.failure(id: id, message: "cannot open a terminal: \(String(cString: strerror(errno)))"))
            return
        }
        let path = String(cString: name)
        launch(
            id: id, argv: argv, environment: environment, directory: directory, timeout: timeout,
            standard: .terminal(path), reading: (master, -1), terminal: master)
    }

    enum Standard {
        /// Descriptors to become 0, 1 and 2 (closed here once the command has them).
        case descriptors([Int32])
        /// A terminal to open as 0 (becoming the new session's controlling terminal), then 1 and 2.
        case terminal(String)
    }

    func launch(
        id: UInt32, argv: [String], environment: [String], directory: String, timeout: Int, standard: Standard,
        reading: (Int32, Int32), terminal: Int32
    ) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        switch standard {
        case .descriptors(let descriptors):
            for (target, descriptor) in descriptors.enumerated() {
                posix_spawn_file_actions_adddup2(&actions, descriptor, Int32(target))
            }
        case .terminal(let path):
            // Opened after setsid (posix_spawn's order), without O_NOCTTY: it becomes the session's
            // controlling terminal, so ^C and job control work as in any login.
            posix_spawn_file_actions_addopen(&actions, 0, path, O_RDWR, 0)
            posix_spawn_file_actions_adddup2(&actions, 0, 1)
            posix_spawn_file_actions_adddup2(&actions, 0, 2)
        }
        if !directory.isEmpty { agentry_spawn_chdir(&actions, directory) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Each command leads a new session (and process group): a timeout or a kill ends all of it.
        let setsid: Int32 = 0x80  // POSIX_SPAWN_SETSID (glibc 2.26+)
        posix_spawnattr_setflags(&attributes, Int16(setsid | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)

        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer {
            cArgv.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        // posix_spawnp would search the guest agent's own PATH: search the command's instead.
        let program = resolve(argv[0], environment: environment)
        let result = posix_spawn(&pid, program, &actions, &attributes, cArgv, cEnv)
        if case .descriptors(let descriptors) = standard { descriptors.forEach { close($0) } }
        guard result == 0 else {
            [reading.0, reading.1].filter { $0 >= 0 }.forEach { close($0) }
            // As a shell says it: on standard error, and 127 (not found) or 126 (not executable).
            let text = "agentry-guest: cannot run \(argv[0]): \(String(cString: strerror(result)))\n"
            send(.output(id: id, stream: .stderr, data: Array(text.utf8)))
            send(.exited(id: id, status: result == ENOENT || result == ENOTDIR ? 127 : 126, signal: 0, timedOut: false))
            return
        }
        let job = Job(
            id: id, pid: pid, stdout: reading.0, stderr: reading.1,
            deadline: timeout > 0 ? now() + Double(timeout) / 1000 : nil)
        job.terminal = terminal
        jobs[id] = job
        jobsByPID[pid] = job
    }

    /// Types `data` into a job's terminal, as far as it takes it now; the rest waits (bounded).
    func type(_ data: [UInt8], into job: Job) {
        guard job.terminal >= 0 else { return }
        if job.typeahead.count + data.count > Job.typeaheadLimit {
            log("dropping terminal input: the command has not read \(Job.typeaheadLimit) bytes")
            return
        }
        job.typeahead += data
        flushTypeahead(job)
    }

    func flushTypeahead(_ job: Job) {
        while !job.typeahead.isEmpty && job.terminal >= 0 {
            let written = job.typeahead.withUnsafeBufferPointer { write(job.terminal, $0.baseAddress, $0.count) }
            if written > 0 {
                job.typeahead.removeFirst(written)
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                if written < 0 && errno != EAGAIN { job.typeahead = [] }  // the terminal is gone
                return
            }
        }
    }

    /// Reads a job's pipe; closes it at end of file.
    func drain(_ job: Job, stream: ProcessStream) {
        let descriptor = stream == .stdout ? job.stdout : job.stderr
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = read(descriptor, &chunk, chunk.count)
        if count > 0 {
            send(.output(id: job.id, stream: stream, data: Array(chunk[0..<count])))
        } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
            // A terminal's master reads EIO once the command and everything it started let go.
            close(descriptor)
            if descriptor == job.terminal {
                job.terminal = -1
                job.typeahead = []
            }
            if stream == .stdout { job.stdout = -1 } else { job.stderr = -1 }
        }
    }

    func reap() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { break }
            guard let job = jobsByPID[pid] else { continue }  // an orphan adopted by PID 1
            job.status = status
            job.exitedAt = now()
            // The process group may still hold the pipes open; end it with its leader. Anything else
            // still holding them a moment later is found by `enforceDeadlines`.
            kill(-pid, SIGKILL)
        }
        for job in jobs.values where job.finished {
            // What the command wrote reaches the disk before anyone is told it finished: a machine
            // killed right after keeps it.
            sync()
            let raw = job.status!
            let signal = raw & 0x7F
            let code = signal == 0 ? Int((raw >> 8) & 0xFF) : 128 + Int(signal)
            send(.exited(id: job.id, status: code, signal: Int(signal), timedOut: job.timedOut))
            jobs[job.id] = nil
            jobsByPID[job.pid] = nil
        }
    }

    func enforceDeadlines() {
        let current = now()
        // A leader gone for a while whose pipes are still open left something behind (a child that
        // called setsid and holds its output): end it, so the command can finish.
        for job in jobs.values where !job.sweptLeftovers && (job.stdout >= 0 || job.stderr >= 0) {
            if let exitedAt = job.exitedAt, current - exitedAt > 0.2 {
                job.sweptLeftovers = true
                killTree(job.pid, pipes: [job.stdout, job.stderr])
            }
        }
        for job in jobs.values where job.status == nil && !job.timedOut {
            if let deadline = job.deadline, current >= deadline {
                job.timedOut = true
                killTree(job.pid, pipes: [job.stdout, job.stderr])
            }
        }
    }

    func run() -> Never {
        hello()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var descriptors = [pollfd(fd: port, events: Int16(POLLIN), revents: 0)]
            var owners: [(Job, ProcessStream)] = []
            for job in jobs.values {
                if job.stdout >= 0 {
                    let typing = job.terminal == job.stdout && !job.typeahead.isEmpty
                    descriptors.append(
                        pollfd(fd: job.stdout, events: Int16(typing ? POLLIN | POLLOUT : POLLIN), revents: 0))
                    owners.append((job, .stdout))
                }
                if job.stderr >= 0 {
                    descriptors.append(pollfd(fd: job.stderr, events: Int16(POLLIN), revents: 0))
                    owners.append((job, .stderr))
                }
            }
            // A command whose pipes closed is exiting: look again in a moment, not a whole tick.
            let exiting = jobs.values.contains { $0.stdout < 0 && $0.stderr < 0 && $0.status == nil }
            let ready = poll(&descriptors, nfds_t(descriptors.count), exiting ? 1 : (needsSync ? 5 : 50))
            if ready == 0 && needsSync {
                sync()
                needsSync = false
            }
            if descriptors[0].revents & Int16(POLLIN | POLLHUP) != 0 {
                let count = read(port, &buffer, buffer.count)
                if count > 0 {
                    idleWait = 500
                    decoder.append(buffer[0..<count])
                    do {
                        while let message = try decoder.next() { handle(message) }
                    } catch {
                        log("dropping a malformed frame stream: \(error)")
                        decoder = FrameDecoder()
                    }
                } else {
                    // No host connected: the port reads as end of file. Keep it open and wait,
                    // briefly at first (a host that just left is often about to come back, as
                    // `agentry exec` does once per command), then at most 20 ms a time, so an
                    // idle machine costs the host little.
                    if needsSync {
                        sync()
                        needsSync = false
                    }
                    usleep(idleWait)
                    idleWait = min(idleWait * 2, 20_000)
                }
            }
            for (index, (job, stream)) in owners.enumerated() where descriptors[index + 1].revents != 0 {
                let events = descriptors[index + 1].revents
                if events & Int16(POLLOUT) != 0 { flushTypeahead(job) }
                if events & ~Int16(POLLOUT) != 0 { drain(job, stream: stream) }
            }
            enforceDeadlines()
            reap()
        }
    }
}

signal(SIGPIPE, SIG_IGN)
setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1)
// As the initramfs's /init, set the machine up first (after a switch into a debian-12 root, the
// second start says --booted).
if getpid() == 1 && !CommandLine.arguments.contains("--booted") { Boot.start() }
var portPath: String?
for _ in 0..<500 {
    portPath = findControlPort()
    if portPath != nil { break }
    usleep(10_000)
}
guard let portPath else {
    log("no virtio port named \(Wire.portName); is virtio_console loaded?")
    exit(1)
}
let port = open(portPath, O_RDWR | O_CLOEXEC)
guard port >= 0 else {
    log("cannot open \(portPath): \(String(cString: strerror(errno)))")
    exit(1)
}
log("control port \(portPath)")
Agent(port: port).run()
