import AgentryMachine
import AgentryState
import AgentryWire
import Foundation

/// Operator actions on one agent's machine: exec, kill, unkill.
public enum Operations {
    /// Opens the state store, or fails saying there is nothing applied yet.
    static func existingStore(_ directory: String) throws -> StateStore {
        guard let store = try Planning.openStore(directory) else {
            throw LoadError("no agentry state in \(directory); run `agentry apply` first")
        }
        return store
    }

    /// Runs a command in the agent's machine, streaming its output; returns its exit status.
    public static func exec(
        agent: String, argv: [String], stateDirectory: String, timeout: Duration?, environment: [String] = [],
        output: (ProcessStream, [UInt8]) -> Void
    ) throws -> Int {
        let store = try existingStore(stateDirectory)
        guard let record = try store.agent(agent) else {
            throw LoadError("no agent \(agent) has been applied (see `agentry status`)")
        }
        if let kill = try store.killSwitch(agent) {
            throw LoadError("\(agent) is killed (\(kill.reason), by \(kill.actor)); `agentry unkill \(agent)` lifts it")
        }
        guard record.lifecycle == "active" else {
            throw LoadError("\(agent) is \(record.lifecycle); its machine does not run")
        }
        let directory = store.directory + "/agents/" + agent
        guard QEMUMachine.runningPID(directory) != nil else {
            throw LoadError("the machine of \(agent) is not running; `agentry apply` starts it again")
        }
        do {
            let channel = try QEMUMachine.connect(directory, name: agent, timeout: .seconds(10))
            var base = ["PATH=" + GuestShell.runPath, "HOME=" + AgentLayout.home]
            // Behind an egress allowlist, commands find the proxy as runs do.
            let fields = record.fields
            let egress = fields.first { $0.0 == "environment.network.egress" }?.1 ?? "none"
            if Applier.allowlist(egress: egress, fields: fields) != nil {
                base += EgressProxy.environment.map { "\($0.key)=\($0.value)" }.sorted()
            }
            let result = try channel.exec(argv, environment: base + environment, timeout: timeout, output: output)
            if result.timedOut { output(.stderr, Array("agentry: timed out after \(timeout!); the command was killed\n".utf8)) }
            return result.status
        } catch let error as MachineError {
            throw LoadError(error.message)
        }
    }

    /// The kill switch: stops the machine at once and keeps apply and runs from starting it until
    /// `unkill`. Recorded in the event log with who and why.
    public static func kill(
        agent: String, reason: String, actor: String, stateDirectory: String, repository: String? = nil,
        warn: (String) -> Void = { _ in }
    ) throws {
        let store: StateStore
        do {
            store = try StateStore.openCreating(stateDirectory)
            try store.setKillSwitch(agent, reason: reason, actor: actor)
        } catch let error as StateError {
            throw LoadError(error.message)
        }
        QEMUMachine.stop(store.directory + "/agents/" + agent, graceful: false)
        if var record = try store.agent(agent) {
            record.machineState = "killed"
            _ = try? store.withWriterLockIfFree { try store.save(record) }
        }
        recordEvent("kill", agent: agent, reason: reason, actor: actor, store: store, repository: repository, warn: warn)
    }

    /// Kill and unkill go to the history branch too, when agentry knows the repository.
    static func recordEvent(
        _ kind: String, agent: String, reason: String?, actor: String, store: StateStore, repository: String?,
        warn: (String) -> Void
    ) {
        guard let repository = repository ?? History.rememberedRepository(stateDirectory: store.directory) else { return }
        do {
            if let warning = try History.audit(
                kind: kind, fields: [("agent", agent)] + (reason.map { [("reason", $0)] } ?? []), actor: actor,
                repository: repository, subject: "\(agent)-\(kind)")
            {
                warn(warning)
            }
        } catch let error as LoadError {
            warn(error.message)
        } catch {
            warn("\(error)")
        }
    }

    public static func unkill(
        agent: String, actor: String, stateDirectory: String, repository: String? = nil, warn: (String) -> Void = { _ in }
    ) throws {
        let store = try existingStore(stateDirectory)
        guard try store.killSwitch(agent) != nil else { throw LoadError("\(agent) is not killed") }
        try store.setKillSwitch(agent, reason: nil, actor: actor)
        recordEvent("unkill", agent: agent, reason: nil, actor: actor, store: store, repository: repository, warn: warn)
    }
}
