import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import AgentryWire
import Foundation

/// `agentry run`: makes sure the agent's machine is up and current (apply's rules, for this agent
/// only), pushes its configuration, installs its harness once per environment and harness revision,
/// projects its secrets into a tmpfs for this run only, runs the harness command in its home with
/// output streamed and the timeout enforced, collects artifacts and the memory snapshot, and commits
/// the record to the history branch (pushed when there is an `origin`). The run holds its agent's
/// lane from start to end.
public struct Runner: Sendable {
    public struct Request: Sendable {
        public var agent: String
        public var target: Planning.Target
        public var prompt: String?
        public var timeout: Duration?
        public var actor: String
        public var trigger: String
        public var historyBranch: String

        public init(
            agent: String, target: Planning.Target, prompt: String?, timeout: Duration?, actor: String,
            trigger: String = "manual", historyBranch: String
        ) {
            self.agent = agent
            self.target = target
            self.prompt = prompt
            self.timeout = timeout
            self.actor = actor
            self.trigger = trigger
            self.historyBranch = historyBranch
        }
    }

    public struct Outcome: Sendable {
        public var record: RunRecord
        public var historyCommit: String
        public var pushWarning: String?
    }

    let ports: Ports
    let progress: @Sendable (String) -> Void
    let output: @Sendable (ProcessStream, [UInt8]) -> Void

    public init(
        _ ports: Ports, progress: @escaping @Sendable (String) -> Void,
        output: @escaping @Sendable (ProcessStream, [UInt8]) -> Void
    ) {
        self.ports = ports
        self.progress = progress
        self.output = output
    }

    /// How long a run waits for another apply that holds the state's writer lock.
    static let lockPatience: Duration = .seconds(60)

    public func run(_ request: Request) async throws -> Outcome {
        try await ports.lanes.withLane(request.agent) {
            var phases = PhaseClock(logger: ports.logger)
            let (loaded, bundle) = try await converge(request)
            phases.mark("apply")
            let runner = self
            let clock = phases
            return try await BlockingWork.run {
                try runner.runConverged(request, loaded: loaded, bundle: bundle, phases: clock)
            }
        }
    }

    /// 1. The machine, as apply would leave it (this agent only). Waits a while for another apply.
    func converge(_ request: Request) async throws -> (LoadedCommit, AgentBundle) {
        var options = ApplyOptions(actor: request.actor, only: [request.agent], historyBranch: request.historyBranch)
        options.planOptions = PlanOptions()
        let apply = Apply(ports, progress: progress)
        let deadline = ports.clock.now().addingTimeInterval(Double(Self.lockPatience.milliseconds) / 1000)
        var converged: Apply.Converged?
        while converged == nil {
            do {
                converged = try await apply.converge(
                    Apply.Request(target: request.target, options: options), holdingLanes: [request.agent],
                    bundleAlways: [request.agent])
            } catch let error as CoreError where error.code == .stateLocked && ports.clock.now() < deadline {
                await ports.clock.sleep(for: .milliseconds(250))
            }
        }
        guard let converged else { throw CoreError(.internalFailure, "internal: no apply outcome") }
        switch converged.outcome.plan {
        case .invalid(let report):
            throw CoreError(
                .invalidRepository,
                "the repository at \(request.target.ref) is invalid (\(report.errorCount) errors); `agentry validate` shows them"
            )
        case .refused(let refusal):
            throw CoreError(.planRefused, "apply refused: \(refusal)")
        case .planned:
            break
        }
        for step in converged.outcome.steps where step.failed {
            throw CoreError(.machineFailed, "\(request.agent): \(step.action.rawValue) failed: \(step.detail)")
        }
        if let kill = try reporting(.stateUnavailable, { try ports.state.killSwitch(request.agent) }) {
            throw CoreError(
                .agentBlocked,
                "\(request.agent) is killed (\(kill.reason), by \(kill.actor)); it does not run until `agentry unkill \(request.agent)`"
            )
        }
        guard let loaded = converged.loaded, let wanted = loaded.desired.agents[request.agent] else {
            throw CoreError(.notFound, "the repository at \(request.target.ref) has no agent \(request.agent)")
        }
        guard wanted.lifecycle == .active else {
            throw CoreError(
                .agentBlocked,
                "\(request.agent) is \(wanted.lifecycle.rawValue) (lifecycle in \(wanted.origin.file)); it does not run"
            )
        }
        guard let bundle = converged.bundles[request.agent] else {
            throw CoreError(.internalFailure, "internal: no bundle for \(request.agent)")
        }
        return (loaded, bundle)
    }

