import AgentryGit
import AgentryMachine
import AgentryModel
import AgentryPlan
import AgentryState
import Foundation
import Logging

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

    /// Rows for every agent in the state database and, when a repository is given (or the current
    /// folder is one), every agent it declares.
    public static func collect(
        repository: String?, ref: String, path: String, stateDirectory: String, logger: Logger
    ) throws -> [AgentStatus] {
        let store = try Planning.openStore(stateDirectory)
        var desired: [String: DesiredAgent] = [:]
        if let location = repository ?? (try? GitRepository.open(".")).map({ _ in "." }) {
            let reader = try CommitReader(repository: location, path: path, store: store, logger: logger)
            let loaded = try reader.load(ref)
            if loaded.report.isValid {
                desired = loaded.desired.agents
            } else {
                logger.warning("the repository is invalid; desired revisions are not shown")
            }
        }
        var records: [String: AgentRecord] = [:]
        for record in try store?.agents() ?? [] { records[record.name] = record }
        let killed = try store?.killedAgents() ?? []
        return Set(desired.keys).union(records.keys).sorted().map { name in
            let record = records[name]
            // What the machine is doing now, not only what was last recorded: a VM that died shows.
            var machine = record?.machineState
            if let store, record != nil {
                let running = QEMUMachine.runningPID(store.directory + "/agents/" + name) != nil
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

    static func short(_ revision: String?) -> String {
        revision.map { String($0.prefix(12)) } ?? "-"
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return ISO8601DateFormatter().string(from: date)
    }

    public static func table(_ rows: [AgentStatus]) -> String {
        guard !rows.isEmpty else { return "No agents: the repository declares none and none has been applied.\n" }
        let header = ["AGENT", "DESIRED", "APPLIED", "SYNC", "LIFECYCLE", "MACHINE", "ACCEL", "LAST RUN"]
        let cells = rows.map { row in
            [
                row.name, short(row.desiredRevision), short(row.appliedRevision), row.sync, row.lifecycle,
                row.machineState ?? "-", row.accelerator ?? "-", time(row.lastRun),
            ]
        }
        let widths = header.indices.map { column in ([header] + cells).map { $0[column].count }.max() ?? 0 }
        func line(_ values: [String]) -> String {
            zip(values, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }
        return ([line(header)] + cells.map(line)).joined(separator: "\n") + "\n"
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
