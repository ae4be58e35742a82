import AgentryBasics
import AgentryCore
import AgentryModel
import AgentryRender
import AgentryWire
import Foundation

/// The guest end of a fake machine. Commands that are agentry's own scripts (`GuestScripts`) are
/// carried out by what they mean on the machine's files: configuration archives unpacked with the
/// previous push's files removed, the install marker checked and written, the run's folders made
/// and emptied, artifacts collected as a tar. Any other command goes to the test's harness.
final class FakeGuest: GuestChannel {
    let machines: FakeMachines
    let name: String
    let silent: Bool
    let booting: Bool

    init(machines: FakeMachines, name: String, silent: Bool, booting: Bool) {
        self.machines = machines
        self.name = name
        self.silent = silent
        self.booting = booting
    }

    func alive() throws {
        guard machines.isRunning(name) else {
            throw FakeFailure(.unavailable, "the machine closed the control channel (it stopped or crashed)")
        }
    }

    func waitUntilReady(timeout: Duration, booting: Bool) throws -> GuestHello? {
        if silent { return nil }
        try alive()
        return GuestHello(
            agentVersion: "fake", kernel: "6.1.0-fake-cloud-amd64", uptimeMilliseconds: 1200, disk: "mounted")
    }

    func files<T>(_ body: (inout [String: [UInt8]]) throws -> T) throws -> T {
        try machines.world.withLock { world in
            guard world.machines[name]?.running == true else {
                throw FakeFailure(.unavailable, "the machine closed the control channel (it stopped or crashed)")
            }
            return try body(&world.machines[name]!.files)
        }
    }

    func putFile(_ path: String, _ data: [UInt8], mode: Int) throws {
        try files { $0[path] = data }
    }

    func getFile(_ path: String) throws -> [UInt8] {
        try files { files in
            guard let data = files[path] else { throw FakeFailure(.notFound, "\(path): No such file or directory") }
            return data
        }
    }

    func shutdown() throws {
        machines.stop(name, graceful: true)
    }

    /// As `exec`, both streams as the terminal's output (the fake has no terminal to type into).
    func execTerminal(
        _ argv: [String], environment: [String], directory: String, terminal: TerminalSession, timeout: Duration?,
        output: ([UInt8]) -> Void
    ) throws -> GuestExit {
        try exec(
            argv, environment: environment, directory: directory, stdin: [], timeout: timeout, interruption: nil,
            output: { _, data in output(data) })
    }

    func exec(
        _ argv: [String], environment: [String], directory: String, stdin: [UInt8], timeout: Duration?,
        interruption: Interruption?, output: (ProcessStream, [UInt8]) -> Void
    ) throws -> GuestExit {
        try alive()
        if argv.count == 3, argv[0] == "/bin/sh", argv[1] == "-c", let result = try script(argv[2]) {
            if !result.stdout.isEmpty { output(.stdout, result.stdout) }
            if !result.stderr.isEmpty { output(.stderr, result.stderr) }
            return GuestExit(status: result.status, timedOut: false)
        }
        let variables = Dictionary(
            environment.compactMap { pair -> (String, String)? in
                guard let equals = pair.firstIndex(of: "=") else { return nil }
                return (String(pair[..<equals]), String(pair[pair.index(after: equals)...]))
            }, uniquingKeysWith: { _, last in last })
        let harness = machines.world.withLock { $0.harness }
        // A run's harness comes wrapped to start in the run's cgroup: the harness sees its own command.
        let command = GuestScripts.runGroupCommand(argv) ?? argv
        let outcome = harness(
            FakeMachines.Command(machine: name, argv: command, environment: variables, timeout: timeout))
        try files { files in for (path, bytes) in outcome.writes { files[path] = bytes } }
        if !outcome.stdout.isEmpty { output(.stdout, Array(outcome.stdout.utf8)) }
        if !outcome.stderr.isEmpty { output(.stderr, Array(outcome.stderr.utf8)) }
        if interruption?.isInterrupted == true { return GuestExit(status: 137, timedOut: false, interrupted: true) }
        try alive()
        return GuestExit(status: outcome.status, timedOut: outcome.timedOut)
    }

    // MARK: - agentry's scripts, by meaning

    struct Result {
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var status = 0
    }

    static let home = AgentLayout.home + "/"

