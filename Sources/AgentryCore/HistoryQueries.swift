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

    /// The runs recorded on a branch: their records, newest first, and the records that could not
    /// be read (reported, never skipped in silence).
    public struct Listing: Sendable {
        public var records: [RunRecord]
        /// `runs/<agent>/<run>/record.yaml` and why it could not be read.
        public var unreadable: [(path: String, reason: String)]

        public init(records: [RunRecord], unreadable: [(path: String, reason: String)]) {
            self.records = records
            self.unreadable = unreadable
        }
    }

    /// Every run on the branch, optionally of one agent.
    public func runs(agent: String?, in location: HistoryLocation) throws -> Listing {
        try history(location, "read") {
            let folder = agent.map { "runs/" + $0 } ?? "runs"
            guard let paths = try ports.history.paths(under: folder, in: location) else {
                return Listing(records: [], unreadable: [])
            }
            var records: [RunRecord] = []
            var unreadable: [(String, String)] = []
            for path in paths where path.hasSuffix("/record.yaml") && path.split(separator: "/").count == 4 {
                guard let bytes = try ports.history.read(path, in: location) else { continue }
                switch RunRecord.parse(String(decoding: bytes, as: UTF8.self)) {
                case .success(let record): records.append(record)
                case .failure(let failure): unreadable.append((path, failure.reason))
                }
            }
            return Listing(
                records: records.sorted { ($0.startedAt, $0.runID) > ($1.startedAt, $1.runID) }, unreadable: unreadable)
        }
    }

    /// One run: its record, the record's text and its log (by id, or a unique prefix of one). A run
    /// whose record cannot be read is shown as it is, with why.
    public func run(_ id: String, in location: HistoryLocation) throws
        -> (record: RunRecord?, text: String, log: String, problem: String?)
    {
        let listing = try runs(agent: nil, in: location)
        let matches =
            listing.records.filter { $0.runID.hasPrefix(id) }.map { ($0.folder, $0 as RunRecord?, nil as String?) }
            + listing.unreadable.filter { $0.path.split(separator: "/")[2].hasPrefix(id) }.map {
                (String($0.path.dropLast("/record.yaml".count)), nil as RunRecord?, $0.reason as String?)
            }
        guard let (folder, record, problem) = matches.first else {
            throw CoreError(.notFound, "no run \(id) in \(location.branch) (see `agentry history`)")
        }
        guard matches.count == 1 else {
            let names = matches.prefix(5).map { String($0.0.split(separator: "/").last ?? "") }
            throw CoreError(.invalidArgument, "\(id) names \(matches.count) runs: \(names.joined(separator: ", "))")
        }
        return try history(location, "read") {
            let text = try ports.history.read(folder + "/record.yaml", in: location).map {
                String(decoding: $0, as: UTF8.self)
            }
            let log = try ports.history.read(folder + "/log.txt", in: location).map {
                String(decoding: $0, as: UTF8.self)
            }
            return (record, text ?? "", log ?? "", problem)
        }
    }

    /// The log of the agent's latest run.
    public func latestLog(agent: String, in location: HistoryLocation) throws -> String {
        guard let latest = try runs(agent: agent, in: location).records.first else {
            throw CoreError(.notFound, "no runs of \(agent) recorded in \(location.branch)")
        }
        return try run(latest.runID, in: location).log
    }

    /// The memory snapshot of the agent's latest run that stored one, when that run was of the same
    /// owner (a name reused by another owner gets nothing of the old agent's): paths relative to the
    /// memory folder, under their own names again.
    func latestMemory(agent: String, owner: String?, in location: HistoryLocation) throws
        -> (runID: String, files: [HistoryFile])?
    {
        let stored = try runs(agent: agent, in: location).records.filter { $0.memoryStored && $0.memoryFiles > 0 }
        guard let record = stored.first else { return nil }
        guard let owner, record.owner == owner else {
            throw CoreError(
                .agentBlocked,
                "the latest memory snapshot of \(agent) (run \(record.runID)) belongs to \(record.owner.isEmpty ? "an owner not recorded" : record.owner), not \(owner ?? "nobody"); it is not restored"
            )
        }
        return try history(location, "read") {
            let prefix = record.folder + "/memory/"
            let files = try ports.history.files(under: String(prefix.dropLast()), in: location) ?? []
            let names = Dictionary(record.memoryRenamed.map { ($0.storedAs, $0.path) }, uniquingKeysWith: { a, _ in a })
            return (
                record.runID,
                files.map { file in
                    let stored = String(file.path.dropFirst(prefix.count))
                    return HistoryFile(path: names[stored] ?? stored, bytes: file.bytes)
                }
            )
        }
    }

    // MARK: - Output

    /// The applies and operator events recorded in history (`applies/`, `events/`), newest first:
    /// those of `kinds` (`apply`, `kill`, `unkill`), and of `agent` when given (an apply counts for
    /// an agent when one of its actions names it). Unreadable files are reported, never skipped.
    public func audits(kinds: Set<String>, agent: String?, in location: HistoryLocation) throws
        -> (entries: [AuditEntry], unreadable: [(path: String, reason: String)])
    {
        try history(location, "read") {
            var entries: [AuditEntry] = []
            var unreadable: [(String, String)] = []
            for folder in ["applies", "events"] {
                for file in try ports.history.files(under: folder, in: location) ?? []
                where file.path.hasSuffix(".yaml") {
                    guard let entry = AuditEntry.parse(String(decoding: file.bytes, as: UTF8.self), path: file.path)
                    else {
                        unreadable.append((file.path, "not an agentry audit record"))
                        continue
                    }
                    guard kinds.contains(entry.kind) else { continue }
                    if let agent {
                        let names =
                            entry.fields["agent"] == agent
                            || (entry.lists["actions"] ?? []).contains {
                                $0.split(separator: " ").dropFirst().first.map {
                                    $0.hasPrefix(agent + ":") || $0 == agent
                                } ?? false
                            }
                        guard names else { continue }
                    }
                    entries.append(entry)
                }
            }
            return (entries.sorted { ($0.time, $0.path) > ($1.time, $1.path) }, unreadable)
        }
    }

    /// `time  kind  subject  by  what`, a line each.
    public static func auditTable(_ entries: [AuditEntry]) -> String {
        var table = TextTable(["TIME", "KIND", "SUBJECT", "BY", "WHAT"])
        for entry in entries {
            table.append([
                Timestamp.rfc3339(entry.time.timeIntervalSince1970), entry.kind, entry.subject, entry.actor, entry.what,
            ])
        }
        return table.rendered
    }

    public static func auditJSON(_ entry: AuditEntry) -> JSON {
        .object([
            ("kind", .string(entry.kind)),
            ("at", .string(Timestamp.rfc3339(entry.time.timeIntervalSince1970))),
            ("by", .string(entry.actor)),
            ("subject", .string(entry.subject)),
            ("what", .string(entry.what)),
            ("path", .string(entry.path)),
            ("actions", .array((entry.lists["actions"] ?? []).map(JSON.string))),
        ])
    }

    public static func table(_ runs: [RunRecord]) -> String {
        var table = TextTable(["RUN", "AGENT", "STARTED", "DURATION", "RESULT", "HARNESS", "MODEL", "BY"])
        for record in runs {
            table.append([
                record.runID, record.agent, Timestamp.rfc3339(record.startedAt.timeIntervalSince1970),
                DurationText.format(milliseconds: UInt64(max(0, record.durationMilliseconds))),
                record.summaryWord, record.harnessName, record.modelName,
                record.triggeredBy,
            ])
        }
        return table.rendered
    }

    public static func json(
        _ runs: [RunRecord], unreadable: [(path: String, reason: String)] = [], events: [AuditEntry]? = nil
    ) -> String {
        var pairs: [(String, JSON)] = [
            ("formatVersion", .int(2)),
            (
                "unreadable",
                .array(unreadable.map { .object([("path", .string($0.path)), ("reason", .string($0.reason))]) })
            ),
            ("runs", .array(runs.map(runJSON))),
        ]
        if let events { pairs.append(("events", .array(events.map(auditJSON)))) }
        return JSON.object(pairs).rendered() + "\n"
    }

    /// One run as `history -o json` and `show -o json` give it.
    public static func runJSON(_ record: RunRecord) -> JSON {
        .object([
            ("agent", .string(record.agent)),
            ("artifacts", .int(record.artifacts.count)),
            ("by", .string(record.triggeredBy)),
            ("desiredCommit", .string(record.desiredCommit)),
            ("durationMs", .int(record.durationMilliseconds)),
            ("exitStatus", record.exitStatus.map(JSON.int) ?? .null),
            ("outcome", .string(record.outcome.rawValue)),
            ("harness", .string(record.harnessName)),
            ("model", .string(record.modelName)),
            ("runId", .string(record.runID)),
            ("startedAt", .string(Timestamp.rfc3339(record.startedAt.timeIntervalSince1970))),
            ("timedOut", .bool(record.timedOut)),
            ("trigger", .string(record.trigger)),
        ])
    }

    /// `show -o json` and `logs -o json`: the run, its record as stored (YAML) and its log.
    public static func runDocument(
        kind: String, record: RunRecord?, text: String, log: String, problem: String?
    ) -> String {
        JSON.object([
            ("formatVersion", .int(2)),
            ("kind", .string(kind)),
            ("run", record.map(runJSON) ?? .null),
            ("problem", problem.map(JSON.string) ?? .null),
            ("record", .string(text)),
            ("log", .string(log)),
        ]).rendered() + "\n"
    }
}

