import AgentryCore
import AgentryState
import Foundation
import GRDB
import TestSupport
import Testing

/// The shared parse cache: a cache, so never in the way of the command that uses it.
@Suite struct ParseCacheTests {
    func row(_ path: String, _ blob: String) -> CachedParse {
        CachedParse(path: path, blobID: blob, result: Data(path.utf8))
    }

    @Test func keepsWhatItWasGivenPerBuildAndCreatesNothingUntilWritten() throws {
        let directory = try TemporaryDirectory()
        let folder = directory.path + "/cache/agentry"
        let cache = SQLiteParseCache(directory: folder, generation: "build-1")
        #expect(try cache.snapshot(key: "repo") == nil)
        #expect(try cache.cachedFiles(key: "repo", paths: nil).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: folder), "reading creates nothing")

        #expect(
            try cache.saveSnapshot(
                key: "repo", source: "c1", data: Data("snapshot".utf8),
                files: [row("a.yaml", "1"), row("b.yaml", "2")],
                removed: [], replaceAll: true))
        #expect(try cache.snapshot(key: "repo")?.source == "c1")
        #expect(try cache.cachedFiles(key: "repo", paths: ["b.yaml", "missing"]).map(\.blobID) == ["2"])
        #expect(
            try cache.saveSnapshot(
                key: "repo", source: "c2", data: Data(), files: [row("c.yaml", "3")], removed: ["a.yaml"],
                replaceAll: false))
        #expect(try cache.cachedFiles(key: "repo", paths: nil).map(\.path).sorted() == ["b.yaml", "c.yaml"])

        // Another build of agentry (an upgrade) reads nothing an older validator concluded.
        let upgraded = SQLiteParseCache(directory: folder, generation: "build-2")
        #expect(try upgraded.snapshot(key: "repo") == nil)
        #expect(try upgraded.cachedFiles(key: "repo", paths: nil).isEmpty)

        // Only its user reads it.
        let attributes = try FileManager.default.attributesOfItem(atPath: folder)
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        let file = try FileManager.default.attributesOfItem(atPath: folder + "/" + SQLiteParseCache.fileName)
        #expect((file[.posixPermissions] as? Int) == 0o600)
    }

    /// Another process in the middle of a long write: readers go on, a writer gives up its write
    /// after a short wait instead of holding up the command.
    @Test func aBusyCacheIsReadAndItsWriteSkipped() throws {
        let directory = try TemporaryDirectory()
        let cache = SQLiteParseCache(directory: directory.path, generation: "g")
        #expect(
            try cache.saveSnapshot(
                key: "repo", source: "c1", data: Data(), files: [row("a.yaml", "1")], removed: [], replaceAll: true))
        let holder = try BackgroundProcess(
            "python3",
            [
                "-c",
                """
                import sqlite3, sys, time
                db = sqlite3.connect(sys.argv[1], isolation_level=None)
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM parse_cache")
                print("writing", flush=True); time.sleep(30)
                """,
                directory.path + "/" + SQLiteParseCache.fileName,
            ])
        #expect(holder.firstLine() == "writing")
        let other = SQLiteParseCache(directory: directory.path, generation: "g")
        #expect(try other.snapshot(key: "repo")?.source == "c1", "readers are never blocked")
        #expect(try other.cachedFiles(key: "repo", paths: nil).count == 1, "nor see an unfinished write")
        let started = ContinuousClock.now
        #expect(
            try other.saveSnapshot(key: "repo", source: "c2", data: Data(), files: [], removed: [], replaceAll: false)
                == false)
        #expect(ContinuousClock.now - started < .seconds(30), "the write was skipped, not waited out")
        #expect(try other.snapshot(key: "repo")?.source == "c1")
    }

    @Test func repositoriesNotSeenForAMonthAreDropped() throws {
        let directory = try TemporaryDirectory()
        let cache = SQLiteParseCache(directory: directory.path, generation: "g")
        for key in ["old", "recent"] {
            #expect(
                try cache.saveSnapshot(
                    key: key, source: "c", data: Data(), files: [row("a.yaml", "1")], removed: [], replaceAll: true))
        }
        let database = try DatabaseQueue(path: directory.path + "/" + SQLiteParseCache.fileName)
        try database.write { db in
            try db.execute(
                sql: "UPDATE parse_snapshots SET created_at = ? WHERE key = ?",
                arguments: [Date().addingTimeInterval(-31 * 24 * 3600), "g\nold"])
        }
        try database.close()
        #expect(
            try cache.saveSnapshot(key: "recent", source: "c2", data: Data(), files: [], removed: [], replaceAll: false)
        )
        #expect(try cache.snapshot(key: "old") == nil)
        #expect(try cache.cachedFiles(key: "old", paths: nil).isEmpty)
        #expect(try cache.cachedFiles(key: "recent", paths: nil).count == 1)
    }
}