    /// Nil when `script` is not one of agentry's.
    func script(_ script: String) throws -> Result? {
        let ours = [
            "tar -xf", "echo installed || echo not-installed", "mkdir -p /run/secrets", "find \"$@\" -type f",
            "/installed && echo ", "rm -rf -- /run/secrets",
        ]
        guard ours.contains(where: script.contains) else { return nil }
        return try files { files in
            var result = Result()
            if script.contains("find \"$@\" -type f") {
                // The collect script removes the run's secrets first.
                removeSecretFolders(script, &files)
                collect(script, files, &result)
                return result
            }
            // What earlier runs left: every secrets folder goes.
            if script.contains("find /run/secrets -mindepth 1") {
                for path in files.keys where path.hasPrefix("/run/secrets/") { files[path] = nil }
            }
            if script.contains("tar -xf \(GuestScripts.configurationStaging)") {
                try applyConfiguration(script, &files)
            }
            if script.contains("tar -xf \(GuestScripts.unpackStaging)") {
                try untar(GuestScripts.unpackStaging, &files)
            }
            if let match = script.firstMatch(of: /\[ -f (\S+) \] && echo installed/) {
                let marker = String(match.1)
                result.stdout += Array((files[marker] != nil ? "installed\n" : "not-installed\n").utf8)
            }
            if script.contains("/installed && echo "), let marker = Self.capture(script, after: "> ", before: "\n") {
                files[marker] = Array("installed\n".utf8)
            }
            if let output = Self.capture(script, after: "rm -rf -- '", before: "'") {
                for path in files.keys where path.hasPrefix(Self.home + output + "/") { files[path] = nil }
            }
            if !script.contains("mkdir -p /run/secrets") { removeSecretFolders(script, &files) }
            return result
        }
    }

    func removeSecretFolders(_ script: String, _ files: inout [String: [UInt8]]) {
        guard let folder = Self.capture(script, after: "rm -rf -- /run/secrets/", before: "\n") else { return }
        for path in files.keys where path.hasPrefix("/run/secrets/" + folder + "/") { files[path] = nil }
    }

    func applyConfiguration(_ script: String, _ files: inout [String: [UInt8]]) throws {
        let staging = GuestScripts.configurationStaging
        defer { files[staging] = nil }
        guard let digest = Self.capture(script, after: "if [ \"$current\" != ", before: " ]") else { return }
        let own = Self.home + AgentLayout.own
        if files[own + "/config.digest"].map({ String(decoding: $0, as: UTF8.self) }) == digest + "\n" { return }
        if let manifest = files[own + "/files"] {
            for line in String(decoding: manifest, as: UTF8.self).split(separator: "\n") {
                files[Self.home + line] = nil
            }
        }
        try untar(staging, &files)
        files[own + "/config.digest"] = Array((digest + "\n").utf8)
    }

    func untar(_ staging: String, _ files: inout [String: [UInt8]]) throws {
        guard let archive = files[staging] else { throw FakeFailure(.notFound, "tar: \(staging): No such file") }
        for file in TarReader.files(archive) { files[Self.home + file.path] = file.bytes }
        files[staging] = nil
    }

    /// Files of the listed folders: small ones as a tar on stdout, larger ones as digest and size.
    func collect(_ script: String, _ files: [String: [UInt8]], _ result: inout Result) {
        let list = Self.capture(script, after: "for folder in ", before: "; do") ?? ""
        let folders = list.split(separator: " ").map { String($0.dropFirst().dropLast()) }
        let kib = Int(Self.capture(script, after: "-type f -size -", before: "k") ?? "1").map { $0 - 1 } ?? 0
        var archive = TarWriter()
        for (path, bytes) in files.sorted(by: { $0.key < $1.key }) where path.hasPrefix(Self.home) {
            let relative = String(path.dropFirst(Self.home.count))
            guard folders.contains(where: { relative.hasPrefix($0 + "/") }) else { continue }
            if (bytes.count + 1023) / 1024 <= kib {
                try? archive.add(BundleFile(path: relative, bytes: bytes))
            } else {
                result.stderr += Array("\(SHA256.hex(bytes))  \(relative)\n\(bytes.count) \(relative)\n".utf8)
            }
        }
        result.stdout = archive.finish()
    }

    static func capture(_ text: String, after start: String, before end: String) -> String? {
        guard let open = text.range(of: start), let close = text[open.upperBound...].range(of: end) else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
    }
}
