import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import Foundation

/// One run as it goes: what is known of it so far, the phase it is in, and how it ended. Whatever
/// stops it, `finish` turns what is known into its record on the history branch.
struct RunAttempt {
    let runner: Runner
    let request: Runner.Request
    let runID: String
    let startedAt: Date

    var owner = ""
    /// The applied commit the run's revision comes from.
    var commit = ""
    var revision = ""
    var bundle: AgentBundle?
    var prompt: RunRecord.Prompt?
    var timeoutMilliseconds = 0
    var context = RunContext.none
    /// Secret values, to keep out of the log, the artifacts and the record.
    var redactor = Redactor([]) {
        didSet { log = RunLog(redactor: redactor, output: live.tee(runner.output)) }
    }
    /// The output as the terminal sees it, kept for `logs -f` while the run goes on.
    let live: LiveLog
    var log: RunLog
    /// What the run's model calls used (the gateway's count), once the gateway closed.
    var usage: ModelUsage?
    /// What must happen in the guest however the run ends (its secrets removed, its processes ended).
    var cleanup: (() -> Void)?

    /// Where the run is (nil: not yet at the machine).
    private(set) var phase: RunRecord.Phase?
    /// Where it stopped, when it did not end well.
    private var stoppedIn: RunRecord.Phase?
    private var harnessStarted = false
    private var exit: GuestExit?
    private var outcome: RunRecord.Outcome?
    private var reason: String?
    /// Why the run did not start, thrown once it is recorded.
    private var refusal: CoreError?
    private var journalled = false

    private var artifacts: [RunCollection.File] = []
    private var artifactsOmitted = 0
    private var memory: [RunCollection.File] = []
    private var memoryExcluded: [String] = []

    var ports: Ports { runner.ports }

    init(runner: Runner, request: Runner.Request) {
        self.runner = runner
        self.request = request
        startedAt = runner.ports.clock.now()
        runID = RunID.make(startedAt)
        live = LiveLog(state: runner.ports.state, agent: request.agent)
        log = RunLog(redactor: Redactor([]), output: live.tee(runner.output))
    }

    // MARK: - Before the machine

    /// Fails (before any lock is taken) when the run cannot be of an applied agent: no state, or an
    /// agent it never applied. A run that applies first needs neither.
    func checkApplied() throws {
        guard !request.applyFirst else { return }
        try reporting(.stateUnavailable) { try ports.state.checkReadable() }
        guard try reporting(.stateUnavailable, { try ports.state.agent(request.agent) }) != nil else {
            throw CoreError(
                .notFound,
                "\(request.agent) has not been applied (see `agentry status`); `agentry apply`, or `agentry run --apply`, starts it"
            )
        }
    }

    /// Applies first when asked, then reads what was applied to the agent: the run is of that
    /// revision, whatever the repository holds now.
    mutating func prepare() throws {
        let agent = request.agent
        if request.applyFirst { try applyFirst() }
        try reporting(.stateUnavailable) { try ports.state.checkReadable() }
        guard let record = try reporting(.stateUnavailable, { try ports.state.agent(agent) }) else {
            throw CoreError(
                .notFound,
                "\(agent) has not been applied (see `agentry status`); `agentry apply`, or `agentry run --apply`, starts it"
            )
        }
        owner = record.owner ?? ""
        commit = record.appliedCommit
        revision = record.appliedRevision
        if let kill = try reporting(.stateUnavailable, { try ports.state.killSwitch(agent) }) {
            throw CoreError(
                .agentBlocked,
                "\(agent) is killed (\(kill.reason), by \(kill.actor)); it does not run until `agentry unkill \(agent)`"
            )
        }
        guard record.lifecycle == Lifecycle.active.rawValue else {
            throw CoreError(.agentBlocked, "\(agent) is \(record.lifecycle); it does not run")
        }
        guard record.machineState == "running" else {
            throw CoreError(
                .machineNotRunning,
                "the machine of \(agent) is \(record.machineState ?? "not started")\(record.machineDetail.map { " (\($0))" } ?? ""); `agentry apply` brings it up"
            )
        }
        let reader = try reporting(.repositoryUnavailable) {
            try ports.reader(request.repository, path: request.path)
        }
        let applied = try reporting(.repositoryUnavailable) {
            do {
                return try reader.load(record.appliedCommit)
            } catch {
                throw CoreError(
                    .repositoryUnavailable,
                    "\(agent) is applied at \(record.appliedCommit.prefix(12)), which \(request.repository) cannot give: \(describe(error))"
                )
            }
        }
        let bundle = try reporting(.invalidRepository) { try reader.bundle(agent, in: applied) }
        try compareWithRepository(reader, record: record)
        self.bundle = bundle
        owner = bundle.agent.metadata.owner ?? owner
        let text = request.prompt ?? bundle.agent.run.prompt ?? ""
        prompt = RunRecord.Prompt(text, isDefault: request.prompt == nil)
        timeoutMilliseconds = Int(
            request.timeout.map { max(1, $0.millisecondsRoundedUp) }
                ?? Int64(min(bundle.agent.run.timeoutMilliseconds, UInt64(Int64.max))))
        if request.continueSession {
            prompt?.continued = true
            guard !bundle.harness.continueCommand.isEmpty else {
                throw CoreError(
                    .invalidArgument,
                    "--continue: harness \(bundle.harness.metadata.name) declares no continueCommand, so agentry cannot resume its session; add the argv that resumes it (the bundled claude-code, codex, hermes and opencode files have one)"
                )
            }
        }
        context = RunContext(
            prompt: text, runID: runID, timeoutSeconds: timeoutMilliseconds / 1000, continuing: request.continueSession)
        try journal()
    }