    /// Steps 2 to 7, on a blocking-work thread.
    func runConverged(_ request: Request, loaded: LoadedCommit, bundle: AgentBundle, phases: PhaseClock) throws
        -> Outcome
    {
        var phases = phases
        let channel = try reporting(.machineFailed) { try ports.machines.connect(request.agent, timeout: .seconds(30)) }
        // The machine's egress allowlist as the desired state says (an installation that was
        // interrupted may have left it widened for package registries).
        let egress = EgressPolicy(fields: bundle.fields)
        if let allowlist = egress.allowlist {
            try? ports.machines.setEgressAllowlist(request.agent, allowlist)
        }
        phases.mark("connect")
        // 2. Secrets, resolved before anything starts: a missing one fails the run, naming it.
        let secrets = try resolveSecrets(bundle, agent: request.agent)
        let redactor = Redactor(Array(secrets.values))
        let started = ports.clock.now()
        let runID = RunID.make(started)
        let timeoutMilliseconds = Int(
            request.timeout.map { max(1, $0.millisecondsRoundedUp) }
                ?? Int64(min(bundle.agent.run.timeoutMilliseconds, UInt64(Int64.max))))
        let context = RunContext(
            prompt: request.prompt ?? bundle.agent.run.prompt ?? "", runID: runID,
            timeoutSeconds: timeoutMilliseconds / 1000)
        let rendered = Rendering.render(bundle, run: context)
        do {
            let secretFolder = "/run/secrets/\(runID)"
            let outputFolder = AgentLayout.outputDirectory(bundle.agent)
            let memory = AgentLayout.memoryDirectory(bundle.agent)
            let marker = HarnessInstall.marker(bundle.harness)
            // 3. Configuration, the install check, the secrets folder and an empty output folder:
            // one command in the guest (every command costs a process start, emulated under TCG).
            var prepare = "set -e\n" + (try Provisioner.stage(rendered, over: channel))
            prepare += GuestScripts.prepareRun(
                installMarker: marker, secretFolder: secretFolder, outputFolder: outputFolder, memoryFolder: memory)
            let prepared = String(decoding: try shell(channel, prepare), as: UTF8.self)
            phases.mark("configuration")
            if marker != nil, prepared.contains("not-installed") {
                try install(bundle, channel: channel, actor: request.actor)
                phases.mark("install")
            }

            // 4. Secrets into the run's tmpfs folder and the harness's environment.
            // From here on, the run's secrets folder goes whatever happens.
            var secretsRemoved = false
            defer { if !secretsRemoved { _ = try? shell(channel, GuestScripts.removeSecrets(secretFolder)) } }
            var environment = rendered.environment
            environment["PATH"] = GuestShell.runPath
            if egress.allowlist != nil {
                environment.merge(EgressProxyAddress.environment) { own, _ in own }
            }
            environment["AGENTRY_SECRETS_DIR"] = secretFolder
            for binding in bundle.agent.secrets {
                guard let value = secrets[binding.ref] else { continue }
                try channel.putFile(secretFolder + "/" + binding.env, value, mode: 0o400)
                environment[binding.env] = String(decoding: value, as: UTF8.self)
            }
            for (variable, entry) in rendered.secretEnvironment {
                guard let value = secrets[entry.secret] else { continue }
                var values = Rendering.values(bundle, run: context)
                values["model.apiKey"] = String(decoding: value, as: UTF8.self)
                environment[variable] = Rendering.render(entry.template, values)
            }
            phases.mark("secrets")

            // 5. The harness command, streamed; the log kept redacted.
            guard !rendered.command.isEmpty else {
                throw CoreError(.invalidRepository, "the harness \(bundle.harness.metadata.name) has no command")
            }
            progress("run \(runID): \(bundle.harness.metadata.name) for \(request.agent)")
            var log = RunLog(redactor: redactor, output: output)
            let result = try channel.exec(
                rendered.command, environment: environment.map { "\($0.key)=\($0.value)" }.sorted(),
                directory: AgentLayout.home, stdin: [], timeout: .milliseconds(timeoutMilliseconds),
                output: { stream, bytes in log.feed(stream, bytes) })
            log.finish()
            let ended = ports.clock.now()
            phases.mark("harness")

            // 6. Secrets removed, then artifacts and the memory snapshot collected: one command.
            var folders = [(outputFolder, RunLimits.storedArtifactBytes)]
            if bundle.agent.memory.snapshot { folders.append((memory, RunLimits.memoryFileBytes)) }
            let collected = try RunCollection.collect(
                channel, folders: folders, secretFolder: secretFolder, redactor: redactor)
            secretsRemoved = true
            let artifacts = RunCollection.limit(
                collected.filter { $0.folder == outputFolder }, total: RunLimits.storedArtifactsTotal)
            let memoryFiles = RunCollection.limit(
                collected.filter { $0.folder == memory && bundle.agent.memory.snapshot }, total: RunLimits.memoryTotal)
            let logText = log.kept(timedOutAfter: result.timedOut ? UInt64(timeoutMilliseconds) : nil)
            let record = RunRecord(
                runID: runID, agent: request.agent, desiredCommit: loaded.commit, agentRevision: bundle.revision,
                harnessName: bundle.harness.metadata.name, harnessType: bundle.harness.type?.rawValue ?? "custom",
                harnessVersion: bundle.harness.version ?? "", modelName: bundle.model?.metadata.name ?? "",
                modelProvider: bundle.model?.provider ?? "", model: bundle.model?.name ?? "", trigger: request.trigger,
                triggeredBy: request.actor, host: ports.host.hostName, startedAt: started, endedAt: ended,
                exitStatus: result.status, timedOut: result.timedOut,
                artifacts: artifacts.map {
                    RunRecord.Artifact(path: $0.path, size: $0.size, sha256: $0.sha256, stored: $0.bytes != nil)
                },
                logBytes: logText.bytes.count, logSHA256: SHA256.hex(logText.bytes), logTruncated: logText.truncated,
                memoryFiles: memoryFiles.filter { $0.bytes != nil }.count)
            phases.mark("collect")

            // 7. History, then the state.
            let committed = try commit(
                record, log: logText.bytes, artifacts: artifacts, memory: memoryFiles, request: request)
            phases.mark("history")
            _ = try? ports.state.withWriterLockIfFree {
                if var agent = try? ports.state.agent(request.agent) {
                    agent.lastRunAt = ended
                    try? ports.state.save(agent)
                }
                let outcome = result.timedOut ? "timed out" : "exit \(result.status)"
                try? ports.state.append(
                    EventRecord(
                        time: ended, agent: request.agent, kind: "run", actor: request.actor,
                        message: "run \(runID): \(outcome), recorded in \(committed.commit.prefix(12))"))
            }
            phases.mark("state")
            return Outcome(record: record, historyCommit: committed.commit, pushWarning: committed.pushWarning)
        } catch let error as CoreError {
            throw CoreError(error.code, redactor.text(error.message), cause: error.cause)
        } catch {
            throw CoreError(
                .machineFailed, "the run of \(request.agent) failed: \(redactor.text(describe(error)))", cause: nil)
        }
    }

