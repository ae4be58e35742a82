import AgentryBasics
import AgentryCore
import Foundation
import GRDB
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A state store failure, with what to do about it.
public struct StateError: AgentryFailure {
    public enum Code: Sendable, Equatable {
        /// Another process holds the writer lock.
        case locked(pid: Int32?)
        /// The database was written by a newer agentry.
        case newerSchema
        /// The file is not a readable agentry database.
        case corrupt
        /// Writing without the writer lock (a bug).
        case notWriter
        /// There is no state to read (no folder, a file, no database).
        case missing
        case io
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(code: Code, message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var category: FailureCategory {
        switch code {
        case .locked: return .locked
        case .newerSchema, .corrupt: return .conflict
        case .notWriter: return .internalFailure
        case .missing: return .notFound
        case .io: return .io
        }
    }
}

/// The actual-state database (`state.sqlite`, WAL) in the state directory, opened when first used:
/// reads of a database that does not exist yet see an empty state, the first write creates it.
///
/// Any number of readers; one writer at a time, by an exclusive lock on `state.lock` that holds the
/// writer's pid, so a second writer fails at once naming the holder. Readers are never blocked.
/// Safe to share between threads: the open database and the lock count are behind a mutex.
public final class SQLiteStateStore: StateStore {
    public let directory: String
    private let inner = Mutex(Inner())

    struct Inner {
        var pool: DatabasePool?
        /// Writer locks this process holds through this store, by the thread that took them: the
        /// lock is the thread's (a write from another thread of this process while one holds it is
        /// not covered by it, and takes the lock itself).
        var holders: [UInt: Int] = [:]
    }

    public static let databaseName = "state.sqlite"
    public static let lockName = "state.lock"
    static let repositoryFile = "history-repository"

    public init(directory: String) {
        self.directory = directory
    }

    /// `AGENTRY_STATE_DIR`, else `/var/lib/agentry` as root, else `$XDG_STATE_HOME/agentry`
    /// (`~/.local/state/agentry`).
    public static func defaultDirectory(environment: [String: String]) -> String {
        if let explicit = environment["AGENTRY_STATE_DIR"], !explicit.isEmpty { return explicit }
        if getuid() == 0 { return "/var/lib/agentry" }
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty { return xdg + "/agentry" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state/agentry"
    }

    var databasePath: String { directory + "/" + Self.databaseName }

    public var exists: Bool { FileManager.default.fileExists(atPath: databasePath) }

    public var location: String { directory }

    public func checkReadable() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw StateError(
                code: .missing,
                message:
                    "there is no agentry state in \(directory) (the folder does not exist): nothing was applied there, or --state-dir is wrong; apply creates it"
            )
        }
        guard isDirectory.boolValue else {
            throw StateError(code: .missing, message: "the state directory \(directory) is a file, not a folder")
        }
        guard exists else {
            throw StateError(
                code: .missing,
                message:
                    "\(directory) holds no agentry state database (\(Self.databaseName)): nothing was applied there, or --state-dir is wrong; apply creates it"
            )
        }
        _ = try pool(create: false)
    }

    /// The open database; nil when there is none and `create` is false.
    func pool(create: Bool) throws -> DatabasePool? {
        if let pool = inner.withLock({ $0.pool }) { return pool }
        if !create && !exists { return nil }
        if create { try makeDirectory() }
        let pool = try Self.open(directory: directory, holdingLock: isWriter)
        return inner.withLock { state in
            if let existing = state.pool { return existing }
            state.pool = pool
            return pool
        }
    }

