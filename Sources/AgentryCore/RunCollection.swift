import AgentryBasics
import AgentryModel
import AgentryRender
import AgentryWire
import Synchronization

/// A run's output as it streams: each stream redacted as a stream (a secret may arrive split
/// across chunks), passed on to the caller, and kept for the record up to a bound.
struct RunLog {
    let redactor: Redactor
    let output: @Sendable (ProcessStream, [UInt8]) -> Void
    var streams: [ProcessStream: StreamRedactor]
    var log: [UInt8] = []
    var dropped = 0
    /// Standard output alone, for the transcript (Claude Code and Codex print their events there).
    var stdout: [UInt8] = []

    init(redactor: Redactor, output: @escaping @Sendable (ProcessStream, [UInt8]) -> Void) {
        self.redactor = redactor
        self.output = output
        streams = [.stdout: StreamRedactor(redactor), .stderr: StreamRedactor(redactor)]
    }

    mutating func feed(_ stream: ProcessStream, _ bytes: [UInt8]) {
        emit(stream, streams[stream]!.feed(bytes))
    }

    mutating func finish() {
        for stream in [ProcessStream.stdout, .stderr] { emit(stream, streams[stream]!.finish()) }
    }

    mutating func emit(_ stream: ProcessStream, _ clean: [UInt8]) {
        guard !clean.isEmpty else { return }
        output(stream, clean)
        if log.count < RunLimits.logBytes * 4 { log += clean } else { dropped += clean.count }
        if stream == .stdout, stdout.count < RunLimits.logBytes * 4 { stdout += clean }
    }

    /// The log as history keeps it: its head and tail around a marker past `RunLimits.logBytes`.
    func kept(timedOutAfter timeout: UInt64?) -> (bytes: [UInt8], truncated: Bool) {
        var text = redactor.redact(log)
        var truncated = dropped > 0
        if text.count > RunLimits.logBytes {
            let head = RunLimits.logBytes / 4
            let tail = RunLimits.logBytes - head
            let skipped = text.count - head - tail + dropped
            text =
                Array(text.prefix(head)) + Array("\n[agentry: \(skipped) bytes of output not kept]\n".utf8)
                + Array(text.suffix(tail))
            truncated = true
        } else if dropped > 0 {
            text += Array("\n[agentry: \(dropped) bytes of output not kept]\n".utf8)
        }
        if let timeout {
            text += Array(
                "\n[agentry: timed out after \(DurationText.format(milliseconds: timeout)); the process tree was killed]\n"
                    .utf8)
        }
        return (text, truncated)
    }
}

/// A run's output as its terminal sees it (already redacted), appended beside the state while the
/// run goes on so that `logs -f` can follow it; bounded like the log.
final class LiveLog: Sendable {
    let state: any StateStore
    let agent: String
    let written = Mutex(0)

    init(state: any StateStore, agent: String) {
        self.state = state
        self.agent = agent
    }

    func tee(_ output: @escaping @Sendable (ProcessStream, [UInt8]) -> Void)
        -> @Sendable (ProcessStream, [UInt8]) -> Void
    {
        { stream, bytes in
            output(stream, bytes)
            self.append(bytes)
        }
    }

    func append(_ bytes: [UInt8]) {
        let room = written.withLock { written -> Bool in
            guard written < RunLimits.logBytes * 4 else { return false }
            written += bytes.count
            return true
        }
        if room { try? state.appendLiveLog(agent: agent, bytes) }
    }
}

/// What a run leaves in its output and memory folders, read back from the guest.
enum RunCollection {
    struct File {
        var folder: String
        var relative: String
        var path: String
        var size: Int
        var sha256: String
        var bytes: [UInt8]?
        /// Redaction changed it: it held a secret value.
        var redacted = false
        /// Its name held a secret value (`relative` and `path` are redacted): stored by digest.
        var nameRedacted = false
    }