extension HistoryQueries {
    /// Follows the output of the agent's run in progress (`logs -f`): hands `emit` what the run's
    /// terminal saw as it comes, until the run ends (or its agentry is gone). False, with nothing
    /// emitted, when no run of the agent is in progress.
    public func follow(agent: String, interruption: Interruption?, emit: @escaping @Sendable ([UInt8]) -> Void)
        async throws -> Bool
    {
        let state = ports.state
        let machines = ports.machines
        // A run holds its agent's run lock from start to record (released if its agentry dies).
        func inProgress() -> Bool { machines.runLockHolder(agent)?.kind == .run }
        guard inProgress() else { return false }
        var following: String?
        var offset = 0
        while true {
            let running = inProgress()
            // What the followed run printed since the last look (its last lines too, when the next
            // run has started meanwhile).
            if following != nil,
                let bytes = ((try? state.liveLog(agent: agent, run: following, from: offset)) ?? nil)?.bytes,
                !bytes.isEmpty
            {
                emit(bytes)
                offset += bytes.count
            }
            // A new run started it afresh: followed from its beginning.
            if let latest = (try? state.liveLog(agent: agent, run: nil, from: 0)) ?? nil, latest.run != following {
                following = latest.run
                offset = latest.bytes.count
                if !latest.bytes.isEmpty { emit(latest.bytes) }
            }
            if !running || interruption?.isInterrupted == true { return true }
            await ports.clock.sleep(for: .milliseconds(200))
        }
    }
}