    func makeDirectory() throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw StateError(
                code: .io, message: "cannot create the state directory \(directory): \(error.localizedDescription)")
        }
    }

    /// Whether the calling thread holds the writer lock.
    var isWriter: Bool {
        let thread = UInt(pthread_self())
        return inner.withLock { ($0.holders[thread] ?? 0) > 0 }
    }

    func writer() throws -> DatabasePool {
        guard isWriter else {
            throw StateError(code: .notWriter, message: "internal: the state is written without the writer lock")
        }
        guard let pool = try pool(create: true) else {
            throw StateError(code: .io, message: "cannot open \(databasePath)")
        }
        return pool
    }

    func reading<T>(_ empty: T, _ body: (Database) throws -> T) throws -> T {
        guard let pool = try pool(create: false) else { return empty }
        return try describing { try pool.read(body) }
    }

    /// Database errors as a user reads them.
    func describing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StateError {
            throw error
        } catch {
            throw Self.describe(error, path: databasePath)
        }
    }

    // MARK: - The writer lock

    final class WriterLock: StateWriterLock {
        let store: SQLiteStateStore
        let descriptor: HeldDescriptor
        let thread: UInt

        init(store: SQLiteStateStore, descriptor: Int32, thread: UInt) {
            self.store = store
            self.descriptor = HeldDescriptor(descriptor)
            self.thread = thread
        }

        func release() {
            guard descriptor.release() else { return }
            store.inner.withLock { inner in
                inner.holders[thread, default: 1] -= 1
                if inner.holders[thread] == 0 { inner.holders[thread] = nil }
            }
        }

        deinit { release() }
    }

    public func lockForWriting() throws -> any StateWriterLock {
        try makeDirectory()
        let descriptor = try Self.acquireLock(directory)
        let thread = UInt(pthread_self())
        inner.withLock { $0.holders[thread, default: 0] += 1 }
        return WriterLock(store: self, descriptor: descriptor, thread: thread)
    }

    @discardableResult
    public func withWriterLockIfFree(_ body: () throws -> Void) throws -> Bool {
        if isWriter {
            try body()
            return true
        }
        guard let lock = try? lockForWriting() else { return false }
        defer { lock.release() }
        try body()
        return true
    }

    public func withWriterLock<T>(waitingUpTo patience: Duration, _ body: () throws -> T) throws -> T {
        if isWriter { return try body() }
        let deadline = ContinuousClock.now + patience
        var lock: (any StateWriterLock)?
        while lock == nil {
            do {
                lock = try lockForWriting()
            } catch let error as StateError {
                guard case .locked = error.code, ContinuousClock.now < deadline else { throw error }
                usleep(20_000)
            }
        }
        defer { lock?.release() }
        return try body()
    }

    static func acquireLock(_ directory: String) throws -> Int32 {
        let path = directory + "/" + lockName
        let descriptor = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StateError(code: .io, message: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(descriptor, &buffer, buffer.count, 0)
            close(descriptor)
            let pid =
                count > 0
                ? Int32(
                    String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
                : nil
            let holder = pid.map { "process \($0)" } ?? "another process"
            throw StateError(
                code: .locked(pid: pid),
                message:
                    "the state in \(directory) is locked by \(holder) (another agentry apply or reconcile is writing); try again when it finishes"
            )
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pwrite(descriptor, pid, pid.count, 0)
        return descriptor
    }

    // MARK: - Opening

    static func open(directory: String, holdingLock: Bool) throws -> DatabasePool {
        let path = directory + "/" + databaseName
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "agentry-state"
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw describe(error, path: path)
        }
        do {
            let (superseded, complete) = try pool.read { db in
                (try migrator.hasBeenSuperseded(db), try migrator.hasCompletedMigrations(db))
            }
            if superseded {
                throw StateError(
                    code: .newerSchema,
                    message:
                        "\(path) was written by a newer agentry (its schema has migrations this version does not know); upgrade agentry, or point --state-dir elsewhere"
                )
            }
            if !complete {
                // Migrating is writing: only under the writer lock.
                if holdingLock {
                    try migrator.migrate(pool)
                } else {
                    let descriptor = try acquireLock(directory)
                    defer { close(descriptor) }
                    try migrator.migrate(pool)
                }
            }
        } catch let error as StateError {
            throw error
        } catch {
            throw describe(error, path: path)
        }
        return pool
    }

    static func describe(_ error: Error, path: String) -> StateError {
        if let database = error as? DatabaseError,
            database.resultCode == .SQLITE_NOTADB || database.resultCode == .SQLITE_CORRUPT
        {
            return StateError(
                code: .corrupt,
                message:
                    "\(path) is not a readable agentry state database (\(database.message ?? "corrupt")); move it aside to start afresh",
                cause: database)
        }
        return StateError(code: .io, message: "cannot use \(path): \(error)")
    }

    // MARK: - The repository the last apply read

    public func rememberedRepository() -> String? {
        (try? String(contentsOfFile: directory + "/" + Self.repositoryFile, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func rememberRepository(_ absolutePath: String) {
        try? (absolutePath + "\n").write(
            toFile: directory + "/" + Self.repositoryFile, atomically: true, encoding: .utf8)
    }
}

extension SQLiteStateStore {
    // MARK: - The run journal (files beside the database: no writer lock needed)

    var journalFolder: String { directory + "/runs" }

    func journalFile(_ agent: String) throws -> String {
        guard ResourceName.isValid(agent) else {
            throw StateError(
                code: .corrupt, message: "\"\(agent)\" is not an agent name; the run journal is not written")
        }
        return journalFolder + "/" + agent + ".json"
    }

    public func saveRunJournal(_ journal: RunJournal) throws {
        try makeDirectory()
        try FileManager.default.createDirectory(atPath: journalFolder, withIntermediateDirectories: true)
        let file = try journalFile(journal.agent)
        let temporary = TemporaryName.beside(file)
        do {
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .secondsSince1970
            try encoder.encode(journal).write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, file) == 0 else {
                throw StateError(code: .io, message: "cannot write \(file): \(String(cString: strerror(errno)))")
            }
        } catch let error as StateError {
            unlink(temporary)
            throw error
        } catch {
            unlink(temporary)
            throw StateError(code: .io, message: "cannot write \(file): \(error.localizedDescription)")
        }
    }

    public func runJournals() throws -> [RunJournal] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: journalFolder)) ?? []
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return names.filter { $0.hasSuffix(".json") }.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: journalFolder + "/" + name),
                let journal = try? decoder.decode(RunJournal.self, from: data), ResourceName.isValid(journal.agent),
                name == journal.agent + ".json"
            else { return nil }
            return journal
        }
    }

    public func clearRunJournal(agent: String) throws {
        unlink(try journalFile(agent))
    }

    func liveLogFile(_ agent: String) throws -> String {
        String(try journalFile(agent).dropLast(".json".count)) + ".log"
    }

    /// Appended to the log `resetLiveLog` started (none is made here: a log without its run's
    /// name could be taken for another run's).
    public func appendLiveLog(agent: String, _ bytes: [UInt8]) throws {
        let descriptor = Glibc.open(try liveLogFile(agent), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        _ = bytes.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count) }
    }

    /// A new file, its first line the run's id, put in place of the last run's, which is kept (as
    /// `.previous`, in place of the one before) for readers still after its last lines: a reader
    /// holding a file open reads on in its run's, never half of each. When that fails, the last
    /// run's is removed all the same, so that this run's output is never appended to it.
    public func resetLiveLog(agent: String, run: String) throws {
        try makeDirectory()
        try FileManager.default.createDirectory(atPath: journalFolder, withIntermediateDirectories: true)
        let file = try liveLogFile(agent)
        let fresh = file + ".new"
        unlink(fresh)
        let descriptor = Glibc.open(fresh, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else {
            let error = String(cString: strerror(errno))
            unlink(file)
            throw StateError(code: .io, message: "cannot write \(fresh): \(error)")
        }
        let header = Array((run + "\n").utf8)
        let written = header.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
        rename(file, file + ".previous")
        guard written == header.count, rename(fresh, file) == 0 else {
            let error = String(cString: strerror(errno))
            unlink(fresh)
            unlink(file)
            throw StateError(code: .io, message: "cannot write \(file): \(error)")
        }
    }

    public func liveLog(agent: String, run: String?, from offset: Int) throws -> LiveOutput? {
        let file = try liveLogFile(agent)
        let current = Self.readLiveLog(file, from: offset)
        guard let run, current?.run != run else { return current }
        let previous = Self.readLiveLog(file + ".previous", from: offset)
        return previous?.run == run ? previous : nil
    }

    static func readLiveLog(_ file: String, from offset: Int) -> LiveOutput? {
        let descriptor = Glibc.open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        // The first line names the run (an id of a few dozen bytes).
        var header = [UInt8](repeating: 0, count: 256)
        let headerCount = pread(descriptor, &header, header.count, 0)
        guard headerCount > 0, let newline = header[0..<headerCount].firstIndex(of: UInt8(ascii: "\n")) else {
            return nil
        }
        let run = String(decoding: header[0..<newline], as: UTF8.self)
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_size >= off_t(newline + 1 + offset) else { return nil }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var position = off_t(newline + 1 + offset)
        while true {
            let count = pread(descriptor, &buffer, buffer.count, position)
            guard count > 0 else { break }
            bytes += buffer[0..<count]
            position += off_t(count)
        }
        return LiveOutput(run: run, bytes: bytes)
    }
}
