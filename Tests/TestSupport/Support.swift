import CGuestSupport
import Foundation

/// Runs the built `agentry` binary the way a user or CI does.
public enum Agentry {
    /// The package root (this file is Tests/TestSupport/Support.swift).
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `$AGENTRY_BIN`, else the `agentry` built beside the test bundle, else `.build/debug/agentry`.
    public static let binary: URL = {
        if let path = ProcessInfo.processInfo.environment["AGENTRY_BIN"] { return URL(fileURLWithPath: path) }
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = folder.appendingPathComponent("agentry")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            folder.deleteLastPathComponent()
        }
        return packageRoot.appendingPathComponent(".build/debug/agentry")
    }()

    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs agentry with `arguments`, waiting at most `timeout` seconds (a hang fails the test).
    @discardableResult
    public static func run(_ arguments: [String], in directory: URL? = nil, timeout: TimeInterval = 120) throws -> Result {
        try Shell.run(binary.path, arguments, in: directory, timeout: timeout)
    }
}

public enum Shell {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String

        public init(description: String) {
            self.description = description
        }
    }

    /// Runs a program, collecting its output; fails when it does not end within `timeout` seconds.
    /// Spawned with posix_spawn (Foundation's Process crashed in its own memcpy once in CI), with
    /// default signal handling, nothing else inherited, and both outputs drained by one poll loop.
    @discardableResult
    public static func run(
        _ program: String, _ arguments: [String], in directory: URL? = nil, input: String? = nil,
        environment: [String: String] = [:], timeout: TimeInterval = 120
    ) throws -> Agentry.Result {
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        guard let executable = locate(program, path: env["PATH"]) else {
            throw Failure(description: "\(program) is not installed")
        }
        var stdinPipe: [Int32] = [0, 0]
        var stdoutPipe: [Int32] = [0, 0]
        var stderrPipe: [Int32] = [0, 0]
        guard agentry_pipe_cloexec(&stdinPipe) == 0, agentry_pipe_cloexec(&stdoutPipe) == 0, agentry_pipe_cloexec(&stderrPipe) == 0
        else { throw Failure(description: "pipe: \(String(cString: strerror(errno)))") }
        let spawned = Result {
            try spawn(executable, arguments, environment: env.map { "\($0.key)=\($0.value)" }) { actions in
                posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
                posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
                posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
                if let directory { agentry_spawn_chdir(&actions, directory.path) }
            }
        }
        [stdinPipe[0], stdoutPipe[1], stderrPipe[1]].forEach { close($0) }
        if case .failure = spawned { [stdinPipe[1], stdoutPipe[0], stderrPipe[0]].forEach { close($0) } }
        let pid = try spawned.get()
        // Input goes in from its own thread, so a child that writes before it reads cannot stall us.
        let inputFD = stdinPipe[1]
        let feeder = Thread {
            if let input {
                Array(input.utf8).withUnsafeBufferPointer { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let written = write(inputFD, bytes.baseAddress! + offset, bytes.count - offset)
                        if written < 0 && errno == EINTR { continue }
                        if written <= 0 { break }
                        offset += written
                    }
                }
            }
            close(inputFD)
        }
        feeder.start()
        var outData: [UInt8] = []
        var errData: [UInt8] = []
        var open: [Int32] = [stdoutPipe[0], stderrPipe[0]]
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                kill(pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                open.forEach { close($0) }
                throw Failure(description: "\(program) \(arguments.joined(separator: " ")) did not finish within \(timeout)s")
            }
            var descriptors = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), Int32(min(remaining, 1) * 1000) + 1)
            if ready < 0 && errno != EINTR { break }
            for entry in descriptors where entry.revents != 0 {
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    if entry.fd == stdoutPipe[0] { outData += buffer[0..<count] } else { errData += buffer[0..<count] }
                } else if count == 0 || errno != EINTR {
                    close(entry.fd)
                    open.removeAll { $0 == entry.fd }
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Agentry.Result(
            status: code, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }

    /// posix_spawn with default signal handling and nothing inherited beyond standard input, output
    /// and error (as `configure` arranges them).
    static func spawn(
        _ executable: String, _ arguments: [String], environment: [String],
        configure: (inout posix_spawn_file_actions_t) -> Void
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        configure(&actions)
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
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw Failure(description: "cannot run \(executable): \(String(cString: strerror(result)))") }
        return pid
    }

    /// `program` itself when it is a path, else the first executable of that name on `path`.
    static func locate(_ program: String, path: String?) -> String? {
        if program.contains("/") { return program }
        let folders: [String] = (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for folder in folders {
            let candidate = "\(folder)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs git with a fixed identity and no user configuration; throws when it fails.
    @discardableResult
    public static func git(_ arguments: [String], in directory: URL) throws -> String {
        let result = try run(
            "git", ["-c", "gc.auto=0"] + arguments, in: directory,
            environment: [
                "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@localhost", "GIT_COMMITTER_NAME": "Test",
                "GIT_COMMITTER_EMAIL": "test@localhost", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
            ])
        guard result.status == 0 else {
            throw Failure(description: "git \(arguments.joined(separator: " ")) failed: \(result.stderr)")
        }
        return result.stdout
    }
}

/// A temporary folder removed when the test ends.
public final class TemporaryDirectory: Sendable {
    public let url: URL

    public init(_ name: String = "agentry-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }

    public var path: String { url.path }

    public func write(_ relative: String, _ content: String) throws {
        let file = url.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(content.utf8).write(to: file)
    }

    public func symlink(_ relative: String, to target: String) throws {
        let file = url.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: file.path, withDestinationPath: target)
    }

    /// Copies a folder's content into this one.
    public func copy(from source: URL, to relative: String = "") throws {
        let destination = relative.isEmpty ? url : url.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        if relative.isEmpty {
            for item in try FileManager.default.contentsOfDirectory(atPath: source.path) {
                try FileManager.default.copyItem(
                    at: source.appendingPathComponent(item), to: destination.appendingPathComponent(item))
            }
        } else {
            try FileManager.default.copyItem(at: source, to: destination)
        }
    }

    /// `git init` + commit everything; returns the commit id.
    @discardableResult
    public func commitAll(_ message: String = "test", initialize: Bool = true) throws -> String {
        if initialize && !FileManager.default.fileExists(atPath: url.appendingPathComponent(".git").path) {
            try Shell.git(["init", "-q", "-b", "main"], in: url)
        }
        try Shell.git(["add", "-A"], in: url)
        try Shell.git(["commit", "-q", "--allow-empty", "-m", message], in: url)
        return try Shell.git(["rev-parse", "HEAD"], in: url).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Parses agentry's `-o json` output.
public func decodeJSON(_ text: String) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw Shell.Failure(description: "not a JSON object: \(text.prefix(200))")
    }
    return object
}

/// The diagnostics of a `-o json` report as (file, code) pairs, sorted.
public func diagnosticPairs(_ report: [String: Any]) -> [String] {
    let diagnostics = report["diagnostics"] as? [[String: Any]] ?? []
    return diagnostics.map { "\($0["file"] ?? ""):\($0["line"] ?? 0):\($0["code"] ?? "")" }.sorted()
}

/// A helper process a test keeps running (a lock holder, a web server): spawned like `Shell.run`,
/// its first line of output read, killed and reaped when the test is done.
public final class BackgroundProcess {
    public let pid: pid_t
    let output: Int32

    public init(_ program: String, _ arguments: [String]) throws {
        guard let executable = Shell.locate(program, path: ProcessInfo.processInfo.environment["PATH"]) else {
            throw Shell.Failure(description: "\(program) is not installed")
        }
        var pipeFDs: [Int32] = [0, 0]
        guard agentry_pipe_cloexec(&pipeFDs) == 0 else { throw Shell.Failure(description: "pipe failed") }
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let spawned = Result {
            try Shell.spawn(executable, arguments, environment: environment) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
                posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
            }
        }
        close(pipeFDs[1])
        if case .failure = spawned { close(pipeFDs[0]) }
        pid = try spawned.get()
        output = pipeFDs[0]
    }

    /// The first line the process prints (waiting for it).
    public func firstLine() -> String {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(output, &byte, 1) == 1 && byte != 0x0A { bytes.append(byte) }
        return String(decoding: bytes, as: UTF8.self)
    }

    deinit {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        close(output)
    }
}
