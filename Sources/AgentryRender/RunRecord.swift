import AgentryBasics
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

        public init(path: String, size: Int, sha256: String, stored: Bool) {
            self.path = path
            self.size = size
            self.sha256 = sha256
            self.stored = stored
        }
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

    public init(
        runID: String, agent: String, desiredCommit: String, agentRevision: String, harnessName: String,
        harnessType: String, harnessVersion: String, modelName: String, modelProvider: String, model: String,
        trigger: String, triggeredBy: String, host: String, startedAt: Date, endedAt: Date, exitStatus: Int,
        timedOut: Bool, artifacts: [Artifact], logBytes: Int, logSHA256: String, logTruncated: Bool, memoryFiles: Int
    ) {
        self.runID = runID
        self.agent = agent
        self.desiredCommit = desiredCommit
        self.agentRevision = agentRevision
        self.harnessName = harnessName
        self.harnessType = harnessType
        self.harnessVersion = harnessVersion
        self.modelName = modelName
        self.modelProvider = modelProvider
        self.model = model
        self.trigger = trigger
        self.triggeredBy = triggeredBy
        self.host = host
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.exitStatus = exitStatus
        self.timedOut = timedOut
        self.artifacts = artifacts
        self.logBytes = logBytes
        self.logSHA256 = logSHA256
        self.logTruncated = logTruncated
        self.memoryFiles = memoryFiles
    }

    public var durationMilliseconds: Int { Int((endedAt.timeIntervalSince(startedAt) * 1000).rounded()) }

    public var folder: String { "runs/\(agent)/\(runID)" }

    /// Record times: RFC 3339 in UTC with milliseconds.
    public static func time(_ date: Date) -> String {
        Timestamp.rfc3339(date.timeIntervalSince1970, fractional: true)
    }

    public static func parseTime(_ text: String) -> Date? {
        Timestamp.parse(text).map { Date(timeIntervalSince1970: $0) }
    }

    public static func quote(_ text: String) -> String { JSONText.quote(text) }

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
        guard case .success(let documents) = YAMLComposer.compose(text), let root = documents.first?.root else {
            return nil
        }
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
            return Artifact(
                path: path, size: int(node["size"]) ?? 0, sha256: string(node["sha256"]) ?? "",
                stored: bool(node["stored"]))
        }
        return RunRecord(
            runID: runID, agent: agent, desiredCommit: string(root["desiredCommit"]) ?? "",
            agentRevision: string(root["agentRevision"]) ?? "", harnessName: string(root["harness"]?["name"]) ?? "",
            harnessType: string(root["harness"]?["type"]) ?? "",
            harnessVersion: string(root["harness"]?["version"]) ?? "",
            modelName: string(root["model"]?["name"]) ?? "", modelProvider: string(root["model"]?["provider"]) ?? "",
            model: string(root["model"]?["model"]) ?? "", trigger: string(root["trigger"]?["kind"]) ?? "",
            triggeredBy: string(root["trigger"]?["by"]) ?? "", host: string(root["trigger"]?["host"]) ?? "",
            startedAt: started, endedAt: ended, exitStatus: int(root["exitStatus"]) ?? -1,
            timedOut: bool(root["timedOut"]),
            artifacts: artifacts, logBytes: int(root["log"]?["bytes"]) ?? 0,
            logSHA256: string(root["log"]?["sha256"]) ?? "",
            logTruncated: bool(root["log"]?["truncated"]), memoryFiles: int(root["memory"]?["files"]) ?? 0)
    }

    /// A commit message that reads well in `git log --oneline` and in full.
    public var commitMessage: String {
        let seconds = DurationText.seconds(milliseconds: durationMilliseconds)
        let outcome = timedOut ? "timed out after \(seconds)" : "exit \(exitStatus) in \(seconds)"
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

/// Run ids sort by time and are unique across hosts: `20261128-024512-3f9a1c2b`.
public enum RunID {
    public static func stamp(_ date: Date) -> String {
        Timestamp.compact(date.timeIntervalSince1970)
    }

    public static func make(_ date: Date) -> String {
        stamp(date) + "-" + Hex.random(bytes: 4)
    }
}
