import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import AgentryWire
import Foundation

/// `agentry run`: runs an agent once, at the revision that was applied to it (only the reconciler
/// changes what runs: with `applyFirst` it applies the repository first). The harness runs in the
/// agent's machine with its configuration in place, its harness installed once per environment
/// disk and revision, its secrets projected into a tmpfs for this run only, output streamed and
/// the timeout enforced; artifacts and the memory snapshot are collected, and the record goes to
/// the history branch (pushed when there is an `origin`).
///
/// Every run that is asked for gets a record, whatever happens: refused before it starts, failed,
/// timed out, interrupted, or the machine lost. One run of an agent at a time, across processes
/// (a second waits, saying so); an apply that must stop the machine waits for the run.
public struct Runner: Sendable {
    public struct Request: Sendable {
        public var agent: String
        /// The agent repository; `ref` is given only when the user named one.
        public var repository: String
        public var path: String
        public var ref: String?
        public var prompt: String?
        public var timeout: Duration?
        public var actor: String
        public var trigger: String
        public var historyBranch: String
        /// Apply the repository at `ref` (default HEAD) to this agent first.
        public var applyFirst: Bool
        /// Continue the harness's previous session for this agent (`continueCommand`).
        public var continueSession = false
        /// Ctrl-C and SIGTERM: the harness's process tree is killed and the run recorded as interrupted.
        public var interruption: Interruption?
        /// Told the run's id when its harness starts (journalled: from then on the run is recorded
        /// whatever happens to this process).
        public var harnessStarted: (@Sendable (String) -> Void)?

        public init(
            agent: String, repository: String, path: String, ref: String? = nil, prompt: String?, timeout: Duration?,
            actor: String, trigger: String = "manual", historyBranch: String, applyFirst: Bool = false,
            interruption: Interruption? = nil
        ) {
            self.agent = agent
            self.repository = repository
            self.path = path
            self.ref = ref
            self.prompt = prompt
            self.timeout = timeout
            self.actor = actor
            self.trigger = trigger
            self.historyBranch = historyBranch
            self.applyFirst = applyFirst
            self.interruption = interruption
        }

        var history: HistoryLocation { HistoryLocation(repository: repository, branch: historyBranch) }
    }

    public struct Outcome: Sendable {
        public var record: RunRecord
        /// The history commit holding the record; nil when it could not be committed.
        public var historyCommit: String?
        /// Why the record is not in history (or not pushed).
        public var historyWarning: String?
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

    /// Runs the agent and returns its record. A run that did not start (refused, or failed
    /// before its harness ran) is recorded, then thrown as the `CoreError` that says why.
    public func run(_ request: Request) async throws -> Outcome {
        guard ResourceName.isValid(request.agent) else {
            throw CoreError(.invalidArgument, "\"\(request.agent)\" is not an agent name (a DNS label)")
        }
        // Not in the agent's lane: runs and apply steps are ordered by the run lock (across
        // processes too), and `exec` works beside a run.
        let runner = self
        return try await BlockingWork.run { try runner.execute(request) }
    }

    /// The whole run, on a blocking-work thread.
    func execute(_ request: Request) throws -> Outcome {
        var attempt = RunAttempt(runner: self, request: request)
        // A name that is no applied agent gets no history folder: refused as it is.
        try attempt.checkApplied()
        // The run lock: one run of an agent at a time, across processes; kept until the record is
        // in. Nobody holds the state's writer lock while waiting for it (apply takes it only to
        // plan and to record), so the order cannot deadlock.
        let lease: (any RunLease)?
        do {
            lease = try ports.machines.lockRun(
                request.agent, for: RunLockHolder(.run, pid: ports.host.processID), deadline: nil,
                interruption: request.interruption, waiting: { progress($0) })
        } catch {
            attempt.absorb(error)
            return try attempt.finish()
        }
        defer { lease?.release() }
        recordInterruptedRuns(of: request.agent)
        // The live log is this run's from here on (`logs -f` never shows an earlier run as current).
        try? ports.state.resetLiveLog(agent: request.agent, run: attempt.runID)
        do {
            try attempt.prepare()
            try perform(&attempt)
        } catch {
            attempt.absorb(error)
        }
        return try attempt.finish()
    }

    /// The state's writer lock for `run --apply`, waited for (on the state's clock, as long as an
    /// apply waits to record) while another apply plans or records.
    func waitForWriterLock(_ request: Request) throws -> any StateWriterLock {
        let deadline = ports.clock.now().addingTimeInterval(Double(Apply.writerPatience.components.seconds))
        var told = false
        while true {
            let error: CoreError
            do {
                return try reporting(.stateUnavailable) { try ports.state.lockForWriting() }
            } catch let failure {
                error = failure
            }
            guard error.code == .stateLocked, ports.clock.now() < deadline else { throw error }
            try checkInterruption(request)
            if !told { progress("\(error.message); waiting for it to finish") }
            told = true
            ports.clock.pause(for: .milliseconds(250))
        }
    }