    /// The repository's revision of the agent against the applied one: a run given `--ref` of
    /// another revision is refused (only apply changes what runs); without one, a repository that
    /// moved on is mentioned.
    func compareWithRepository(_ reader: any RepositoryReader, record: AgentRecord) throws {
        let ref = request.ref ?? "HEAD"
        let now: String
        do {
            now = try reader.commit(for: ref)
        } catch {
            if request.ref != nil { throw CoreError(.invalidArgument, "--ref \(ref): \(describe(error))") }
            return
        }
        guard now != record.appliedCommit else { return }
        let desired = try? reader.load(now)
        let wanted = desired?.desired.agents[request.agent]
        guard wanted?.revision != record.appliedRevision else { return }
        if request.ref != nil {
            let what = wanted == nil ? "has no agent \(request.agent)" : "holds another revision of it"
            throw CoreError(
                .invalidArgument,
                "\(request.agent) is applied at \(record.appliedCommit.prefix(12)); --ref \(ref) (\(now.prefix(12))) \(what). Only apply changes what runs: `agentry apply --ref \(ref)`, or `agentry run --apply --ref \(ref)`"
            )
        }
        let what = wanted == nil ? "at \(now.prefix(12)) has no agent \(request.agent)" : "is at \(now.prefix(12))"
        runner.progress(
            "\(request.agent) is applied at \(record.appliedCommit.prefix(12)); the repository \(what): apply first (`agentry apply`, or `agentry run --apply`). Running the applied revision."
        )
    }

    /// `run --apply`: the apply of this agent, with the run's lock held (the writer lock only while
    /// it plans and records).
    func applyFirst() throws {
        let target = Planning.Target(repository: request.repository, ref: request.ref ?? "HEAD", path: request.path)
        let options = ApplyOptions(actor: request.actor, only: [request.agent], historyBranch: request.historyBranch)
        let writer = try runner.waitForWriterLock(request)
        let converged = try Apply(ports, progress: runner.progress).convergeAlone(
            Apply.Request(target: target, options: options), agent: request.agent, writer: writer)
        switch converged.outcome.plan {
        case .invalid(let report):
            throw CoreError(
                .invalidRepository,
                "the repository at \(target.ref) is invalid (\(report.errorCount) errors); `agentry validate` shows them"
            )
        case .refused(let refusal):
            throw CoreError(.planRefused, "apply refused: \(refusal)")
        case .planned:
            break
        }
        guard converged.loaded?.desired.agents[request.agent] != nil else {
            throw CoreError(.notFound, "the repository at \(target.ref) has no agent \(request.agent)")
        }
        for step in converged.outcome.steps where step.failed {
            throw CoreError(.machineFailed, "applying \(request.agent) failed: \(step.action.rawValue): \(step.detail)")
        }
    }

    // MARK: - As it goes

