import AgentryBasics
import CGuestSupport
import Foundation
import Synchronization

/// Runs the built `agentry` binary the way a user or CI does.
public enum Agentry {
    /// The package root (this file is Tests/TestSupport/Support.swift).
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent()
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

    /// The parse cache of every agentry this test process starts (unless a test names its own):
    /// shared between them, as a user's is, but not with the machine's.
    public static let cacheDirectory: String = {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "agentry-test-cache-\(getpid())")
        atexit { try? FileManager.default.removeItem(atPath: Agentry.cacheDirectory) }
        return folder.path
    }()

    /// The environment agentry and the tools tests run are started with: this process's, with the
    /// test parse cache, and `extra` on top.
    public static func environment(_ extra: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["AGENTRY_CACHE_DIR"] = cacheDirectory
        return environment.merging(extra) { _, new in new }
    }

    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs agentry with `arguments`, waiting at most `timeout` seconds (a hang fails the test).
    @discardableResult
    public static func run(_ arguments: [String], in directory: URL? = nil, timeout: TimeInterval = 120) throws
        -> Result
    {
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
    /// Spawned as agentry spawns programs (`HostProcess`: posix_spawn, default signal handling,
    /// nothing else inherited, both outputs drained).
    @discardableResult
    public static func run(
        _ program: String, _ arguments: [String], in directory: URL? = nil, input: String? = nil,
        environment: [String: String] = [:], timeout: TimeInterval = 120
    ) throws -> Agentry.Result {
        let env = Agentry.environment(environment)
        guard let executable = HostProcess.locate(program, path: env["PATH"]) else {
            throw Failure(description: "\(program) is not installed")
        }
        do {
            let result = try HostProcess.run(
                executable, arguments, environment: env.map { "\($0.key)=\($0.value)" }, directory: directory?.path,
                input: input.map { Array($0.utf8) }, timeout: .milliseconds(Int64(timeout * 1000)))
            return Agentry.Result(
                status: result.status, stdout: String(decoding: result.stdout, as: UTF8.self),
                stderr: String(decoding: result.stderr, as: UTF8.self))
        } catch let error as HostProcess.Failure {
            throw Failure(description: error.message)
        }
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
        try FileManager.default.createDirectory(
            at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
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

    public init(
        _ program: String, _ arguments: [String], in directory: URL? = nil, environment extra: [String: String] = [:]
    ) throws {
        guard let executable = HostProcess.locate(program, path: ProcessInfo.processInfo.environment["PATH"]) else {
            throw Shell.Failure(description: "\(program) is not installed")
        }
        var pipeFDs: [Int32] = [0, 0]
        guard agentry_pipe_cloexec(&pipeFDs) == 0 else { throw Shell.Failure(description: "pipe failed") }
        let environment = Agentry.environment(extra)
            .map { "\($0.key)=\($0.value)" }
        let spawned = Result {
            try HostProcess.spawn(executable, arguments, environment: environment, directory: directory?.path) {
                actions in
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

    /// A server on a free loopback port that accepts connections and never answers (a remote gone
    /// quiet); its first line is the port.
    public static func silentServer() throws -> BackgroundProcess {
        try BackgroundProcess(
            "python3",
            [
                "-c",
                "import socket\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\nprint(s.getsockname()[1], flush=True)\nheld=[]\nwhile True: held.append(s.accept())",
            ])
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

/// Waits until `condition` holds, checking every few milliseconds; fails naming `what` once
/// `seconds` have passed.
public func waitUntil(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw WaitFailure(what: what, seconds: seconds) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

public struct WaitFailure: Error, CustomStringConvertible {
    public var what: String
    public var seconds: Double
    public var description: String { "still waiting, after \(seconds)s, for: \(what)" }
}

/// A command a test starts and keeps an eye on while it runs (an `agentry run` to interrupt, one
/// that must wait for another): its output goes to files the test reads as it grows; the test
/// signals it and waits for its exit status. Killed and reaped when the test is done.
public final class RunningCommand {
    public let pid: pid_t
    let folder: TemporaryDirectory
    var status: Int32?

    public init(
        _ program: String, _ arguments: [String], in directory: URL? = nil, environment extra: [String: String] = [:]
    ) throws {
        guard let executable = HostProcess.locate(program, path: ProcessInfo.processInfo.environment["PATH"]) else {
            throw Shell.Failure(description: "\(program) is not installed")
        }
        folder = try TemporaryDirectory("agentry-command")
        let environment = Agentry.environment(extra)
            .map { "\($0.key)=\($0.value)" }
        let out = folder.path + "/stdout"
        let err = folder.path + "/stderr"
        pid = try HostProcess.spawn(executable, arguments, environment: environment, directory: directory?.path) {
            actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
    }

    public var stdout: String { (try? String(contentsOfFile: folder.path + "/stdout", encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: folder.path + "/stderr", encoding: .utf8)) ?? "" }

    public func signal(_ number: Int32) { kill(pid, number) }

    /// Its exit status (128 + signal when a signal ended it), waiting at most `seconds`.
    public func wait(seconds: Double = 120) throws -> Int32 {
        if let status { return status }
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while true {
            var raw: Int32 = 0
            let reaped = waitpid(pid, &raw, WNOHANG)
            if reaped == pid {
                let signal = raw & 0x7F
                let code = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
                status = code
                return code
            }
            guard ContinuousClock.now < deadline else {
                throw Shell.Failure(description: "still running after \(seconds)s; stderr: \(stderr.suffix(2000))")
            }
            usleep(20_000)
        }
    }

    /// Waits until its standard error holds `text`.
    public func waitForError(_ text: String, seconds: Double = 120) throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !stderr.contains(text) {
            guard ContinuousClock.now < deadline else {
                throw Shell.Failure(description: "no \"\(text)\" after \(seconds)s; stderr: \(stderr.suffix(2000))")
            }
            if status == nil {
                var raw: Int32 = 0
                if waitpid(pid, &raw, WNOHANG) == pid {
                    status = (raw & 0x7F) == 0 ? (raw >> 8) & 0xFF : 128 + (raw & 0x7F)
                    if !stderr.contains(text) {
                        throw Shell.Failure(
                            description: "exited (\(status!)) without \"\(text)\": \(stderr.suffix(2000))")
                    }
                }
            }
            usleep(20_000)
        }
    }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        }
    }
}

/// A minimal HTTP/1.1 client for tests of `agentry serve`: one request per connection, the whole
/// answer read (the server closes after `Connection: close`). Loopback only.
public enum HTTP {
    public struct Response {
        public var status: Int
        public var headers: [String: String]
        public var body: String
        public var json: [String: Any] { (try? decodeJSON(body)) ?? [:] }
    }

    /// One request and its answer, as `request` made it (for checking answers against the API's
    /// OpenAPI document).
    public struct Exchange: Sendable {
        public var method: String
        public var url: String
        public var status: Int
        public var contentType: String
        public var body: String

        /// One line of JSON for Tests/openapi/check.py; `path` without the scheme and authority.
        public func jsonLine(path: String) -> String {
            let object: [String: Any] = [
                "method": method, "path": path, "status": status, "contentType": contentType, "body": body,
            ]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Every exchange `request` made in this process, oldest first.
    public static let exchanges = Mutex<[Exchange]>([])

    public static func request(
        _ method: String, _ url: String, token: String? = nil, headers: [String: String] = [:], body: String? = nil
    ) throws -> Response {
        guard url.hasPrefix("http://"), let slash = url.dropFirst(7).firstIndex(of: "/") else {
            throw Shell.Failure(description: "not a loopback URL: \(url)")
        }
        let authority = url[url.index(url.startIndex, offsetBy: 7)..<slash]
        let path = String(url[slash...])
        let parts = authority.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else {
            throw Shell.Failure(description: "bad address \(url)")
        }
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Shell.Failure(description: "socket: \(errno)") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, String(parts[0]), &address.sin_addr)
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw Shell.Failure(description: "connect \(url): errno \(errno)") }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(authority)\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let payload = Array((body ?? "").utf8)
        if body != nil { head += "Content-Type: application/json\r\nContent-Length: \(payload.count)\r\n" }
        let bytes = Array((head + "\r\n").utf8) + payload
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBufferPointer { send(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw Shell.Failure(description: "send \(url): errno \(errno)") }
            sent += count
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            received += buffer[0..<count]
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw Shell.Failure(description: "no HTTP answer from \(url): \(text.prefix(200))")
        }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw Shell.Failure(description: "bad status line from \(url): \(lines.first ?? "")")
        }
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(received[(received.count - text[split.upperBound...].utf8.count)...])
        if fields["transfer-encoding"]?.lowercased() == "chunked" { body = dechunked(body) }
        let response = Response(status: status, headers: fields, body: String(decoding: body, as: UTF8.self))
        exchanges.withLock {
            $0.append(
                Exchange(
                    method: method, url: url, status: status, contentType: fields["content-type"] ?? "",
                    body: response.body))
        }
        return response
    }

    /// A chunked body's bytes (sizes in hex, each chunk followed by CRLF, a zero chunk last).
    static func dechunked(_ bytes: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        var index = 0
        while let lineEnd = bytes[index...].firstIndex(of: 0x0A) {
            let line = String(decoding: bytes[index..<lineEnd], as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard let size = Int(line.split(separator: ";").first ?? "", radix: 16), size > 0 else { break }
            let start = lineEnd + 1
            guard start + size <= bytes.count else { break }
            output += bytes[start..<(start + size)]
            index = min(bytes.count, start + size + 2)
        }
        return output
    }
}
