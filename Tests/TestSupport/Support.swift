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
    @discardableResult
    public static func run(
        _ program: String, _ arguments: [String], in directory: URL? = nil, input: String? = nil,
        environment: [String: String] = [:], timeout: TimeInterval = 120
    ) throws -> Agentry.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program.hasPrefix("/") ? program : "/usr/bin/env")
        process.arguments = program.hasPrefix("/") ? arguments : [program] + arguments
        if let directory { process.currentDirectoryURL = directory }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        let inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inPipe
        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(Data(input.utf8)) }
        try? inPipe.fileHandleForWriting.close()
        // Drain both pipes concurrently so a chatty child never blocks on a full pipe.
        nonisolated(unsafe) var outData = Data()
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
        if finished.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            throw Failure(description: "\(program) \(arguments.joined(separator: " ")) did not finish within \(timeout)s")
        }
        group.wait()
        return Agentry.Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
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
