import AgentryBasics
import AgentryRender
import AgentryWire

/// Operator actions on one agent's machine: exec, kill, unkill.
public struct Operations: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    /// Runs a command in the agent's machine (in its lane), streaming its output; returns its exit
    /// status (137 after a timeout kill). With `terminal`, on a pseudo-terminal in the guest (its
    /// output all comes as standard output).
    public func exec(
        agent: String, argv: [String], timeout: Duration?, environment: [String] = [], stdin: [UInt8] = [],
        terminal: TerminalSession? = nil, output: @escaping @Sendable (ProcessStream, [UInt8]) -> Void
    ) async throws -> Int {
        let ports = ports
        let record = try reachable(agent)
        // Not in the agent's lane: a command works beside a run or an apply's step.
        return try await BlockingWork.run {
            guard ports.machines.isRunning(agent) else {
                throw CoreError(
                    .machineNotRunning, "the machine of \(agent) is not running; `agentry apply` starts it again")
            }
            return try reporting(.machineFailed) {
                let channel = try ports.machines.connect(agent, timeout: .seconds(10))
                var base = ["PATH=" + GuestShell.runPath, "HOME=" + AgentLayout.home]
                // Behind an egress allowlist, commands find the proxy as runs do.
                if EgressPolicy(fields: record.fields).allowlist != nil {
                    base += EgressProxyAddress.environment.map { "\($0.key)=\($0.value)" }.sorted()
                }
                let result =
                    try terminal.map { terminal in
                        try channel.execTerminal(
                            argv, environment: base + environment, directory: AgentLayout.home, terminal: terminal,
                            timeout: timeout, output: { output(.stdout, $0) })
                    }
                    ?? channel.exec(
                        argv, environment: base + environment, directory: AgentLayout.home, stdin: stdin,
                        timeout: timeout, interruption: nil, output: output)
                if result.timedOut, let timeout {
                    output(.stderr, Array("agentry: timed out after \(timeout.goStyle); the command was killed\n".utf8))
                }
                return result.status
            }
        }
    }

    /// The applied record of an agent whose machine may be reached (applied, not killed, active).
    func reachable(_ agent: String) throws -> AgentRecord {
        guard ports.state.exists else {
            throw CoreError(.notFound, "no agentry state yet; run `agentry apply` first")
        }
        guard let record = try reporting(.stateUnavailable, { try ports.state.agent(agent) }) else {
            throw CoreError(.notFound, "no agent \(agent) has been applied (see `agentry status`)")
        }
        if let kill = try reporting(.stateUnavailable, { try ports.state.killSwitch(agent) }) {
            throw CoreError(
                .agentBlocked,
                "\(agent) is killed (\(kill.reason), by \(kill.actor)); `agentry unkill \(agent)` lifts it")
        }
        guard record.lifecycle == "active" else {
            throw CoreError(.agentBlocked, "\(agent) is \(record.lifecycle); its machine does not run")
        }
        return record
    }

    /// The kill switch: stops the machine at once and keeps apply and runs from starting it until
    /// `unkill`. Recorded in the event log and the history branch with who and why. It does not wait
    /// for the agent's lane: whatever holds it finds the machine gone.
    ///
    /// Idempotent: an agent already killed stays killed as it was (the earlier reason and who are
    /// returned). An agent neither applied nor in the repository is refused unless `force` (to
    /// pre-empt one that is yet to come): a typo must not look like a stopped agent.
    @discardableResult
    public func kill(
        agent: String, reason: String, actor: String, repository: String?, force: Bool = false,
        warn: @escaping @Sendable (String) -> Void
    )
        async throws -> KillSwitch?
    {
        let ports = ports
        return try await BlockingWork.run {
            if let existing = try reporting(.stateUnavailable, { try ports.state.killSwitch(agent) }) {
                return existing
            }
            if !force {
                try checkKnown(agent, repository: repository)
            }
            try reporting(.stateUnavailable) {
                try ports.state.setKillSwitch(agent, reason: reason, actor: actor, at: ports.clock.now())
            }
            ports.machines.stop(agent, graceful: false)
            if var record = try reporting(.stateUnavailable, { try ports.state.agent(agent) }) {
                record.machineState = "killed"
                _ = try? ports.state.withWriterLock(waitingUpTo: .seconds(10)) { try ports.state.save(record) }
            }
            recordEvent("kill", agent: agent, reason: reason, actor: actor, repository: repository, warn: warn)
            return nil
        }
    }

    /// Fails unless `agent` is in the state or in the repository (at HEAD of the one given, else of
    /// the one the state applied).
    func checkKnown(_ agent: String, repository: String?) throws {
        if try reporting(.stateUnavailable, { try ports.state.agent(agent) }) != nil { return }
        let location = repository ?? ports.state.rememberedRepository()
        var looked = "the state"
        if let location {
            let path = (try? Planning.owner(ports.state))??.path ?? ""
            if let loaded = try? ports.reader(location, path: path).load("HEAD") {
                if loaded.desired.agents[agent] != nil
                    || loaded.report.index.agents.contains(where: { $0.name == agent })
                {
                    return
                }
                looked = "the state or the repository \(location)"
            }
        }
        throw CoreError(
            .notFound,
            "no agent \(agent) in \(looked); `agentry kill --force \(agent)` sets the switch for an agent yet to come")
    }

    /// Lifts the kill switch; false (and nothing done) when the agent was not killed.
    @discardableResult
    public func unkill(agent: String, actor: String, repository: String?, warn: @escaping @Sendable (String) -> Void)
        async throws -> Bool
    {
        let ports = ports
        return try await BlockingWork.run {
            guard ports.state.exists,
                try reporting(.stateUnavailable, { try ports.state.killSwitch(agent) }) != nil
            else { return false }
            try reporting(.stateUnavailable) {
                try ports.state.setKillSwitch(agent, reason: nil, actor: actor, at: ports.clock.now())
            }
            recordEvent("unkill", agent: agent, reason: nil, actor: actor, repository: repository, warn: warn)
            return true
        }
    }

    /// Kill and unkill go to the history branch too, when agentry knows the repository.
    func recordEvent(
        _ kind: String, agent: String, reason: String?, actor: String, repository: String?, warn: (String) -> Void
    ) {
        guard let repository = repository ?? ports.state.rememberedRepository() else { return }
        let record = AuditRecord(
            kind: kind, subject: "\(agent)-\(kind)",
            fields: [("agent", agent)] + (reason.map { [("reason", $0)] } ?? []),
            actor: actor, host: ports.host.hostName, at: ports.clock.now())
        do {
            let committed = try HistoryQueries(ports).commit(
                record, in: HistoryLocation(repository: repository, branch: ports.host.historyBranch))
            if let warning = committed.pushWarning { warn(warning) }
        } catch {
            warn(describe(error))
        }
    }
}
