import AgentryCore
import Foundation
import GRDB
import Synchronization

/// The loader's parse cache shared by `validate`, `diff`, `plan` and everything else that reads an
/// agent repository: `parse-cache.sqlite` (WAL) in the user's cache folder, so that a CI job that
/// runs `validate`, then `diff`, then `plan` parses the repository once.
///
/// A cache, never a source of truth: rows are checked against git blob ids before use, any number
/// of processes read and write it at once (SQLite's locking; a writer that would wait long skips
/// its write), and a cache that cannot be opened, read or written is reported in the debug log and
/// worked without. Results are kept per build of agentry (`generation`), so an upgrade never reads
/// what an older validator concluded; entries unused for `retention` are dropped.
public final class SQLiteParseCache: ParseCache {
    public let directory: String
    let generation: String
    private let opened = Mutex<DatabasePool?>(nil)

    public static let fileName = "parse-cache.sqlite"
    /// How long a repository's entries stay without being saved again.
    static let retention: TimeInterval = 30 * 24 * 3600

    /// `generation` names the build whose results these are (its version and executable).
    public init(directory: String, generation: String) {
        self.directory = directory
        self.generation = generation
    }

    /// `$AGENTRY_CACHE_DIR`, else `/var/cache/agentry` as root, else `$XDG_CACHE_HOME/agentry`
    /// (`~/.cache/agentry`).
    public static func defaultDirectory(environment: [String: String]) -> String {
        if let explicit = environment["AGENTRY_CACHE_DIR"], !explicit.isEmpty { return explicit }
        if getuid() == 0 { return "/var/cache/agentry" }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/agentry" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.cache/agentry"
    }

    var path: String { directory + "/" + Self.fileName }

    func key(_ key: String) -> String { generation + "\n" + key }

    public func snapshot(key: String) throws -> (source: String, data: Data)? {
        guard let pool = try pool(create: false) else { return nil }
        return try pool.read { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT source, data FROM parse_snapshots WHERE key = ?", arguments: [self.key(key)])
            else { return nil }
            return (row["source"], row["data"])
        }
    }

    public func cachedFiles(key: String, paths: [String]?) throws -> [CachedParse] {
        guard let pool = try pool(create: false) else { return [] }
        let key = self.key(key)
        return try pool.read { db in
            var rows: [CachedParse] = []
            if let paths {
                let select = try db.makeStatement(
                    sql: "SELECT path, blob_id, result FROM parse_cache WHERE repository = ? AND path = ?")
                for path in paths {
                    if let row = try Row.fetchOne(select, arguments: [key, path]) {
                        rows.append(CachedParse(path: row[0], blobID: row[1], result: row[2]))
                    }
                }
            } else {
                let cursor = try Row.fetchCursor(
                    db, sql: "SELECT path, blob_id, result FROM parse_cache WHERE repository = ?", arguments: [key])
                while let row = try cursor.next() {
                    rows.append(CachedParse(path: row[0], blobID: row[1], result: row[2]))
                }
            }
            return rows
        }
    }

    public func saveSnapshot(
        key: String, source: String, data: Data, files: [CachedParse], removed: [String], replaceAll: Bool
    ) throws -> Bool {
        guard let pool = try pool(create: true) else { return false }
        let key = self.key(key)
        do {
            try pool.write { db in
                let now = Date()
                try db.execute(
                    sql: "INSERT OR REPLACE INTO parse_snapshots (key, source, created_at, data) VALUES (?, ?, ?, ?)",
                    arguments: [key, source, now, data])
                if replaceAll {
                    try db.execute(sql: "DELETE FROM parse_cache WHERE repository = ?", arguments: [key])
                }
                for path in removed {
                    try db.execute(
                        sql: "DELETE FROM parse_cache WHERE repository = ? AND path = ?", arguments: [key, path])
                }
                let insert = try db.makeStatement(
                    sql: "INSERT OR REPLACE INTO parse_cache (repository, path, blob_id, result) VALUES (?, ?, ?, ?)")
                for file in files {
                    try insert.execute(arguments: [key, file.path, file.blobID, file.result])
                }
                // Repositories (and builds of agentry) not seen for a while go.
                let stale = try String.fetchAll(
                    db, sql: "SELECT key FROM parse_snapshots WHERE created_at < ?",
                    arguments: [now.addingTimeInterval(-Self.retention)])
                for old in stale {
                    try db.execute(sql: "DELETE FROM parse_snapshots WHERE key = ?", arguments: [old])
                    try db.execute(sql: "DELETE FROM parse_cache WHERE repository = ?", arguments: [old])
                }
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
            return false
        }
        return true
    }

    /// The open cache; nil when there is none yet and `create` is false.
    func pool(create: Bool) throws -> DatabasePool? {
        if let pool = opened.withLock({ $0 }) { return pool }
        if !create && !FileManager.default.fileExists(atPath: path) { return nil }
        if create {
            // Only its user reads what the cache holds (file names and fields of private repositories).
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        var configuration = Configuration()
        // Readers never wait (WAL); a writer waits briefly for another, then skips its write.
        configuration.busyMode = .timeout(2)
        configuration.label = "agentry-parse-cache"
        let pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
        chmod(path, 0o600)
        return opened.withLock { opened in
            if let existing = opened { return existing }
            opened = pool
            return pool
        }
    }

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE parse_snapshots (
                        key TEXT PRIMARY KEY NOT NULL,
                        source TEXT NOT NULL,
                        created_at DATETIME NOT NULL,
                        data BLOB NOT NULL
                    );
                    CREATE TABLE parse_cache (
                        repository TEXT NOT NULL,
                        path TEXT NOT NULL,
                        blob_id TEXT NOT NULL,
                        result BLOB NOT NULL,
                        PRIMARY KEY (repository, path)
                    ) WITHOUT ROWID;
                    """)
        }
        return migrator
    }()
}