    /// Moves to `phase`, in the journal too (a run whose agentry dies is recorded with it).
    mutating func enter(_ phase: RunRecord.Phase) {
        self.phase = phase
        if phase == .harness { harnessStarted = true }
        if journalled { try? journal() }
    }

    mutating func journal() throws {
        var entry = RunJournal(
            agent: request.agent, runID: runID, pid: ports.host.processID, startedAt: startedAt,
            phase: phase?.rawValue ?? "", owner: owner, commit: commit, revision: revision, actor: request.actor,
            trigger: request.trigger, host: ports.host.hostName,
            historyRepository: ports.host.absolute(request.repository), historyBranch: request.historyBranch)
        entry.promptSHA256 = prompt?.sha256
        entry.promptBytes = prompt?.bytes
        entry.promptIsDefault = prompt?.isDefault
        try reporting(.stateUnavailable) { try ports.state.saveRunJournal(entry) }
        journalled = true
    }

    mutating func harnessEnded(_ exit: GuestExit) {
        self.exit = exit
        if exit.interrupted {
            outcome = .interrupted
            reason = "stopped by \(Self.signalName(request.interruption?.signal)); the harness's processes were killed"
        } else if exit.timedOut {
            outcome = .timedOut
            reason = "ran past its timeout of \(DurationText.format(milliseconds: UInt64(timeoutMilliseconds)))"
        } else {
            outcome = exit.status == 0 ? .succeeded : .failed
        }
        if outcome != .succeeded && outcome != .failed { stoppedIn = .harness }
    }

    /// What the output and memory folders held: artifacts listed up to a cap, stored up to the
    /// size limits; memory files that held a secret kept out of the snapshot.
    mutating func collected(_ files: [RunCollection.File], outputFolder: String, memoryFolder: String, snapshot: Bool) {
        var output = files.filter { $0.folder == outputFolder }
        if output.count > RunRecord.listedArtifacts {
            artifactsOmitted = output.count - RunRecord.listedArtifacts
            output = Array(output.prefix(RunRecord.listedArtifacts))
        }
        artifacts = RunCollection.limit(output, total: RunLimits.storedArtifactsTotal)
        guard snapshot else { return }
        var kept: [RunCollection.File] = []
        for file in files where file.folder == memoryFolder {
            if file.nameRedacted {
                memoryExcluded.append(file.relative + " (its name held a secret)")
            } else if file.redacted {
                memoryExcluded.append(file.relative + " (it held a secret)")
            } else if file.bytes == nil {
                memoryExcluded.append(file.relative + " (\(file.size) bytes, over \(RunLimits.memoryFileBytes))")
            } else {
                kept.append(file)
            }
        }
        for file in RunCollection.limit(kept, total: RunLimits.memoryTotal) {
            if file.bytes == nil {
                memoryExcluded.append(file.relative + " (over the snapshot's \(RunLimits.memoryTotal) bytes)")
            } else {
                memory.append(file)
            }
        }
    }

    /// Takes in why the run stopped where it did.
    mutating func absorb(_ error: any Error) {
        let message = redactor.text(describe(error))
        if stoppedIn == nil { stoppedIn = phase }
        if let interrupted = error as? RunInterrupted {
            outcome = .interrupted
            reason =
                "stopped by \(Self.signalName(interrupted.signal)) before the harness \(harnessStarted ? "ended" : "started")"
            return
        }
        if request.interruption?.isInterrupted == true, exit == nil {
            outcome = .interrupted
            reason = "stopped by \(Self.signalName(request.interruption?.signal)): \(message)"
            return
        }
        let lost = phase != nil && phase != .install && !ports.machines.isRunning(request.agent)
        if harnessStarted, exit == nil || lost {
            outcome = .machineLost
            reason = machineLoss(message)
            return
        }
        if !harnessStarted {
            outcome = .notStarted
            reason = lost ? machineLoss(message) : message
            if let error = error as? CoreError {
                refusal = CoreError(error.code, redactor.text(error.message), cause: error.cause)
            } else {
                refusal = CoreError(.machineFailed, "the run of \(request.agent) did not start: \(message)")
            }
            return
        }
        // The harness ended; what came after it failed.
        if outcome == .succeeded || outcome == nil { outcome = .failed }
        reason = message
    }

