-- A state database as the first schema (migration v1) left it, with one agent and one event.
CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
INSERT INTO grdb_migrations VALUES ('v1');
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
INSERT INTO agents VALUES ('triage', '0f1e2d', '[["model","sonnet"]]', 'abc123', 'active', 'retain', 'vm-1', 'running', '2026-11-01 10:00:00.000');
INSERT INTO events (time, agent, kind, actor, message) VALUES ('2026-11-01 10:00:00.000', 'triage', 'apply', 'ci', 'applied');
