import AgentryBasics
import AgentryModel
import AgentryPlan
import Foundation

/// `agentry status`: per agent, whether what was applied is what the repository wants (sync), and
/// what its machine is doing now, measured (health).
public struct StatusReport: Sendable {
    /// Whether the applied revision is the desired one.
    public enum Sync: String, Sendable {
        case inSync, outOfSync
        /// In the repository, never applied.
        case notApplied
        /// Applied, no longer in the repository.
        case notInRepository
        /// No repository to compare with.
        case unknown

        var words: String {
            switch self {
            case .inSync: return "in sync"
            case .outOfSync: return "out of sync"
            case .notApplied: return "not applied"
            case .notInRepository: return "not in git"
            case .unknown: return "-"
            }
        }
    }

    public struct Row: Sendable {
        public var name: String
        public var desiredRevision: String?
        public var appliedRevision: String?
        public var sync: Sync
        public var lifecycle: String
        /// As the state database last recorded it.
        public var machineState: String?
        /// Measured now; nil for an agent never applied.
        public var health: MachineStatus?
        public var accelerator: String?
        public var lastRun: Date?
    }

    /// The repository and commit the rows compared against (nil: none was read).
    public var repository: String?
    public var ref: String?
    public var commit: String?
    public var rows: [Row]

    /// Rows for every agent in the state and, when a repository is given (or the current folder
    /// is one), every agent it declares; only `agent`'s when one is named.
    public static func collect(repository: String?, ref: String, path: String, agent: String?, ports: Ports)
        async throws -> StatusReport
    {
        try await BlockingWork.run {
            // A state that is not there is an error: status never shows an empty state as true.
            try reporting(.stateUnavailable) { try ports.state.checkReadable() }
            var desired: [String: DesiredAgent] = [:]
            var commit: String?
            let location = repository ?? (ports.source.isRepository(".") ? "." : nil)
            if let location {
                let reader = try ports.reader(location, path: path)
                let loaded = try reporting(.repositoryUnavailable) { try reader.load(ref) }
                commit = loaded.commit
                if loaded.report.isValid {
                    desired = loaded.desired.agents
                } else {
                    ports.logger.warning("the repository is invalid; desired revisions are not shown")
                }
            }
            var records: [String: AgentRecord] = [:]
            var applied: [String: AppliedAgent] = [:]
            var kills: [String: KillSwitch] = [:]
            do {
                try reporting(.stateUnavailable) {
                    for record in try ports.state.agents() { records[record.name] = record }
                    for row in try ports.state.appliedAgents(fields: true) { applied[row.name] = row }
                    for name in try ports.state.killedAgents() { kills[name] = try ports.state.killSwitch(name) }
                }
            }
            var names = Set(desired.keys).union(records.keys)
            if let agent {
                guard names.contains(agent) else {
                    throw CoreError(.notFound, "no agent \(agent) in the repository or the state")
                }
                names = [agent]
            }
            let rows = names.sorted().map { name -> Row in
                let record = records[name]
                let wanted = desired[name]
                let appliedRevision = record.flatMap { $0.appliedRevision.isEmpty ? nil : $0.appliedRevision }
                let sync: Sync
                switch (wanted, appliedRevision) {
                case (let wanted?, let revision?): sync = wanted.revision == revision ? .inSync : .outOfSync
                case (_?, nil): sync = .notApplied
                case (nil, _?): sync = location == nil ? .unknown : .notInRepository
                case (nil, nil): sync = .unknown
                }
                let health = applied[name].map {
                    HealthCheck.status(record: $0, killed: kills[name], observation: ports.machines.observe(name))
                }
                return Row(
                    name: name, desiredRevision: wanted?.revision, appliedRevision: appliedRevision, sync: sync,
                    lifecycle: record?.lifecycle ?? wanted?.lifecycle.rawValue ?? "-",
                    machineState: record?.machineState,
                    health: health, accelerator: record?.accelerator, lastRun: record?.lastRunAt)
            }
            return StatusReport(
                repository: location.map { ports.host.absolute($0) }, ref: location == nil ? nil : ref, commit: commit,
                rows: rows)
        }
    }

    static func short(_ revision: String?) -> String {
        revision.map { String($0.prefix(12)) } ?? "-"
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return Timestamp.rfc3339(date.timeIntervalSince1970)
    }

    /// What the rows were compared against, a line.
    var heading: String {
        guard let repository else { return "Compared with no repository (give --repo to see desired revisions)." }
        return "Compared with \(repository) at \(ref ?? "HEAD") (\(commit.map { String($0.prefix(12)) } ?? "-"))."
    }

    public var table: String {
        guard !rows.isEmpty else { return "No agents: the repository declares none and none has been applied.\n" }
        var table = TextTable([
            "AGENT", "DESIRED", "APPLIED", "SYNC", "LIFECYCLE", "HEALTH", "ACCEL", "LAST RUN", "DETAIL",
        ])
        for row in rows {
            table.append([
                row.name, Self.short(row.desiredRevision), Self.short(row.appliedRevision), row.sync.words,
                row.lifecycle,
                row.health?.state.rawValue ?? "-", row.accelerator ?? "-", Self.time(row.lastRun),
                row.health?.detail.map { String($0.split(separator: "\n").first ?? "") } ?? "",
            ])
        }
        return table.rendered + heading + "\n"
    }

    /// Bumped from 1: `sync` values are enums without spaces, `health` is new.
    public static let formatVersion = 2

    public var json: String {
        func optional(_ value: String?) -> JSON { value.map(JSON.string) ?? .null }
        return JSON.object([
            ("formatVersion", .int(Self.formatVersion)),
            ("repository", optional(repository)),
            ("ref", optional(ref)),
            ("commit", optional(commit)),
            (
                "agents",
                .array(
                    rows.map { row in
                        .object([
                            ("name", .string(row.name)),
                            ("desiredRevision", optional(row.desiredRevision)),
                            ("appliedRevision", optional(row.appliedRevision)),
                            ("sync", .string(row.sync.rawValue)),
                            ("lifecycle", .string(row.lifecycle)),
                            ("health", optional(row.health?.state.rawValue)),
                            ("healthDetail", optional(row.health?.detail)),
                            ("machineState", optional(row.machineState)),
                            ("accelerator", optional(row.accelerator)),
                            ("lastRun", row.lastRun.map { .string(Self.time($0)) } ?? .null),
                        ])
                    })
            ),
        ]).rendered() + "\n"
    }
}
