import AgentryBasics
import AgentryModel
import AgentryYAML
import Foundation

/// One run as recorded in history: `runs/<agent>/<run-id>/record.yaml` on the history branch.
/// Every run that was asked for has one, whatever happened to it. Published as
/// `schemas/run-record.schema.json`; records of format 1 still read.
public struct RunRecord: Sendable {
    public static let formatVersion = 2

    /// How the run ended.
    public enum Outcome: String, Sendable, CaseIterable {
        /// The harness ran and exited 0.
        case succeeded
        /// The harness exited with another status, or the run failed after it.
        case failed
        /// The harness ran past its timeout and was killed.
        case timedOut
        /// Stopped by Ctrl-C or SIGTERM, or agentry itself stopped before the run ended.
        case interrupted
        /// Refused or failed before the harness started (a paused agent, a missing secret).
        case notStarted
        /// The machine stopped or stopped answering while the run was in it.
        case machineLost
    }

    /// Where a run was when it stopped.
    public enum Phase: String, Sendable, CaseIterable {
        case machine, install, secrets, harness, collect
    }

    /// The prompt: its text when short, else only its digest and length.
    public struct Prompt: Sendable, Equatable {
        public static let textLimit = 4096

        public var text: String?
        public var sha256: String
        public var bytes: Int
        /// The agent's own `run.prompt`, not one given for this run.
        public var isDefault: Bool
        /// The run continued the harness's previous session (`agentry run --continue`).
        public var continued = false

        public init(_ prompt: String, isDefault: Bool) {
            let bytes = Array(prompt.utf8)
            self.text = bytes.count <= Self.textLimit ? prompt : nil
            self.sha256 = SHA256.hex(bytes)
            self.bytes = bytes.count
            self.isDefault = isDefault
        }

        /// A prompt known only by its digest and length.
        public init(sha256: String, bytes: Int, isDefault: Bool) {
            self.init(text: nil, sha256: sha256, bytes: bytes, isDefault: isDefault)
        }

        init(text: String?, sha256: String, bytes: Int, isDefault: Bool) {
            self.text = text
            self.sha256 = sha256
            self.bytes = bytes
            self.isDefault = isDefault
        }
    }

    public struct Artifact: Sendable, Equatable {
        public var path: String
        public var size: Int
        public var sha256: String
        /// Whether the bytes are in history (small files) or only their digest.
        public var stored: Bool
        /// Where in the run's `artifacts/` the bytes are, when not under `path` (a name git would
        /// refuse or treat specially is stored by its digest).
        public var storedAs: String?

        public init(path: String, size: Int, sha256: String, stored: Bool, storedAs: String? = nil) {
            self.path = path
            self.size = size
            self.sha256 = sha256
            self.stored = stored
            self.storedAs = storedAs
        }
    }

    /// A memory file stored under another name than its own (see `Artifact.storedAs`).
    public struct Renamed: Sendable, Equatable {
        public var path: String
        public var storedAs: String

        public init(path: String, storedAs: String) {
            self.path = path
            self.storedAs = storedAs
        }
    }

    /// At most this many artifacts are listed; the record says how many more there were.
    public static let listedArtifacts = 1000

    public var runID: String
    public var agent: String
    public var owner: String
    /// The commit the run's revision was applied from.
    public var desiredCommit: String
    public var agentRevision: String
    public var harnessName: String = ""
    public var harnessType: String = ""
    public var harnessVersion: String = ""
    public var modelName: String = ""
    public var modelProvider: String = ""
    public var model: String = ""
    public var trigger: String
    public var triggeredBy: String
    public var host: String
    public var prompt: Prompt?
    public var outcome: Outcome
    public var phase: Phase?
    public var reason: String?
    public var startedAt: Date
    public var endedAt: Date
    /// The harness's exit status; nil when it did not end on its own terms (never started, lost).
    public var exitStatus: Int?
    public var timedOut: Bool = false
    public var artifacts: [Artifact] = []
    public var artifactsOmitted = 0
    /// Why artifacts listed as stored are not in history after all, when that happened.
    public var artifactsNote: String?
    public var logBytes = 0
    public var logSHA256 = ""
    public var logTruncated = false
    /// Memory files in the snapshot.
    public var memoryFiles = 0
    /// Whether the snapshot is in history (a snapshot that is not never shadows an earlier one).
    public var memoryStored = false
    public var memoryRenamed: [Renamed] = []
    /// Memory files kept out of the snapshot (they held a secret, or were too large), by name.
    public var memoryExcluded: [String] = []
    public var memoryNote: String?
    /// What the run's model calls used, through the gateway; nil when the agent has no model.
    public var usage: ModelUsage?
    /// The harness-neutral transcript stored beside the record; nil for a harness whose output
    /// agentry does not read (shell, custom) or a run that never started it.
    public var transcript: TranscriptSummary?

    /// Where a run's transcript is and how long it is.
    public struct TranscriptSummary: Sendable, Equatable {
        public static let eventsFile = "events.jsonl"
        public static let resultFile = "result.md"

        public var events: Int
        public var omitted: Int
        /// Whether `result.md` (the final answer) was stored.
        public var result: Bool

        public init(events: Int, omitted: Int, result: Bool) {
            self.events = events
            self.omitted = omitted
            self.result = result
        }
    }

    public init(
        runID: String, agent: String, owner: String, desiredCommit: String, agentRevision: String, trigger: String,
        triggeredBy: String, host: String, outcome: Outcome, startedAt: Date, endedAt: Date
    ) {
        self.runID = runID
        self.agent = agent
        self.owner = owner
        self.desiredCommit = desiredCommit
        self.agentRevision = agentRevision
        self.trigger = trigger
        self.triggeredBy = triggeredBy
        self.host = host
        self.outcome = outcome
        self.startedAt = startedAt
        self.endedAt = endedAt
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

    /// A YAML double-quoted scalar that libyaml reads back exactly, whatever `text` holds: control
    /// characters, C1 controls, line and paragraph separators, a byte-order mark and the
    /// non-characters U+FFFE and U+FFFF are escaped.
    public static func quote(_ text: String) -> String {
        var output = ""
        JSON.quote(text, into: &output) { value in
            value == 0x7F || (0x80...0x9F).contains(value) || value == 0x2028 || value == 0x2029 || value == 0xFEFF
                || value == 0xFFFE || value == 0xFFFF
        }
        return output
    }

}
