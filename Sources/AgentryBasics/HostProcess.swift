import CGuestSupport
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Runs programs on the host with posix_spawn, the one way agentry and its tests start them: the
/// child gets default signal handling and an empty signal mask whatever this process had (QEMU
/// relies on its own signals), inherits no descriptor beyond standard input, output and error (a
/// daemonizing child would otherwise hold the caller's pipes for as long as it runs), and is reaped
/// with waitpid, so a child that daemonizes never holds its caller up.
public enum HostProcess {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: [UInt8]

        /// Standard output and error as text (merged runs put everything in `stdout`).
        public var output: String { String(decoding: stdout + stderr, as: UTF8.self) }
    }

    public struct Failure: AgentryFailure {
        public enum Code: String, Sendable {
            case notInstalled, cannotStart, timedOut
        }

        public var code: Code
        public var message: String

        public var category: FailureCategory {
            switch code {
            case .notInstalled: return .notFound
            case .cannotStart: return .io
            case .timedOut: return .timeout
            }
        }
    }

    /// `program` itself when it holds a slash, else the first executable of that name on `path`
    /// (and in /usr/sbin and /sbin, where Debian keeps some tools).
    public static func locate(_ program: String, path: String?) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        let folders =
            (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
            + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for folder in folders {
            let candidate = "\(folder)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// The environment helpers start with (machine supervisors, QEMU, the egress proxy QEMU runs):
    /// the search path and the locale, never the variables of the agentry that started them, which
    /// may hold secrets (`AGENTRY_SECRET_*`) or credentials of the operator's shell.
    public static func helperEnvironment(_ variables: [String: String]) -> [String] {
        var kept = ["PATH=" + (variables["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")]
        for name in ["LANG", "LC_ALL", "TZ", "TMPDIR", "AGENTRY_LOG_LEVEL", "AGENTRY_MACHINE_NICE"] {
            if let value = variables[name] { kept.append(name + "=" + value) }
        }
        return kept
    }

    /// Starts `executable`; `configure` arranges descriptors 0 to 2 (everything above is closed).
    /// `newSession`: the child leads a session of its own (a daemon that outlives its parent's
    /// terminal and process group).
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String], directory: String? = nil,
        newSession: Bool = false, configure: (inout posix_spawn_file_actions_t) -> Void
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        configure(&actions)
        if let directory { agentry_spawn_chdir(&actions, directory) }
        agentry_spawn_closefrom(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        let setsid: Int32 = 0x80  // POSIX_SPAWN_SETSID (glibc 2.26+)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (newSession ? setsid : 0)))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw Failure(code: .cannotStart, message: "cannot run \(executable): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// The shell's view of a wait status: the exit code, or 128 + the signal.
    public static func exitStatus(_ status: Int32) -> Int32 {
        status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }

    /// Runs a program to its end, collecting what it prints, and kills it at `timeout`.
    /// `merge` puts standard error into `stdout` in the order it came; `lines` sees the output (both
    /// streams) a line at a time as it comes, so a long build can show progress. Once the program
    /// has exited, what is left in the pipes is read without waiting for their end: a child that
    /// daemonized (QEMU) keeps them open.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String], directory: String? = nil,
        input: [UInt8]? = nil, timeout: Duration, merge: Bool = false, lines: (String) -> Void = { _ in }
    ) throws -> Result {
        var inputPipe: [Int32] = [0, 0]
        var outputPipe: [Int32] = [0, 0]
        var errorPipe: [Int32] = [0, 0]
        guard agentry_pipe_cloexec(&outputPipe) == 0 else { throw pipeFailure() }
        guard merge || agentry_pipe_cloexec(&errorPipe) == 0 else {
            outputPipe.forEach { close($0) }
            throw pipeFailure()
        }
        if input != nil, agentry_pipe_cloexec(&inputPipe) != 0 {
            (outputPipe + (merge ? [] : errorPipe)).forEach { close($0) }
            throw pipeFailure()
        }
        let spawned = Swift.Result {
            try spawn(executable, arguments, environment: environment, directory: directory) { actions in
                if input != nil {
                    posix_spawn_file_actions_adddup2(&actions, inputPipe[0], 0)
                } else {
                    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                }
                posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
                posix_spawn_file_actions_adddup2(&actions, merge ? outputPipe[1] : errorPipe[1], 2)
            }
        }
        close(outputPipe[1])
        if !merge { close(errorPipe[1]) }
        if input != nil { close(inputPipe[0]) }
        let pid: pid_t
        do {
            pid = try spawned.get()
        } catch {
            close(outputPipe[0])
            if !merge { close(errorPipe[0]) }
            if input != nil { close(inputPipe[1]) }
            throw error
        }
        if let input {
            // Fed from its own thread, so a child that writes before it reads cannot stall us.
            let descriptor = inputPipe[1]
            DispatchQueue.global().async {
                input.withUnsafeBufferPointer { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                        if written < 0 && errno == EINTR { continue }
                        if written <= 0 { break }
                        offset += written
                    }
                }
                close(descriptor)
            }
        }
        var collected = Collector()
        var open = merge ? [outputPipe[0]] : [outputPipe[0], errorPipe[0]]
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        var exited = false
        var buffer = [UInt8](repeating: 0, count: 65536)
        defer { open.forEach { close($0) } }
        while !open.isEmpty {
            if !exited {
                let waited = waitpid(pid, &status, WNOHANG)
                exited = waited == pid || (waited < 0 && errno == ECHILD)
            }
            if exited {
                // Whatever is already in the pipes, without waiting for a writer that outlives the child.
                for descriptor in open { _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK) }
            } else if ContinuousClock.now >= deadline {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let shown = ([executable] + arguments).joined(separator: " ")
                throw Failure(
                    code: .timedOut,
                    message:
                        "\(shown) did not finish within \(DurationText.format(milliseconds: UInt64(max(0, timeout.milliseconds))))"
                )
            }
            var descriptors = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), exited ? 0 : 10)
            if ready < 0 && errno != EINTR { break }
            if ready == 0 && exited { break }
            for entry in descriptors where entry.revents != 0 {
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    collected.add(buffer[0..<count], error: entry.fd != outputPipe[0], lines: lines)
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(entry.fd)
                    open.removeAll { $0 == entry.fd }
                } else if exited {
                    open.removeAll { $0 == entry.fd }
                    close(entry.fd)
                }
            }
        }
        if !exited { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
        collected.finish(lines: lines)
        return Result(status: exitStatus(status), stdout: collected.stdout, stderr: collected.stderr)
    }

    static func pipeFailure() -> Failure {
        Failure(code: .cannotStart, message: "pipe: \(String(cString: strerror(errno)))")
    }

    struct Collector {
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var pending: [UInt8] = []

        mutating func add(_ bytes: ArraySlice<UInt8>, error: Bool, lines: (String) -> Void) {
            if error { stderr += bytes } else { stdout += bytes }
            pending += bytes
            while let newline = pending.firstIndex(of: 0x0A) {
                lines(String(decoding: pending[..<newline], as: UTF8.self))
                pending.removeSubrange(...newline)
            }
        }

        mutating func finish(lines: (String) -> Void) {
            if !pending.isEmpty { lines(String(decoding: pending, as: UTF8.self)) }
            pending = []
        }
    }
}
