import AgentryGit
import AgentryModel
import AgentryYAML
import Foundation

/// One run as recorded in history: `runs/<agent>/<run-id>/record.yaml` on the history branch.
/// Published as `schemas/run-record.schema.json`.
public struct RunRecord: Sendable {
    public struct Artifact: Sendable {
        public var path: String
        public var size: Int
        public var sha256: String
        /// Whether the bytes are in history (small files) or only their digest.
        public var stored: Bool
    }

    public static let formatVersion = 1

    public var runID: String
    public var agent: String
    public var desiredCommit: String
    public var agentRevision: String
    public var harnessName: String
    public var harnessType: String
    public var harnessVersion: String
    public var modelName: String
    public var modelProvider: String
    public var model: String
    public var trigger: String
    public var triggeredBy: String
    public var host: String
    public var startedAt: Date
    public var endedAt: Date
    public var exitStatus: Int
    public var timedOut: Bool
    public var artifacts: [Artifact]
    public var logBytes: Int
    public var logSHA256: String
    public var logTruncated: Bool
    public var memoryFiles: Int

    public var durationMilliseconds: Int { Int((endedAt.timeIntervalSince(startedAt) * 1000).rounded()) }

    public var folder: String { "runs/\(agent)/\(runID)" }

    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    static func parseTime(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }

    static func quote(_ text: String) -> String { JSONText.quote(text) }