    /// Why the machine went: the kill switch, or how its process ended.
    func machineLoss(_ message: String) -> String {
        if let kill = try? ports.state.killSwitch(request.agent) {
            return "the machine was stopped by the kill switch (\(kill.reason), by \(kill.actor))"
        }
        if case .ended(let end) = ports.machines.observe(request.agent).process {
            return "the machine \(end.description): \(message)"
        }
        return "the machine stopped answering: \(message)"
    }

    static func signalName(_ signal: Int32?) -> String {
        switch signal {
        case SIGINT?: return "SIGINT (Ctrl-C)"
        case SIGTERM?: return "SIGTERM"
        case let other?: return "signal \(other)"
        case nil: return "a signal"
        }
    }

    // MARK: - The record

    /// Ends the run in the guest, builds its record and commits it (its artifacts and memory too,
    /// when they can be stored), then notes it in the state. A run that did not start is thrown as
    /// why, once recorded.
    mutating func finish() throws -> Runner.Outcome {
        if let cleanup {
            cleanup()
            self.cleanup = nil
        }
        // A command line that names no agent, or a revision that is not the applied one, is refused
        // as it is: no run of an agent was asked for.
        if let refusal, refusal.code == .notFound || refusal.code == .invalidArgument, !journalled { throw refusal }
        log.finish()
        let ended = ports.clock.now()
        var record = RunRecord(
            runID: runID, agent: request.agent, owner: owner, desiredCommit: commit, agentRevision: revision,
            trigger: request.trigger, triggeredBy: request.actor, host: ports.host.hostName,
            outcome: outcome ?? .failed, startedAt: startedAt, endedAt: ended)
        if let bundle {
            record.harnessName = bundle.harness.metadata.name
            record.harnessType = bundle.harness.type?.rawValue ?? "custom"
            record.harnessVersion = bundle.harness.version ?? ""
            record.modelName = bundle.model?.metadata.name ?? ""
            record.modelProvider = bundle.model?.provider ?? ""
            record.model = bundle.model?.name ?? ""
        }
        record.prompt = prompt ?? request.prompt.map { RunRecord.Prompt($0, isDefault: false) }
        record.phase = stoppedIn
        record.reason = reason
        record.usage = usage
        if let usage, usage.budgetExceeded, let budget = bundle?.agent.run.budgetTokens {
            // The harness saw 429s; the record says why.
            let note = "the run's token budget (\(budget) tokens) was spent; the model gateway refused further calls"
            record.reason = record.reason.map { $0 + "; " + note } ?? note
        }
        if let exit, !exit.interrupted { record.exitStatus = exit.status }
        record.timedOut = exit?.timedOut ?? false
        var logText = log.kept(timedOutAfter: record.timedOut ? UInt64(timeoutMilliseconds) : nil)
        if record.outcome != .succeeded && record.outcome != .failed, let reason {
            logText.bytes += Array("\n[agentry: \(record.outcome.rawValue): \(reason)]\n".utf8)
        }
        record.logBytes = logText.bytes.count
        record.logSHA256 = SHA256.hex(logText.bytes)
        record.logTruncated = logText.truncated
        var extra: [HistoryFile] = []
        var transcriptFiles: [HistoryFile] = []
        // The harness's own account of the run, read into the neutral transcript.
        if exit != nil, let harness = bundle?.harness,
            let transcript = Transcript.read(type: harness.type, stdout: redactor.redact(log.stdout))
        {
            record.transcript = RunRecord.TranscriptSummary(
                events: transcript.events.count, omitted: transcript.omitted, result: transcript.result != nil)
            transcriptFiles.append(
                HistoryFile(
                    path: record.folder + "/" + RunRecord.TranscriptSummary.eventsFile,
                    bytes: transcript.jsonLines(harness: harness.type?.rawValue ?? "custom")))
            if let result = transcript.result {
                transcriptFiles.append(
                    HistoryFile(
                        path: record.folder + "/" + RunRecord.TranscriptSummary.resultFile,
                        bytes: Array((result + "\n").utf8)))
            }
        }
        for file in artifacts {
            let stored =
                file.nameRedacted ? "_/" + file.sha256 : HistoryName.stored(file.relative, sha256: file.sha256)
            record.artifacts.append(
                RunRecord.Artifact(
                    path: file.path, size: file.size, sha256: file.sha256, stored: file.bytes != nil,
                    storedAs: stored == file.relative ? nil : stored))
            if let bytes = file.bytes {
                extra.append(HistoryFile(path: record.folder + "/artifacts/" + stored, bytes: bytes))
            }
        }
        record.artifactsOmitted = artifactsOmitted
        var memoryFiles: [HistoryFile] = []
        for file in memory {
            guard let bytes = file.bytes else { continue }
            let stored = HistoryName.stored(file.relative, sha256: file.sha256)
            if stored != file.relative { record.memoryRenamed.append(.init(path: file.relative, storedAs: stored)) }
            memoryFiles.append(HistoryFile(path: record.folder + "/memory/" + stored, bytes: bytes))
        }
        record.memoryFiles = memoryFiles.count
        record.memoryStored = !memoryFiles.isEmpty
        record.memoryExcluded = Array(memoryExcluded.prefix(RunRecord.listedArtifacts))
        if memoryExcluded.count > RunRecord.listedArtifacts {
            record.memoryExcluded.append("… and \(memoryExcluded.count - RunRecord.listedArtifacts) more")
        }
        let committed = commit(
            &record, log: logText.bytes, transcript: transcriptFiles, artifacts: extra, memory: memoryFiles)
        if committed.commit != nil || journalled {
            try? ports.state.clearRunJournal(agent: request.agent)
        }
        let word = record.summary
        // Writers hold the lock briefly (never while waiting on a machine): worth a short wait.
        _ = try? ports.state.withWriterLock(waitingUpTo: .seconds(10)) {
            if record.outcome != .notStarted, var agent = try? ports.state.agent(request.agent) {
                agent.lastRunAt = ended
                try? ports.state.save(agent)
            }
            try? ports.state.append(
                EventRecord(
                    time: ended, agent: request.agent, kind: "run", actor: request.actor,
                    message:
                        "run \(runID): \(word)\(committed.commit.map { ", recorded in \($0.prefix(12))" } ?? ", not recorded: \(committed.warning ?? "")")"
                ))
        }
        if let refusal {
            let recorded =
                committed.commit != nil
                ? " (recorded as run \(runID))" : " (and its record could not be committed: \(committed.warning ?? ""))"
            throw CoreError(refusal.code, refusal.message + recorded, cause: refusal.cause)
        }
        return Runner.Outcome(record: record, historyCommit: committed.commit, historyWarning: committed.warning)
    }

