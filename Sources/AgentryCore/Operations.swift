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
    /// status (137 after a timeout kill).
    public func exec(
        agent: String, argv: [String], timeout: Duration?, environment: [String] = [],
        output: @escaping @Sendable (ProcessStream, [UInt8]) -> Void
    ) async throws -> Int {
        let ports = ports
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
                let result = try channel.exec(
                    argv, environment: base + environment, timeout: timeout, output: output)
                if result.timedOut, let timeout {
                    output(.stderr, Array("agentry: timed out after \(timeout); the command was killed\n".utf8))
                }
                return result.status
            }
        }
    }

    /// The kill switch: stops the machine at once and keeps apply and runs from starting it until
    /// `unkill`. Recorded in the event log and the history branch with who and why. It does not wait
    /// for the agent's lane: whatever holds it finds the machine gone.
    public func kill(
        agent: String, reason: String, actor: String, repository: String?, warn: @escaping @Sendable (String) -> Void
    )
        async throws
    {
        let ports = ports
        try await BlockingWork.run {
            try reporting(.stateUnavailable) {
                try ports.state.setKillSwitch(agent, reason: reason, actor: actor, at: ports.clock.now())
            }
            ports.machines.stop(agent, graceful: false)
            if var record = try reporting(.stateUnavailable, { try ports.state.agent(agent) }) {
                record.machineState = "killed"
                _ = try? ports.state.withWriterLock(waitingUpTo: .seconds(10)) { try ports.state.save(record) }
            }
            recordEvent("kill", agent: agent, reason: reason, actor: actor, repository: repository, warn: warn)
        }
    }

    public func unkill(agent: String, actor: String, repository: String?, warn: @escaping @Sendable (String) -> Void)
        async throws
    {
        let ports = ports
        try await BlockingWork.run {
            guard ports.state.exists else {
                throw CoreError(.notFound, "no agentry state yet; run `agentry apply` first")
            }
            guard try reporting(.stateUnavailable, { try ports.state.killSwitch(agent) }) != nil else {
                throw CoreError(.notFound, "\(agent) is not killed")
            }
            try reporting(.stateUnavailable) {
                try ports.state.setKillSwitch(agent, reason: nil, actor: actor, at: ports.clock.now())
            }
            recordEvent("unkill", agent: agent, reason: nil, actor: actor, repository: repository, warn: warn)
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