    /// The record as YAML (strings double-quoted, so any value reads back exactly).
    public var yaml: String {
        var lines = [
            "# agentry run record: schemas/run-record.schema.json",
            "formatVersion: \(Self.formatVersion)",
            "runId: \(Self.quote(runID))",
            "agent: \(Self.quote(agent))",
            "desiredCommit: \(Self.quote(desiredCommit))",
            "agentRevision: \(Self.quote(agentRevision))",
            "harness:",
            "  name: \(Self.quote(harnessName))",
            "  type: \(Self.quote(harnessType))",
            "  version: \(Self.quote(harnessVersion))",
            "model:",
            "  name: \(Self.quote(modelName))",
            "  provider: \(Self.quote(modelProvider))",
            "  model: \(Self.quote(model))",
            "trigger:",
            "  kind: \(Self.quote(trigger))",
            "  by: \(Self.quote(triggeredBy))",
            "  host: \(Self.quote(host))",
            "startedAt: \(Self.quote(Self.time(startedAt)))",
            "endedAt: \(Self.quote(Self.time(endedAt)))",
            "durationMs: \(durationMilliseconds)",
            "exitStatus: \(exitStatus)",
            "timedOut: \(timedOut)",
        ]
        if artifacts.isEmpty {
            lines.append("artifacts: []")
        } else {
            lines.append("artifacts:")
            for artifact in artifacts {
                lines.append("  - path: \(Self.quote(artifact.path))")
                lines.append("    size: \(artifact.size)")
                lines.append("    sha256: \(Self.quote(artifact.sha256))")
                lines.append("    stored: \(artifact.stored)")
            }
        }
        lines += [
            "log:",
            "  path: \"log.txt\"",
            "  bytes: \(logBytes)",
            "  sha256: \(Self.quote(logSHA256))",
            "  truncated: \(logTruncated)",
            "memory:",
            "  files: \(memoryFiles)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads a record back; nil when the text is not one.
    public static func parse(_ text: String) -> RunRecord? {
        guard case .success(let documents) = YAMLComposer.compose(text), let root = documents.first?.root else { return nil }
        func string(_ node: YAMLNode?) -> String? {
            guard let node else { return nil }
            switch node.resolved {
            case .string(let value)?: return value
            case .int(let value)?: return String(value)
            case .bool(let value)?: return String(value)
            default: return node.scalarText
            }
        }
        func int(_ node: YAMLNode?) -> Int? {
            if case .int(let value)? = node?.resolved { return value }
            return nil
        }
        func bool(_ node: YAMLNode?) -> Bool {
            if case .bool(let value)? = node?.resolved { return value }
            return false
        }
        guard int(root["formatVersion"]) == formatVersion, let runID = string(root["runId"]),
            let agent = string(root["agent"]), let started = string(root["startedAt"]).flatMap(parseTime),
            let ended = string(root["endedAt"]).flatMap(parseTime)
        else { return nil }
        let artifacts = (root["artifacts"]?.sequence ?? []).compactMap { node -> Artifact? in
            guard let path = string(node["path"]) else { return nil }
            return Artifact(path: path, size: int(node["size"]) ?? 0, sha256: string(node["sha256"]) ?? "", stored: bool(node["stored"]))
        }
        return RunRecord(
            runID: runID, agent: agent, desiredCommit: string(root["desiredCommit"]) ?? "",
            agentRevision: string(root["agentRevision"]) ?? "", harnessName: string(root["harness"]?["name"]) ?? "",
            harnessType: string(root["harness"]?["type"]) ?? "", harnessVersion: string(root["harness"]?["version"]) ?? "",
            modelName: string(root["model"]?["name"]) ?? "", modelProvider: string(root["model"]?["provider"]) ?? "",
            model: string(root["model"]?["model"]) ?? "", trigger: string(root["trigger"]?["kind"]) ?? "",
            triggeredBy: string(root["trigger"]?["by"]) ?? "", host: string(root["trigger"]?["host"]) ?? "",
            startedAt: started, endedAt: ended, exitStatus: int(root["exitStatus"]) ?? -1, timedOut: bool(root["timedOut"]),
            artifacts: artifacts, logBytes: int(root["log"]?["bytes"]) ?? 0, logSHA256: string(root["log"]?["sha256"]) ?? "",
            logTruncated: bool(root["log"]?["truncated"]), memoryFiles: int(root["memory"]?["files"]) ?? 0)
    }

    /// A commit message that reads well in `git log --oneline` and in full.
    public var commitMessage: String {
        let seconds = String(format: "%.1f", Double(durationMilliseconds) / 1000)
        let outcome = timedOut ? "timed out after \(seconds)s" : "exit \(exitStatus) in \(seconds)s"
        return """
            run \(agent) \(runID): \(outcome)

            agent:    \(agent) (revision \(agentRevision.prefix(12)))
            desired:  \(desiredCommit.prefix(12))
            harness:  \(harnessName)\(harnessVersion.isEmpty ? "" : " " + harnessVersion) (\(harnessType))
            model:    \(modelName) (\(modelProvider)/\(model))
            trigger:  \(trigger) by \(triggeredBy) on \(host)
            artifacts: \(artifacts.count), log: \(logBytes) bytes\(logTruncated ? " (truncated)" : ""), memory files: \(memoryFiles)

            """
    }
}

/// The history branch of an agent repository: run records, apply and operator-event audit records.
/// History is written here and never read as desired state.
public enum History {
    public static var defaultBranch: String {
        ProcessInfo.processInfo.environment["AGENTRY_HISTORY_BRANCH"].flatMap { $0.isEmpty ? nil : $0 } ?? "agentry/history"
    }

    /// The repository the last apply read, so operator commands without `--repo` (kill, unkill)
    /// know where to record.
    public static func rememberRepository(_ repository: String, stateDirectory: String) {
        let absolute = repository.hasPrefix("/") ? repository : FileManager.default.currentDirectoryPath + "/" + repository
        try? (URL(fileURLWithPath: absolute).standardized.path + "\n").write(
            toFile: stateDirectory + "/history-repository", atomically: true, encoding: .utf8)
    }

    public static func rememberedRepository(stateDirectory: String) -> String? {
        (try? String(contentsOfFile: stateDirectory + "/history-repository", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        return String(cString: buffer)
    }

    /// Git refuses `<` and `>` in names (and newlines): they are dropped rather than lose a record.
    static func signature(_ actor: String) -> Signature {
        let name = String(actor.unicodeScalars.filter { !"<>\n\r".unicodeScalars.contains($0) }.map(Character.init))
            .trimmingCharacters(in: .whitespaces)
        return Signature(name: name.isEmpty ? "agentry" : name, email: "agentry@" + hostName())
    }

    /// Commits `files` with `message`, then pushes when the repository has an `origin`. A push that
    /// fails leaves the records committed locally (the next push carries them) and is reported.
    @discardableResult
    public static func record(
        _ files: [RecordFile], message: String, actor: String, repository: String, branch: String = defaultBranch,
        at date: Date = Date()
    ) throws -> (commit: String, pushWarning: String?) {
        do {
            let history = HistoryBranch(repository: try GitRepository.open(repository), branch: branch)
            let commit = try history.append(files, message: message, author: signature(actor), at: date)
            var warning: String?
            if history.hasOrigin {
                do {
                    try history.push()
                } catch let error as GitError {
                    warning = "history was committed locally but not pushed to origin: \(error.message)"
                }
            }
            return ("\(commit)", warning)
        } catch let error as GitError {
            throw LoadError("cannot record history in \(repository): \(error.message)")
        }
    }

    /// Every run record on the branch, newest first, optionally of one agent.
    public static func runs(repository: String, agent: String?, branch: String = defaultBranch) throws -> [RunRecord] {
        do {
            let history = HistoryBranch(repository: try GitRepository.open(repository), branch: branch)
            let folder = agent.map { "runs/" + $0 } ?? "runs"
            guard let entries = try history.files(under: folder) else { return [] }
            var records: [RunRecord] = []
            for entry in entries where entry.path.hasSuffix("/record.yaml") {
                let parts = entry.path.split(separator: "/")
                guard parts.count == 4 else { continue }
                let bytes = try history.repository.blob(entry.id)
                if let record = RunRecord.parse(String(decoding: bytes, as: UTF8.self)) { records.append(record) }
            }
            return records.sorted { ($0.startedAt, $0.runID) > ($1.startedAt, $1.runID) }
        } catch let error as GitError {
            throw LoadError("cannot read history in \(repository): \(error.message)")
        }
    }

    /// The record, its log and the raw record text of one run (by id, or a unique prefix of one).
    public static func run(_ id: String, repository: String, branch: String = defaultBranch) throws
        -> (record: RunRecord, text: String, log: String)
    {
        let matches = try runs(repository: repository, agent: nil, branch: branch).filter { $0.runID.hasPrefix(id) }
        guard let record = matches.first else { throw LoadError("no run \(id) in \(branch) (see `agentry history`)") }
        guard matches.count == 1 else {
            throw LoadError("\(id) names \(matches.count) runs: \(matches.prefix(5).map(\.runID).joined(separator: ", "))")
        }
        do {
            let history = HistoryBranch(repository: try GitRepository.open(repository), branch: branch)
            let text = try history.read(record.folder + "/record.yaml").map { String(decoding: $0, as: UTF8.self) } ?? ""
            let log = try history.read(record.folder + "/log.txt").map { String(decoding: $0, as: UTF8.self) } ?? ""
            return (record, text, log)
        } catch let error as GitError {
            throw LoadError("cannot read history in \(repository): \(error.message)")
        }
    }

    /// The memory snapshot of the agent's latest run that kept one: paths relative to the memory folder.
    public static func latestMemory(agent: String, repository: String, branch: String = defaultBranch) throws
        -> (runID: String, files: [BundleFile])?
    {
        guard let record = try runs(repository: repository, agent: agent, branch: branch).first(where: { $0.memoryFiles > 0 })
        else { return nil }
        do {
            let history = HistoryBranch(repository: try GitRepository.open(repository), branch: branch)
            let prefix = record.folder + "/memory"
            let entries = try history.files(under: prefix) ?? []
            var files: [BundleFile] = []
            for entry in entries {
                guard case .file = entry.kind else { continue }
                files.append(BundleFile(path: String(entry.path.dropFirst(prefix.count + 1)), bytes: try history.repository.blob(entry.id)))
            }
            return (record.runID, files)
        } catch let error as GitError {
            throw LoadError("cannot read history in \(repository): \(error.message)")
        }
    }

    /// An audit record for an apply that changed something, or an operator event (kill, unkill).
    public static func audit(
        kind: String, fields: [(String, String)], lists: [(String, [String])] = [], actor: String, repository: String,
        subject: String, branch: String = defaultBranch, at date: Date = Date()
    ) throws -> String? {
        let stamp = RunID.stamp(date)
        var lines = ["# agentry \(kind) record", "kind: \(kind)", "at: \(RunRecord.quote(RunRecord.time(date)))", "by: \(RunRecord.quote(actor))", "host: \(RunRecord.quote(hostName()))"]
        for (key, value) in fields { lines.append("\(key): \(RunRecord.quote(value))") }
        for (key, values) in lists {
            lines.append(values.isEmpty ? "\(key): []" : "\(key):")
            for value in values { lines.append("  - \(RunRecord.quote(value))") }
        }
        let folder = kind == "apply" ? "applies" : "events"
        // Unique like run ids: two kills in one second, or two hosts applying one commit at once,
        // must not overwrite each other's record.
        let path = "\(folder)/\(stamp)-\(subject)-\(String(format: "%08x", UInt32.random(in: 0...UInt32.max))).yaml"
        let result = try record(
            [RecordFile(path: path, bytes: Array((lines.joined(separator: "\n") + "\n").utf8))],
            message: "\(kind) \(subject) by \(actor)\n\n" + lines.dropFirst().joined(separator: "\n") + "\n", actor: actor,
            repository: repository, branch: branch, at: date)
        return result.pushWarning
    }
}

/// Run ids sort by time and are unique across hosts: `20261128-024512-3f9a1c2b`.
public enum RunID {
    public static func stamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        return formatter.string(from: date)
    }

    public static func make(_ date: Date = Date()) -> String {
        stamp(date) + "-" + String(format: "%08x", UInt32.random(in: 0...UInt32.max))
    }
}