    /// The steps after the agent's applied state was read: machine, install, secrets, harness, collect.
    func perform(_ attempt: inout RunAttempt) throws {
        guard let bundle = attempt.bundle else { throw CoreError(.internalFailure, "internal: no bundle") }
        let request = attempt.request
        attempt.enter(.machine)
        let channel = try ports.machines.connect(request.agent, timeout: .seconds(30))
        // The machine's egress allowlist as applied (an installation that was interrupted may have
        // left it widened for package registries).
        let egress = EgressPolicy(fields: bundle.fields)
        if let allowlist = egress.allowlist { try? ports.machines.setEgressAllowlist(request.agent, allowlist) }
        attempt.enter(.secrets)
        let secrets = try resolveSecrets(bundle, agent: request.agent)
        // The model gateway serves this run (and only it) until the harness is done.
        let gateway = try openGateway(bundle, secrets: secrets, runID: attempt.runID)
        defer { if let gateway { attempt.usage = gateway.close() } }
        attempt.redactor = Redactor(Array(secrets.values) + (gateway.map { [Array($0.token.utf8)] } ?? []))
        let context = attempt.context
        let rendered = Rendering.render(bundle, run: context)
        let secretFolder = "/run/secrets/\(attempt.runID)"
        let outputFolder = AgentLayout.outputDirectory(bundle.agent)
        let memory = AgentLayout.memoryDirectory(bundle.agent)
        let marker = HarnessInstall.marker(bundle.harness)
        // Configuration, what an earlier interrupted run left (its processes, its secrets), the
        // install check, the secrets folder and an empty output folder: one command in the guest
        // (every command costs a process start, emulated under TCG).
        attempt.enter(.machine)
        progress("\(request.agent): pushing the run's configuration")
        var prepare = "set -e\n" + (try Provisioner.stage(rendered, over: channel)) + GuestScripts.clearEarlierRuns()
        prepare += GuestScripts.prepareRun(
            installMarker: marker, secretFolder: secretFolder, outputFolder: outputFolder, memoryFolder: memory)
        let prepared = String(decoding: try shell(channel, prepare), as: UTF8.self)
        if marker != nil, prepared.contains("not-installed") {
            attempt.enter(.install)
            try install(bundle, channel: channel, actor: request.actor)
        }
        try checkInterruption(request)
        // Secrets into the run's tmpfs folder and the harness's environment. From here on, the
        // run's secrets folder goes whatever happens.
        attempt.enter(.secrets)
        attempt.cleanup = {
            _ = try? self.shell(channel, GuestScripts.removeSecrets(secretFolder) + "\n" + GuestScripts.endRun())
        }
        var environment = rendered.environment
        environment["PATH"] = GuestShell.runPath
        if egress.allowlist != nil { environment.merge(EgressProxyAddress.environment) { own, _ in own } }
        environment["AGENTRY_SECRETS_DIR"] = secretFolder
        // The agent's secrets, and those its MCP servers reference (under the variables the
        // harness's configuration reads them from).
        for binding in bundle.agent.runSecrets(for: bundle.harness.type) {
            guard let value = secrets[binding.ref] else { continue }
            try channel.putFile(secretFolder + "/" + binding.env, value, mode: 0o400)
            environment[binding.env] = String(decoding: value, as: UTF8.self)
        }
        if let gateway {
            // The harness's key is the run's gateway token: the provider's key stays on the host.
            var values = Rendering.values(bundle, run: context)
            values["model.apiKey"] = gateway.token
            for (variable, template) in rendered.tokenEnvironment {
                environment[variable] = Rendering.render(template, values)
            }
        }
        try checkInterruption(request)
        // The harness, streamed (the log kept, redacted), in the run's cgroup.
        guard !rendered.command.isEmpty else {
            throw CoreError(.invalidRepository, "the harness \(bundle.harness.metadata.name) has no command")
        }
        attempt.enter(.harness)
        progress("run \(attempt.runID): \(bundle.harness.metadata.name) for \(request.agent)")
        request.harnessStarted?(attempt.runID)
        let result = try channel.exec(
            GuestScripts.inRunGroup(rendered.command),
            environment: environment.map { "\($0.key)=\($0.value)" }.sorted(),
            directory: AgentLayout.home, stdin: [], timeout: .milliseconds(attempt.timeoutMilliseconds),
            interruption: request.interruption, output: { stream, bytes in attempt.log.feed(stream, bytes) })
        attempt.harnessEnded(result)
        // Secrets removed, leftovers of the harness ended, artifacts and memory collected: one command.
        attempt.enter(.collect)
        var folders = [(outputFolder, RunLimits.storedArtifactBytes)]
        if bundle.agent.memory.snapshot { folders.append((memory, RunLimits.memoryFileBytes)) }
        let collected = try RunCollection.collect(
            channel, folders: folders, secretFolder: secretFolder, redactor: attempt.redactor)
        attempt.cleanup = nil
        attempt.collected(
            collected, outputFolder: outputFolder, memoryFolder: memory, snapshot: bundle.agent.memory.snapshot)
    }

    func checkInterruption(_ request: Request) throws {
        if let signal = request.interruption?.signal { throw RunInterrupted(signal: signal) }
    }

