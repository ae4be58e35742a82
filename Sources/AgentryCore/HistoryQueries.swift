import AgentryBasics
import AgentryModel
import AgentryRender
import Foundation

/// Reading and writing the history branch in the record formats of `AgentryRender`: runs, their
/// logs and memory snapshots, audit records.
public struct HistoryQueries: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    /// Where history is, when nobody says: the repository the last apply read, else `.`.
    public func location(repository: String?, branch: String?) -> HistoryLocation {
        HistoryLocation(
            repository: repository ?? ports.state.rememberedRepository() ?? ".",
            branch: branch ?? ports.host.historyBranch)
    }

    func history<T>(_ location: HistoryLocation, _ doing: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw CoreError(
                .historyUnavailable, "cannot \(doing) history in \(location.repository): \(describe(error))",
                cause: error as? any AgentryFailure)
        }
    }

    /// Commits an audit record.
    func commit(_ record: AuditRecord, in location: HistoryLocation) throws -> HistoryCommit {
        try history(location, "record") {
            try ports.history.record(
                [HistoryFile(path: record.path, bytes: Array(record.text.utf8))], message: record.commitMessage,
                actor: record.actor, at: record.time, in: location)
        }
    }

    /// Commits a run's files.
    func commit(_ files: [HistoryFile], message: String, actor: String, at date: Date, in location: HistoryLocation)
        throws -> HistoryCommit
    {
        try history(location, "record") {
            try ports.history.record(files, message: message, actor: actor, at: date, in: location)
        }
    }

    /// Every run record on the branch, newest first, optionally of one agent.
    public func runs(agent: String?, in location: HistoryLocation) throws -> [RunRecord] {
        try history(location, "read") {
            let folder = agent.map { "runs/" + $0 } ?? "runs"
            guard let paths = try ports.history.paths(under: folder, in: location) else { return [] }
            var records: [RunRecord] = []
            for path in paths where path.hasSuffix("/record.yaml") && path.split(separator: "/").count == 4 {
                guard let bytes = try ports.history.read(path, in: location) else { continue }
                if let record = RunRecord.parse(String(decoding: bytes, as: UTF8.self)) { records.append(record) }
            }
            return records.sorted { ($0.startedAt, $0.runID) > ($1.startedAt, $1.runID) }
        }
    }

    /// One run: its record, the record's text and its log (by id, or a unique prefix of one).
    public func run(_ id: String, in location: HistoryLocation) throws -> (record: RunRecord, text: String, log: String)
    {
        let matches = try runs(agent: nil, in: location).filter { $0.runID.hasPrefix(id) }
        guard let record = matches.first else {
            throw CoreError(.notFound, "no run \(id) in \(location.branch) (see `agentry history`)")
        }
        guard matches.count == 1 else {
            throw CoreError(
                .invalidArgument,
                "\(id) names \(matches.count) runs: \(matches.prefix(5).map(\.runID).joined(separator: ", "))")
        }
        return try history(location, "read") {
            let text = try ports.history.read(record.folder + "/record.yaml", in: location).map {
                String(decoding: $0, as: UTF8.self)
            }
            let log = try ports.history.read(record.folder + "/log.txt", in: location).map {
                String(decoding: $0, as: UTF8.self)
            }
            return (record, text ?? "", log ?? "")
        }
    }

    /// The log of the agent's latest run.
    public func latestLog(agent: String, in location: HistoryLocation) throws -> String {
        guard let latest = try runs(agent: agent, in: location).first else {
            throw CoreError(.notFound, "no runs of \(agent) recorded in \(location.branch)")
        }
        return try run(latest.runID, in: location).log
    }

    /// The memory snapshot of the agent's latest run that kept one: paths relative to the memory folder.
    func latestMemory(agent: String, in location: HistoryLocation) throws -> (runID: String, files: [HistoryFile])? {
        guard let record = try runs(agent: agent, in: location).first(where: { $0.memoryFiles > 0 }) else { return nil }
        return try history(location, "read") {
            let prefix = record.folder + "/memory"
            let files = try ports.history.files(under: prefix, in: location) ?? []
            return (
                record.runID,
                files.map { HistoryFile(path: String($0.path.dropFirst(prefix.count + 1)), bytes: $0.bytes) }
            )
        }
    }

    // MARK: - Output

    public static func table(_ runs: [RunRecord]) -> String {
        var table = TextTable(["RUN", "AGENT", "STARTED", "DURATION", "RESULT", "HARNESS", "MODEL", "BY"])
        for record in runs {
            table.append([
                record.runID, record.agent, Timestamp.rfc3339(record.startedAt.timeIntervalSince1970),
                DurationText.format(milliseconds: UInt64(max(0, record.durationMilliseconds))),
                record.timedOut ? "timed out" : "exit \(record.exitStatus)", record.harnessName, record.modelName,
                record.triggeredBy,
            ])
        }
        return table.rendered
    }

    public static func json(_ runs: [RunRecord]) -> String {
        JSON.object([
            ("formatVersion", .int(1)),
            (
                "runs",
                .array(
                    runs.map { record in
                        .object([
                            ("agent", .string(record.agent)),
                            ("artifacts", .int(record.artifacts.count)),
                            ("by", .string(record.triggeredBy)),
                            ("desiredCommit", .string(record.desiredCommit)),
                            ("durationMs", .int(record.durationMilliseconds)),
                            ("exitStatus", .int(record.exitStatus)),
                            ("harness", .string(record.harnessName)),
                            ("model", .string(record.modelName)),
                            ("runId", .string(record.runID)),
                            ("startedAt", .string(Timestamp.rfc3339(record.startedAt.timeIntervalSince1970))),
                            ("timedOut", .bool(record.timedOut)),
                            ("trigger", .string(record.trigger)),
                        ])
                    })
            ),
        ]).rendered() + "\n"
    }
}