    /// In one guest command: removes the run's secrets, then returns the files of `folders`
    /// (relative to the home): those within each folder's size limit as a tar on stdout (digests
    /// taken here, bytes redacted), the larger ones by size and digest only (taken in the guest).
    static func collect(_ channel: any GuestChannel, folders: [(String, Int)], secretFolder: String, redactor: Redactor)
        throws -> [File]
    {
        // Two finds over all the folders (each find is a process start): files up to the smallest
        // limit come back in the tar; larger ones are listed with size and digest, and those a
        // folder's own limit still allows are fetched one by one below (no process start).
        let script = GuestScripts.collect(
            folders: folders.map(\.0), smallestLimit: folders.map(\.1).min() ?? 0, secretFolder: secretFolder)
        var archive: [UInt8] = []
        var large: [UInt8] = []
        let result = try channel.exec(
            ["/bin/sh", "-c", script], environment: ["PATH=" + GuestShell.systemPath, "HOME=" + AgentLayout.home],
            timeout: .seconds(300),
            output: { stream, bytes in
                // At most what the limits could ever store, whatever the guest sends.
                if stream == .stdout {
                    if archive.count < RunLimits.collectedBytes { archive += bytes }
                } else if large.count < 1 << 20 {
                    large += bytes
                }
            })
        guard result.status == 0 || !archive.isEmpty || result.status == 1 else {
            throw CoreError(
                .machineFailed,
                "collecting the run's files failed (exit \(result.status)): \(String(decoding: large.suffix(400), as: UTF8.self))"
            )
        }
        func folderOf(_ path: String) -> (String, String)? {
            for (folder, _) in folders where path.hasPrefix(folder + "/") {
                return (folder, String(path.dropFirst(folder.count + 1)))
            }
            return nil
        }
        var collected: [File] = []
        for file in TarReader.files(archive) {
            guard let (folder, relative) = folderOf(file.path) else { continue }
            collected.append(
                collectedFile(folder: folder, relative: relative, path: file.path, raw: file.bytes, redactor: redactor))
        }
        let listing = CollectListing.parse(String(decoding: large, as: UTF8.self))
        for (path, digest) in listing.digests.sorted(by: { $0.key < $1.key }) {
            guard let (folder, relative) = folderOf(path) else { continue }
            let size = listing.sizes[path] ?? 0
            if let limit = folders.first(where: { $0.0 == folder })?.1, size <= limit,
                let data = try? channel.getFile(AgentLayout.home + "/" + path), SHA256.hex(data) == digest
            {
                collected.append(
                    collectedFile(folder: folder, relative: relative, path: path, raw: data, redactor: redactor))
                continue
            }
            // Not stored, so no digest either: the guest's digest is of content nobody redacted.
            collected.append(File(folder: folder, relative: relative, path: path, size: size, sha256: "", bytes: nil))
        }
        // A secret value in a file's name never reaches history: the name is redacted and the
        // file stored by its digest.
        return collected.map { file in
            var file = file
            let relative = redactor.text(file.relative)
            if relative != file.relative {
                file.relative = relative
                file.path = redactor.text(file.path)
                file.nameRedacted = true
            }
            return file
        }.sorted { $0.path < $1.path }
    }

    /// A collected file: its bytes redacted, and its digest and size those of what is stored when
    /// redaction changed it (a digest of a file that holds only a token would let a weak token be
    /// guessed). Names git would refuse are stored by digest (`HistoryName`).
    static func collectedFile(folder: String, relative: String, path: String, raw: [UInt8], redactor: Redactor) -> File
    {
        let clean = redactor.redact(raw)
        return File(
            folder: folder, relative: relative, path: path, size: clean.count, sha256: SHA256.hex(clean), bytes: clean,
            redacted: clean != raw)
    }

    /// Keeps the bytes of files while their sum stays within `total`; the rest by digest only.
    static func limit(_ files: [File], total: Int) -> [File] {
        var used = 0
        return files.map { file in
            var file = file
            if let bytes = file.bytes {
                if used + bytes.count > total { file.bytes = nil } else { used += bytes.count }
            }
            return file
        }
    }
}
