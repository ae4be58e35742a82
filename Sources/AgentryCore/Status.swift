import AgentryBasics
import AgentryModel
import AgentryPlan
import Foundation

/// One row of `agentry status`.
public struct AgentStatus: Sendable {
    public var name: String
    public var desiredRevision: String?
    public var appliedRevision: String?
    public var lifecycle: String
    public var machineState: String?
    public var accelerator: String?
    public var lastRun: Date?

    /// `in sync`, `out of sync`, `not applied` (in git only) or `not in git` (applied only).
    public var sync: String {
        switch (desiredRevision, appliedRevision) {
        case (let desired?, let applied?): return desired == applied ? "in sync" : "out of sync"
        case (_?, nil): return "not applied"
        case (nil, _?): return "not in git"
        case (nil, nil): return "-"
        }
    }

    /// Rows for every agent in the state and, when a repository is given (or the current folder
    /// is one), every agent it declares.
    public static func collect(repository: String?, ref: String, path: String, ports: Ports) async throws
        -> [AgentStatus]
    {
        try await BlockingWork.run {
            var desired: [String: DesiredAgent] = [:]
            let location = repository ?? (ports.source.isRepository(".") ? "." : nil)
            if let location {
                let reader = try ports.reader(location, path: path)
                let loaded = try reporting(.repositoryUnavailable) { try reader.load(ref) }
                if loaded.report.isValid {
                    desired = loaded.desired.agents
                } else {
                    ports.logger.warning("the repository is invalid; desired revisions are not shown")
                }
            }
            var records: [String: AgentRecord] = [:]
            var killed: Set<String> = []
            if ports.state.exists {
                try reporting(.stateUnavailable) {
                    for record in try ports.state.agents() { records[record.name] = record }
                    killed = try ports.state.killedAgents()
                }
            }
            return Set(desired.keys).union(records.keys).sorted().map { name in
                let record = records[name]
                // What the machine is doing now, not only what was last recorded: a VM that died shows.
                var machine = record?.machineState
                if record != nil {
                    let running = ports.machines.isRunning(name)
                    if killed.contains(name) {
                        machine = "killed"
                    } else if machine == "running" && !running {
                        machine = "died"
                    } else if running && machine != "running" {
                        machine = "running"
                    }
                }
                return AgentStatus(
                    name: name, desiredRevision: desired[name]?.revision, appliedRevision: record?.appliedRevision,
                    lifecycle: record?.lifecycle ?? desired[name]?.lifecycle.rawValue ?? "-",
                    machineState: machine, accelerator: record?.accelerator, lastRun: record?.lastRunAt)
            }
        }
    }

    static func short(_ revision: String?) -> String {
        revision.map { String($0.prefix(12)) } ?? "-"
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return Timestamp.rfc3339(date.timeIntervalSince1970)
    }

    public static func table(_ rows: [AgentStatus]) -> String {
        guard !rows.isEmpty else { return "No agents: the repository declares none and none has been applied.\n" }
        var table = TextTable(["AGENT", "DESIRED", "APPLIED", "SYNC", "LIFECYCLE", "MACHINE", "ACCEL", "LAST RUN"])
        for row in rows {
            table.append([
                row.name, short(row.desiredRevision), short(row.appliedRevision), row.sync, row.lifecycle,
                row.machineState ?? "-", row.accelerator ?? "-", time(row.lastRun),
            ])
        }
        return table.rendered
    }

    public static func json(_ rows: [AgentStatus]) -> String {
        func optional(_ value: String?) -> JSON { value.map(JSON.string) ?? .null }
        return JSON.object([
            ("formatVersion", .int(1)),
            (
                "agents",
                .array(
                    rows.map { row in
                        .object([
                            ("name", .string(row.name)),
                            ("desiredRevision", optional(row.desiredRevision)),
                            ("appliedRevision", optional(row.appliedRevision)),
                            ("sync", .string(row.sync)),
                            ("lifecycle", .string(row.lifecycle)),
                            ("machineState", optional(row.machineState)),
                            ("accelerator", optional(row.accelerator)),
                            ("lastRun", row.lastRun.map { .string(time($0)) } ?? .null),
                        ])
                    })
            ),
        ]).rendered() + "\n"
    }
}