    /// Every secret the run needs, by reference; fails naming the missing ones.
    func resolveSecrets(_ bundle: AgentBundle, agent: String) throws -> [String: [UInt8]] {
        let rendered = Rendering.render(bundle, run: .none)
        if rendered.secretEnvironment.values.contains(where: { $0.secret.isEmpty }) {
            throw CoreError(
                .invalidRepository,
                "the harness \(bundle.harness.metadata.name) uses {{model.apiKey}} but the model \(bundle.model?.metadata.name ?? "-") has no credentials.ref"
            )
        }
        var needed = bundle.agent.secrets.map { ($0.ref, $0.optional) }
        needed += rendered.secretEnvironment.values.map { ($0.secret, false) }
        var values: [String: [UInt8]] = [:]
        var missing: [String] = []
        for (reference, optional) in needed where values[reference] == nil && !missing.contains(reference) {
            if let value = try reporting(.secretUnavailable, { try ports.secrets.value(reference) }) {
                values[reference] = value
            } else if !optional {
                missing.append(reference)
            }
        }
        guard missing.isEmpty else {
            throw CoreError(
                .secretUnavailable,
                "the run of \(agent) needs the secret\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")), which the store does not hold; `agentry secret set \(missing[0])` (value on stdin)"
            )
        }
        return values
    }

    /// Commits the run's folder; when the artifacts cannot be recorded, the record and log alone.
    func commit(
        _ record: RunRecord, log: [UInt8], artifacts: [RunCollection.File], memory: [RunCollection.File],
        request: Request
    ) throws -> HistoryCommit {
        var files = [
            HistoryFile(path: record.folder + "/record.yaml", bytes: Array(record.yaml.utf8)),
            HistoryFile(path: record.folder + "/log.txt", bytes: log),
        ]
        for artifact in artifacts {
            if let bytes = artifact.bytes {
                files.append(HistoryFile(path: record.folder + "/artifacts/" + artifact.relative, bytes: bytes))
            }
        }
        for file in memory {
            if let bytes = file.bytes {
                files.append(HistoryFile(path: record.folder + "/memory/" + file.relative, bytes: bytes))
            }
        }
        let location = HistoryLocation(repository: request.target.repository, branch: request.historyBranch)
        let history = HistoryQueries(ports)
        do {
            return try history.commit(
                files, message: record.commitMessage, actor: request.actor, at: record.endedAt, in: location)
        } catch  where files.count > 2 {
            // Whatever the artifacts hold, the run itself is not lost: record and log alone.
            progress("warning: \(describe(error)); recording the run without its artifacts and memory")
            return try history.commit(
                Array(files.prefix(2)), message: record.commitMessage, actor: request.actor, at: record.endedAt,
                in: location)
        }
    }

    /// Runs a shell snippet in the guest with the run's PATH; fails with its error output.
    @discardableResult
    func shell(_ channel: any GuestChannel, _ script: String, timeout: Duration = .seconds(60)) throws -> [UInt8] {
        try GuestCommand.shell(script, over: channel, path: GuestShell.runPath, timeout: timeout)
    }
}