    /// Commits the run's folder; when its artifacts or memory cannot be stored, the record and
    /// log alone, the record saying so (a snapshot that is not stored never shadows an earlier one).
    func commit(
        _ record: inout RunRecord, log: [UInt8], transcript: [HistoryFile], artifacts: [HistoryFile],
        memory: [HistoryFile]
    ) -> (commit: String?, warning: String?) {
        let history = HistoryQueries(ports)
        let location = request.history
        func files(_ record: RunRecord, extra: [HistoryFile]) -> [HistoryFile] {
            [
                HistoryFile(path: record.folder + "/record.yaml", bytes: Array(record.yaml.utf8)),
                HistoryFile(path: record.folder + "/log.txt", bytes: log),
            ] + transcript + extra
        }
        do {
            let done = try history.commit(
                files(record, extra: artifacts + memory), message: record.commitMessage, actor: request.actor,
                at: record.endedAt, in: location)
            return (done.commit, done.pushWarning)
        } catch {
            guard !artifacts.isEmpty || !memory.isEmpty else { return (nil, redactor.text(describe(error))) }
            let why = redactor.text(describe(error))
            runner.progress("warning: \(why); recording the run without its artifacts and memory")
            if !artifacts.isEmpty { record.artifactsNote = "the artifacts could not be stored: \(why)" }
            if !memory.isEmpty {
                record.memoryStored = false
                record.memoryNote = "the memory snapshot could not be stored: \(why)"
            }
            do {
                let done = try history.commit(
                    files(record, extra: []), message: record.commitMessage, actor: request.actor, at: record.endedAt,
                    in: location)
                return (done.commit, done.pushWarning)
            } catch {
                return (nil, redactor.text(describe(error)))
            }
        }
    }
}
