import CGuestSupport
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a machine operation failed, with what to do about it.
public struct MachineError: Error, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// Runs host programs (qemu-img, apt-get, dpkg-deb, cpio) to completion, with a deadline.
enum HostCommand {
    struct Result {
        var status: Int32
        var output: String
    }

    /// Finds `name` on PATH (and in /usr/sbin, /sbin, where Debian keeps some tools).
    static func locate(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        for folder in path.split(separator: ":") {
            let candidate = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs a program; stdout and stderr are merged into `output` (they go to a file, so a chatty
    /// child never blocks on a full pipe). Spawned directly and reaped with waitpid: a child that
    /// daemonizes (QEMU) must not hold the caller up, which Foundation's Process would.
    @discardableResult
    static func run(
        _ program: String, _ arguments: [String], package: String? = nil, timeout: TimeInterval = 300,
        directory: String? = nil, environment: [String: String] = [:], lines: (String) -> Void = { _ in }
    ) throws -> Result {
        guard let executable = program.hasPrefix("/") ? program : locate(program) else {
            let hint = package.map { " (install it: apt-get install \($0))" } ?? ""
            throw MachineError("\(program) is not installed\(hint)")
        }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("agentry-\(UUID().uuidString).log").path
        defer { unlink(log) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else is inherited: a daemonizing child (QEMU) would otherwise keep our caller's
        // pipes open for as long as the machine runs.
        agentry_spawn_closefrom(&actions, 3)
        var environmentPairs = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        environmentPairs["LC_ALL"] = environmentPairs["LC_ALL"] ?? "C"
        // posix_spawn has no portable chdir: a shell changes folder, then becomes the program.
        let command = directory.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0, executable] + arguments }
            ?? [executable] + arguments
        let argv = command.map { strdup($0) } + [nil]
        let envp = environmentPairs.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        // The child starts with default signal handling and nothing blocked, whatever this process
        // (its threads, its ignored SIGPIPE) had: QEMU relies on its own signals.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw MachineError("cannot run \(program): \(String(cString: strerror(spawned)))") }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        // `lines` sees the output as it comes (a long build shows its progress), a line at a time.
        var seen = 0
        var pending = ""
        var polls = 0
        func follow() {
            guard let handle = FileHandle(forReadingAtPath: log) else { return }
            defer { try? handle.close() }
            try? handle.seek(toOffset: UInt64(seen))
            guard let data = try? handle.readToEnd(), !data.isEmpty else { return }
            seen += data.count
            pending += String(decoding: data, as: UTF8.self)
            while let newline = pending.firstIndex(of: "\n") {
                lines(String(pending[..<newline]))
                pending = String(pending[pending.index(after: newline)...])
            }
        }
        while waitpid(pid, &status, WNOHANG) == 0 {
            polls += 1
            if polls % 40 == 0 { follow() }
            if Date() >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                throw MachineError("\(program) \(arguments.joined(separator: " ")) did not finish within \(Int(timeout))s")
            }
            usleep(5_000)
        }
        follow()
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Result(status: code, output: output)
    }

    /// Runs a program and fails with its output when it exits non-zero.
    @discardableResult
    static func check(
        _ program: String, _ arguments: [String], package: String? = nil, timeout: TimeInterval = 300,
        directory: String? = nil, what: String
    ) throws -> String {
        let result = try run(program, arguments, package: package, timeout: timeout, directory: directory)
        guard result.status == 0 else {
            let tail = result.output.split(separator: "\n").suffix(8).joined(separator: "\n")
            throw MachineError("\(what) failed (\(program) exited \(result.status)):\n\(tail)")
        }
        return result.output
    }
}