    /// The models a run's calls may go to: the agent's model, then its fallbacks that speak the same
    /// API (the gateway does not translate between APIs; validate warns of the others).
    static func gatewayModels(_ bundle: AgentBundle) -> [Model] {
        guard let primary = bundle.model else { return [] }
        return [primary] + bundle.fallbackModels.filter { $0.api == primary.api }
    }

    /// Opens the gateway for the run when the agent has a model.
    func openGateway(_ bundle: AgentBundle, secrets: [String: [UInt8]], runID: String) throws -> (any GatewaySession)? {
        let models = Self.gatewayModels(bundle)
        guard !models.isEmpty else { return nil }
        let routes = models.map { model in
            GatewayRoute(
                resource: model.metadata.name, model: model.name, api: model.api?.rawValue ?? "chat-completions",
                baseURL: model.baseURL, credential: model.credentialsRef.flatMap { secrets[$0] })
        }
        return try reporting(.machineFailed) {
            try ports.gateway.open(
                GatewayRun(
                    agent: bundle.name, runID: runID, routes: routes, budgetTokens: bundle.agent.run.budgetTokens))
        }
    }

    /// Every secret the run needs, by reference; fails naming the missing ones.
    func resolveSecrets(_ bundle: AgentBundle, agent: String) throws -> [String: [UInt8]] {
        var needed = bundle.agent.runSecrets(for: bundle.harness.type).map { ($0.ref, $0.optional) }
        // The keys of the models the gateway may send the run's calls to (they stay on the host).
        needed += Self.gatewayModels(bundle).compactMap(\.credentialsRef).map { ($0, false) }
        var values: [String: [UInt8]] = [:]
        var missing: [String] = []
        let metadata = bundle.agent.metadata
        for (reference, optional) in needed where values[reference] == nil && !missing.contains(reference) {
            // A secret limited to other agents is refused before anything of it is read.
            if let scope = try reporting(.secretUnavailable, { try ports.secrets.scope(reference) }),
                !scope.allows(agent: agent, owner: metadata.owner, labels: metadata.labels)
            {
                throw CoreError(
                    .secretUnavailable,
                    "the run of \(agent) (owner \(metadata.owner ?? "none")) needs the secret \(reference), which is limited to \(scope.description); `agentry secret set \(reference)` with --allow-agent \(agent) (or its owner or a label) widens it"
                )
            }
            if let value = try reporting(.secretUnavailable, { try ports.secrets.value(reference) }) {
                do {
                    try Secrets.checkLength(reference, value)
                } catch let error as CoreError {
                    throw CoreError(.secretUnavailable, "the run of \(agent): \(error.message)")
                }
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

    /// Records the runs of `agent` whose agentry stopped before they ended (their journal is still
    /// there, and nobody holds the run lock since we do) as interrupted.
    func recordInterruptedRuns(of agent: String) {
        guard let journals = try? ports.state.runJournals() else { return }
        for journal in journals where journal.agent == agent {
            var record = RunRecord(
                runID: journal.runID, agent: agent, owner: journal.owner, desiredCommit: journal.commit,
                agentRevision: journal.revision, trigger: journal.trigger, triggeredBy: journal.actor,
                host: journal.host,
                outcome: .interrupted, startedAt: journal.startedAt, endedAt: ports.clock.now())
            record.phase = RunRecord.Phase(rawValue: journal.phase)
            if let sha256 = journal.promptSHA256 {
                record.prompt = RunRecord.Prompt(
                    sha256: sha256, bytes: journal.promptBytes ?? 0, isDefault: journal.promptIsDefault ?? false)
            }
            record.reason = "agentry (process \(journal.pid)) stopped before the run ended; found by the next run"
            let log = Array(
                "[agentry: the output of this run was not kept: its agentry stopped before the run ended]\n".utf8)
            record.logBytes = log.count
            record.logSHA256 = SHA256.hex(log)
            let files = [
                HistoryFile(path: record.folder + "/record.yaml", bytes: Array(record.yaml.utf8)),
                HistoryFile(path: record.folder + "/log.txt", bytes: log),
            ]
            let location = HistoryLocation(repository: journal.historyRepository, branch: journal.historyBranch)
            if (try? HistoryQueries(ports).commit(
                files, message: record.commitMessage, actor: journal.actor, at: record.endedAt, in: location)) != nil
            {
                try? ports.state.clearRunJournal(agent: agent)
                progress(
                    "recorded run \(journal.runID) of \(agent) as interrupted (its agentry stopped before it ended)")
            }
        }
    }

    /// Runs one of agentry's shell snippets in the guest (the system's PATH, not the run's: nothing
    /// the agent installed stands in for the tools it uses); fails with its error output.
    @discardableResult
    func shell(_ channel: any GuestChannel, _ script: String, timeout: Duration = .seconds(60)) throws -> [UInt8] {
        try GuestCommand.shell(script, over: channel, path: GuestShell.systemPath, timeout: timeout)
    }
}

/// The run was stopped by Ctrl-C or SIGTERM between two of its steps.
struct RunInterrupted: Error {
    var signal: Int32
}
