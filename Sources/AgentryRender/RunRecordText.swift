import AgentryBasics
import AgentryModel
import AgentryYAML
import Foundation

extension RunRecord {
    /// The record as YAML (strings double-quoted and escaped, so any value reads back exactly).
    public var yaml: String {
        let q = Self.quote
        var lines = [
            "# agentry run record: schemas/run-record.schema.json",
            "formatVersion: \(Self.formatVersion)",
            "runId: \(q(runID))",
            "agent: \(q(agent))",
            "owner: \(q(owner))",
            "desiredCommit: \(q(desiredCommit))",
            "agentRevision: \(q(agentRevision))",
            "harness:",
            "  name: \(q(harnessName))",
            "  type: \(q(harnessType))",
            "  version: \(q(harnessVersion))",
            "model:",
            "  name: \(q(modelName))",
            "  provider: \(q(modelProvider))",
            "  model: \(q(model))",
            "trigger:",
            "  kind: \(q(trigger))",
            "  by: \(q(triggeredBy))",
            "  host: \(q(host))",
        ]
        if let prompt {
            lines.append("prompt:")
            if let text = prompt.text { lines.append("  text: \(q(text))") }
            lines += ["  sha256: \(q(prompt.sha256))", "  bytes: \(prompt.bytes)", "  default: \(prompt.isDefault)"]
            if prompt.continued { lines.append("  continued: true") }
        }
        lines.append("outcome: \(q(outcome.rawValue))")
        if let phase { lines.append("phase: \(q(phase.rawValue))") }
        if let reason { lines.append("reason: \(q(reason))") }
        lines += [
            "startedAt: \(q(Self.time(startedAt)))",
            "endedAt: \(q(Self.time(endedAt)))",
            "durationMs: \(durationMilliseconds)",
            "exitStatus: \(exitStatus.map(String.init) ?? "null")",
            "timedOut: \(timedOut)",
        ]
        if artifacts.isEmpty {
            lines.append("artifacts: []")
        } else {
            lines.append("artifacts:")
            for artifact in artifacts {
                lines.append("  - path: \(q(artifact.path))")
                lines.append("    size: \(artifact.size)")
                if !artifact.sha256.isEmpty { lines.append("    sha256: \(q(artifact.sha256))") }
                lines.append("    stored: \(artifact.stored)")
                if let storedAs = artifact.storedAs { lines.append("    storedAs: \(q(storedAs))") }
            }
        }
        if artifactsOmitted > 0 { lines.append("artifactsOmitted: \(artifactsOmitted)") }
        if let artifactsNote { lines.append("artifactsNote: \(q(artifactsNote))") }
        lines += [
            "log:",
            "  path: \"log.txt\"",
            "  bytes: \(logBytes)",
            "  sha256: \(q(logSHA256))",
            "  truncated: \(logTruncated)",
            "memory:",
            "  files: \(memoryFiles)",
            "  stored: \(memoryStored)",
        ]
        if !memoryRenamed.isEmpty {
            lines.append("  renamed:")
            for file in memoryRenamed {
                lines.append("    - path: \(q(file.path))")
                lines.append("      storedAs: \(q(file.storedAs))")
            }
        }
        if !memoryExcluded.isEmpty {
            lines.append("  excluded:")
            for name in memoryExcluded { lines.append("    - \(q(name))") }
        }
        if let memoryNote { lines.append("  note: \(q(memoryNote))") }
        if let usage { lines += Self.usageLines(usage) }
        if let transcript {
            lines += [
                "transcript:", "  events: \"\(TranscriptSummary.eventsFile)\"", "  count: \(transcript.events)",
                "  omitted: \(transcript.omitted)",
            ]
            if transcript.result { lines.append("  result: \"\(TranscriptSummary.resultFile)\"") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `usage` and `modelCalls`: what the model calls used, and each call (the first
    /// `ModelUsage.keptCalls`; `modelCallsOmitted` counts the rest).
    static func usageLines(_ usage: ModelUsage) -> [String] {
        let q = Self.quote
        var lines = [
            "usage:",
            "  calls: \(usage.totalCalls)",
            "  inputTokens: \(usage.inputTokens)",
            "  outputTokens: \(usage.outputTokens)",
            "  budgetExceeded: \(usage.budgetExceeded)",
        ]
        if usage.byModel.isEmpty {
            lines.append("  byModel: {}")
        } else {
            lines.append("  byModel:")
            for (name, entry) in usage.byModel.sorted(by: { $0.key < $1.key }) {
                lines.append("    \(q(name)):")
                lines.append("      inputTokens: \(entry.input)")
                lines.append("      outputTokens: \(entry.output)")
                lines.append("      calls: \(entry.calls)")
            }
        }
        lines.append(usage.calls.isEmpty ? "modelCalls: []" : "modelCalls:")
        for call in usage.calls {
            lines.append("  - requested: \(q(call.requested))")
            lines.append("    served: \(call.served.map(q) ?? "null")")
            lines.append("    status: \(call.status)")
            lines.append("    inputTokens: \(call.inputTokens)")
            lines.append("    outputTokens: \(call.outputTokens)")
            lines.append("    firstByteMs: \(call.firstByteMilliseconds.map(String.init) ?? "null")")
            lines.append("    durationMs: \(call.durationMilliseconds)")
            lines.append("    fallbacks: [\(call.fallbacks.map(q).joined(separator: ", "))]")
            lines.append("    incomplete: \(call.incomplete)")
            if let error = call.error { lines.append("    error: \(q(error))") }
        }
        if usage.moreCalls > 0 { lines.append("modelCallsOmitted: \(usage.moreCalls)") }
        return lines
    }

    /// Why a record could not be read.
    public struct Unreadable: Error, Sendable {
        public var reason: String
    }

    /// Reads a record back (format 1 or 2).
    public static func parse(_ text: String) -> Result<RunRecord, Unreadable> {
        let documents: [YAMLDocument]
        switch YAMLComposer.compose(text) {
        case .success(let parsed): documents = parsed
        case .failure(let error): return .failure(Unreadable(reason: "not YAML: \(error.message)"))
        }
        guard let root = documents.first?.root else { return .failure(Unreadable(reason: "empty")) }
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
        guard let version = int(root["formatVersion"]), version == 1 || version == formatVersion else {
            return .failure(
                Unreadable(reason: "formatVersion \(string(root["formatVersion"]) ?? "missing") is not 1 or 2"))
        }
        guard let runID = string(root["runId"]), let agent = string(root["agent"]),
            let started = string(root["startedAt"]).flatMap(parseTime),
            let ended = string(root["endedAt"]).flatMap(parseTime)
        else { return .failure(Unreadable(reason: "runId, agent, startedAt or endedAt is missing or malformed")) }
        let exitStatus = int(root["exitStatus"])
        let timedOut = bool(root["timedOut"])
        // Format 1 had no outcome: it recorded only runs whose harness ended.
        let legacyOutcome: Outcome = timedOut ? .timedOut : (exitStatus == 0 ? .succeeded : .failed)
        var record = RunRecord(
            runID: runID, agent: agent, owner: string(root["owner"]) ?? "",
            desiredCommit: string(root["desiredCommit"]) ?? "",
            agentRevision: string(root["agentRevision"]) ?? "", trigger: string(root["trigger"]?["kind"]) ?? "",
            triggeredBy: string(root["trigger"]?["by"]) ?? "", host: string(root["trigger"]?["host"]) ?? "",
            outcome: string(root["outcome"]).flatMap(Outcome.init(rawValue:)) ?? legacyOutcome, startedAt: started,
            endedAt: ended)
        record.harnessName = string(root["harness"]?["name"]) ?? ""
        record.harnessType = string(root["harness"]?["type"]) ?? ""
        record.harnessVersion = string(root["harness"]?["version"]) ?? ""
        record.modelName = string(root["model"]?["name"]) ?? ""
        record.modelProvider = string(root["model"]?["provider"]) ?? ""
        record.model = string(root["model"]?["model"]) ?? ""
        if let prompt = root["prompt"], let sha256 = string(prompt["sha256"]) {
            record.prompt = Prompt(
                text: string(prompt["text"]), sha256: sha256, bytes: int(prompt["bytes"]) ?? 0,
                isDefault: bool(prompt["default"]))
            record.prompt?.continued = bool(prompt["continued"])
        }
        record.phase = string(root["phase"]).flatMap(Phase.init(rawValue:))
        record.reason = string(root["reason"])
        record.exitStatus = exitStatus
        record.timedOut = timedOut
        record.artifacts = (root["artifacts"]?.sequence ?? []).compactMap { node -> Artifact? in
            guard let path = string(node["path"]) else { return nil }
            return Artifact(
                path: path, size: int(node["size"]) ?? 0, sha256: string(node["sha256"]) ?? "",
                stored: bool(node["stored"]),
                storedAs: string(node["storedAs"]))
        }
        record.artifactsOmitted = int(root["artifactsOmitted"]) ?? 0
        record.artifactsNote = string(root["artifactsNote"])
        record.logBytes = int(root["log"]?["bytes"]) ?? 0
        record.logSHA256 = string(root["log"]?["sha256"]) ?? ""
        record.logTruncated = bool(root["log"]?["truncated"])
        record.memoryFiles = int(root["memory"]?["files"]) ?? 0
        // Format 1 stored every snapshot it counted.
        record.memoryStored = version == 1 ? record.memoryFiles > 0 : bool(root["memory"]?["stored"])
        record.memoryRenamed = (root["memory"]?["renamed"]?.sequence ?? []).compactMap { node in
            guard let path = string(node["path"]), let storedAs = string(node["storedAs"]) else { return nil }
            return Renamed(path: path, storedAs: storedAs)
        }
        record.memoryExcluded = (root["memory"]?["excluded"]?.sequence ?? []).compactMap { string($0) }
        record.memoryNote = string(root["memory"]?["note"])
        if let node = root["usage"] {
            var usage = ModelUsage()
            usage.totalCalls = int(node["calls"]) ?? 0
            usage.inputTokens = int(node["inputTokens"]) ?? 0
            usage.outputTokens = int(node["outputTokens"]) ?? 0
            usage.budgetExceeded = bool(node["budgetExceeded"])
            for pair in node["byModel"]?.pairs ?? [] {
                guard let name = string(pair.key) else { continue }
                let value = pair.value
                usage.byModel[name] = (
                    int(value["inputTokens"]) ?? 0, int(value["outputTokens"]) ?? 0, int(value["calls"]) ?? 0
                )
            }
            usage.calls = (root["modelCalls"]?.sequence ?? []).map { call in
                ModelCall(
                    requested: string(call["requested"]) ?? "", served: string(call["served"]),
                    status: int(call["status"]) ?? 0, inputTokens: int(call["inputTokens"]) ?? 0,
                    outputTokens: int(call["outputTokens"]) ?? 0, firstByteMilliseconds: int(call["firstByteMs"]),
                    durationMilliseconds: int(call["durationMs"]) ?? 0,
                    fallbacks: (call["fallbacks"]?.sequence ?? []).compactMap { string($0) },
                    incomplete: bool(call["incomplete"]), error: string(call["error"]))
            }
            usage.moreCalls = int(root["modelCallsOmitted"]) ?? 0
            record.usage = usage
        }
        if let node = root["transcript"] {
            record.transcript = TranscriptSummary(
                events: int(node["count"]) ?? 0, omitted: int(node["omitted"]) ?? 0,
                result: string(node["result"]) != nil)
        }
        return .success(record)
    }

    /// What the run came to, in a few words: `exit 0 in 1.5s`, `timed out after 2m`, `not started`.
    public var summary: String {
        let seconds = DurationText.seconds(milliseconds: durationMilliseconds)
        switch outcome {
        case .succeeded, .failed:
            return exitStatus.map { "exit \($0) in \(seconds)" } ?? "failed in \(seconds)"
        case .timedOut: return "timed out after \(seconds)"
        case .interrupted: return "interrupted after \(seconds)"
        case .notStarted: return "not started"
        case .machineLost: return "machine lost after \(seconds)"
        }
    }

    /// The result in a word or two, for tables: `exit 0`, `timed out`, `not started`.
    public var summaryWord: String {
        switch outcome {
        case .succeeded, .failed: return exitStatus.map { "exit \($0)" } ?? "failed"
        case .timedOut: return "timed out"
        case .interrupted: return "interrupted"
        case .notStarted: return "not started"
        case .machineLost: return "machine lost"
        }
    }

    /// A commit message that reads well in `git log --oneline` and in full.
    public var commitMessage: String {
        var text = """
            run \(agent) \(runID): \(summary)

            agent:    \(agent) (revision \(agentRevision.prefix(12)))
            desired:  \(desiredCommit.prefix(12))
            harness:  \(harnessName)\(harnessVersion.isEmpty ? "" : " " + harnessVersion) (\(harnessType))
            model:    \(modelName) (\(modelProvider)/\(model))
            trigger:  \(trigger) by \(triggeredBy) on \(host)
            outcome:  \(outcome.rawValue)\(phase.map { " in \($0.rawValue)" } ?? "")
            artifacts: \(artifacts.count + artifactsOmitted), log: \(logBytes) bytes\(logTruncated ? " (truncated)" : ""), memory files: \(memoryFiles)

            """
        if let reason { text += "reason:   \(reason.split(separator: "\n").first ?? "")\n" }
        return text
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

/// Names under which files can be stored in history: every path component must be one that
/// `git fsck --strict` and hosting services accept without treating it specially. Others (`.git`
/// in any case or spelling, `.gitmodules`, `.gitattributes`, control characters, characters that
/// some file systems ignore, over-long names) are stored by their content digest, the original
/// name kept in the record.
public enum HistoryName {
    /// Names git itself reads: a repository, submodules, attributes (filters, on checkout), ignores.
    static let special: Set<String> = [".git", ".gitmodules", ".gitattributes", ".gitignore", ".mailmap"]

    public static func isStorable(_ path: String) -> Bool {
        guard !path.isEmpty, path.utf8.count <= 1024 else { return false }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            guard !component.isEmpty, component.utf8.count <= 255, component != ".", component != ".." else {
                return false
            }
            for scalar in component.unicodeScalars {
                let value = scalar.value
                if value < 0x20 || value == 0x7F || (0x80...0x9F).contains(value) || value == 0x5C || value == 0x3A {
                    return false
                }
                // Characters HFS+ ignores, which make `.g\u{200C}it` read as `.git` there.
                if (0x200B...0x200F).contains(value) || (0x202A...0x202E).contains(value)
                    || (0x206A...0x206F).contains(value)
                    || value == 0xFEFF
                {
                    return false
                }
            }
            // NTFS drops trailing dots and spaces, and has 8.3 short names (GIT~1, GITMOD~1).
            var folded = component.lowercased()
            while folded.hasSuffix(".") || folded.hasSuffix(" ") { folded.removeLast() }
            if special.contains(folded) || ["git~", "gitmod~", "gitatt~", "gitign~"].contains(where: folded.hasPrefix) {
                return false
            }
        }
        return true
    }

    /// Where a file goes in history: its own name when storable, else `_/<sha256>`.
    public static func stored(_ path: String, sha256: String) -> String {
        isStorable(path) ? path : "_/" + sha256
    }
}
