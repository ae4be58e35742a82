import AgentryBasics
import AgentryRender
import AgentryWire

/// `agentry cp`: files between the host and an agent's machine, byte for byte, over its control
/// channel (no network). The core moves bytes; the caller reads and writes the host's files.
public struct Copy: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    /// One file: its path relative to what was copied (empty for a single file), its bytes, and
    /// whether it is executable.
    public struct File: Sendable, Equatable {
        public var path: String
        public var bytes: [UInt8]
        public var executable: Bool

        public init(path: String, bytes: [UInt8], executable: Bool = false) {
            self.path = path
            self.bytes = bytes
            self.executable = executable
        }
    }

    /// The largest file that fits in one frame of the control channel.
    public static let largestFile = Wire.maxFrame - (1 << 20)
    /// At most this many files in one copy, and this many bytes of names listed from a guest.
    public static let mostFiles = 10_000
    static let listingBytes = 8 << 20

    /// A guest path as the guest sees it: relative ones are in the agent's home.
    public static func guestPath(_ path: String) -> String {
        path.hasPrefix("/") ? path : AgentLayout.home + (path.isEmpty || path == "." ? "" : "/" + path)
    }

    /// Whether a relative path from a guest may become a host path under the destination: no
    /// absolute path, no `..`, no empty or `.` part, no NUL, no control characters.
    public static func isSafeRelative(_ path: String) -> Bool {
        guard !path.isEmpty, !path.hasPrefix("/"), path.utf8.count < 4096 else { return false }
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return false }
        return path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy {
            !$0.isEmpty && $0 != "." && $0 != ".."
        }
    }

    /// Whether a name from a guest may be written on the host: a plain relative path with no `.git`
    /// part (a guest's `.git/config` or hooks would run its commands on the host when git is used
    /// there), in any case.
    public static func isSafeFromGuest(_ path: String) -> Bool {
        isSafeRelative(path) && !path.split(separator: "/").contains { $0.lowercased() == ".git" }
    }

    /// Puts `files` in the guest: a single file (path empty) at `destination`, or each under the
    /// folder `destination`. Returns how many. Every name and size is checked before anything is sent.
    public func toGuest(agent: String, files: [File], destination: String) async throws -> Int {
        _ = try Operations(ports).reachable(agent)
        for file in files where !(file.path.isEmpty && files.count == 1) && !Self.isSafeRelative(file.path) {
            throw CoreError(.invalidArgument, "cannot copy \(file.path): not a plain relative path")
        }
        guard files.count <= Self.mostFiles else {
            throw CoreError(
                .invalidArgument, "\(files.count) files; agentry cp copies at most \(Self.mostFiles) at once")
        }
        for file in files where file.bytes.count > Self.largestFile {
            throw CoreError(
                .invalidArgument,
                "\(file.path.isEmpty ? "the file" : file.path) is \(file.bytes.count) bytes; agentry cp copies files of up to \(Self.largestFile)"
            )
        }
        let target = Self.guestPath(destination)
        let ports = ports
        return try await BlockingWork.run {
            let channel = try Self.connect(ports, agent)
            for file in files {
                let path = file.path.isEmpty ? target : target + "/" + file.path
                try reporting(.machineFailed) {
                    try channel.putFile(path, file.bytes, mode: file.executable ? 0o755 : 0o644)
                }
            }
            return files.count
        }
    }

    /// Hands `deliver` what `source` in the guest holds, one file at a time as it is read (so the
    /// host holds one file, never the folder): one file (path empty), or the regular files under a
    /// folder with their paths relative to it. Names a guest gives that could leave the
    /// destination or run on the host (`..`, absolute, control characters, `.git`) are refused,
    /// named in `refused`. Returns how many were delivered.
    public func fromGuest(
        agent: String, source: String, deliver: @escaping @Sendable (File) throws -> Void
    ) async throws -> (count: Int, refused: [String]) {
        _ = try Operations(ports).reachable(agent)
        let path = Self.guestPath(source)
        let ports = ports
        return try await BlockingWork.run {
            let channel = try Self.connect(ports, agent)
            // A folder lists its executable regular files, an empty name, then all its regular files
            // (NUL-separated); anything else is read as one file (exit 4 when it is executable).
            var listing: [UInt8] = []
            var overflow = false
            let script = """
                if [ -d "$1" ]; then cd "$1" && find . -type f -perm -100 -print0 && printf '\\0' && find . -type f -print0; \
                elif [ -f "$1" ] && [ -x "$1" ]; then exit 4; else exit 3; fi
                """
            let exit = try reporting(.machineFailed) {
                try channel.exec(
                    ["/bin/sh", "-c", script, "sh", path], environment: ["PATH=" + GuestShell.runPath],
                    directory: "/", stdin: [], timeout: .seconds(60), interruption: nil
                ) { stream, bytes in
                    guard stream == .stdout else { return }
                    if listing.count + bytes.count > Self.listingBytes { overflow = true } else { listing += bytes }
                }
            }
            if exit.status == 3 || exit.status == 4 {
                let bytes = try reporting(.machineFailed) { try channel.getFile(path) }
                try deliver(File(path: "", bytes: bytes, executable: exit.status == 4))
                return (1, [])
            }
            guard exit.status == 0, !overflow else {
                throw CoreError(
                    .machineFailed,
                    overflow
                        ? "\(source) in \(agent) lists more names than agentry cp reads (8 MiB)"
                        : "cannot list \(source) in \(agent)")
            }
            var names: [String] = []
            var refused: [String] = []
            let entries = listing.split(separator: 0, omittingEmptySubsequences: false)
            let boundary = entries.firstIndex(where: \.isEmpty) ?? entries.endIndex
            let executables = Set(entries[..<boundary].map { String(decoding: $0, as: UTF8.self) })
            for entry in entries[boundary...] where !entry.isEmpty {
                var relative = String(decoding: entry, as: UTF8.self)
                if relative.hasPrefix("./") { relative.removeFirst(2) }
                guard Self.isSafeFromGuest(relative) else {
                    refused.append(String(relative.unicodeScalars.map { $0.value < 0x20 ? "?" : Character($0) }))
                    continue
                }
                names.append(relative)
            }
            guard names.count <= Self.mostFiles else {
                throw CoreError(
                    .invalidArgument,
                    "\(source) holds \(names.count) files; agentry cp copies at most \(Self.mostFiles)")
            }
            for relative in names.sorted() {
                let bytes = try reporting(.machineFailed) { try channel.getFile(path + "/" + relative) }
                try deliver(File(path: relative, bytes: bytes, executable: executables.contains("./" + relative)))
            }
            return (names.count, refused)
        }
    }

    static func connect(_ ports: Ports, _ agent: String) throws -> any GuestChannel {
        guard ports.machines.isRunning(agent) else {
            throw CoreError(
                .machineNotRunning, "the machine of \(agent) is not running; `agentry apply` starts it again")
        }
        return try reporting(.machineFailed) { try ports.machines.connect(agent, timeout: .seconds(10)) }
    }
}
