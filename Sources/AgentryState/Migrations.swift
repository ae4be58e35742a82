import GRDB

extension SQLiteStateStore {
    /// Schema versions. Never edit a shipped migration: add the next one.
    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE agents (
                        name TEXT PRIMARY KEY NOT NULL,
                        applied_revision TEXT NOT NULL,
                        applied_fields TEXT NOT NULL DEFAULT '[]',
                        applied_commit TEXT NOT NULL,
                        lifecycle TEXT NOT NULL,
                        deletion_policy TEXT NOT NULL,
                        machine_id TEXT,
                        machine_state TEXT,
                        updated_at DATETIME NOT NULL
                    );
                    CREATE TABLE events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        time DATETIME NOT NULL,
                        agent TEXT,
                        kind TEXT NOT NULL,
                        actor TEXT NOT NULL,
                        message TEXT NOT NULL
                    );
                    CREATE INDEX events_agent ON events(agent, id);
                    """)
        }
        migrator.registerMigration("v2") { db in
            try db.execute(
                sql: """
                    ALTER TABLE agents ADD COLUMN accelerator TEXT;
                    ALTER TABLE agents ADD COLUMN last_run_at DATETIME;
                    CREATE TABLE parse_snapshots (
                        key TEXT PRIMARY KEY NOT NULL,
                        source TEXT NOT NULL,
                        created_at DATETIME NOT NULL,
                        data BLOB NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v3") { db in
            // Per-file parse results, consistent with the repository's derived snapshot.
            try db.execute(
                sql: """
                    CREATE TABLE parse_cache (
                        repository TEXT NOT NULL,
                        path TEXT NOT NULL,
                        blob_id TEXT NOT NULL,
                        result BLOB NOT NULL,
                        PRIMARY KEY (repository, path)
                    );
                    """)
        }
        migrator.registerMigration("v4") { db in
            // The operator's kill switch: an agent listed here is stopped and never started again
            // until it is removed (agentry unkill).
            try db.execute(
                sql: """
                    CREATE TABLE kill_switch (
                        name TEXT PRIMARY KEY NOT NULL,
                        reason TEXT NOT NULL,
                        actor TEXT NOT NULL,
                        time DATETIME NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v5") { db in
            // What the machine's state means (a failure's reason), the memory restore owed to a
            // new disk (journalled: an apply killed before restoring owes it still), who owned an
            // agent (a retired name reused by another owner does not inherit its disk), the audit
            // records of applies not yet committed to history, and settings (the repository this
            // state belongs to).
            try db.execute(
                sql: """
                    ALTER TABLE agents ADD COLUMN machine_detail TEXT;
                    ALTER TABLE agents ADD COLUMN restore_pending INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE agents ADD COLUMN owner TEXT;
                    CREATE TABLE pending_audits (
                        apply_id TEXT PRIMARY KEY NOT NULL,
                        header TEXT NOT NULL,
                        steps TEXT NOT NULL DEFAULT '',
                        started_at DATETIME NOT NULL
                    );
                    CREATE TABLE settings (
                        key TEXT PRIMARY KEY NOT NULL,
                        value TEXT NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v6") { db in
            // The parse cache moved to the user's cache folder (`SQLiteParseCache`), shared by
            // commands that keep no state.
            try db.execute(sql: "DROP TABLE parse_cache; DROP TABLE parse_snapshots;")
        }
        return migrator
    }()

    /// The schema versions this agentry knows, oldest first.
    public static var schemaVersions: [String] { migrator.migrations }
}
