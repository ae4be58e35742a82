import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import Foundation

/// What one agent's apply step works from, shared (read-only) by all the steps of an apply.
struct StepContext: Sendable {
    let ports: Ports
    let options: ApplyOptions
    let loaded: LoadedCommit
    let fields: [String: Fields]
    let bundles: [String: AgentBundle]
    let records: [String: AgentRecord]
    let killed: Set<String>
    /// The repository whose history branch holds memory snapshots.
    let historyRepository: String
    let progress: @Sendable (String) -> Void

    var machines: any MachineBackend { ports.machines }

    /// Carries out one agent's planned action; nil when there is nothing to do. Agents whose
    /// machine died (drift) are started again even when their plan says noop. Blocks: call it off
    /// the cooperative pool.
    func step(_ planned: PlannedAction) -> AppliedStep? {
        let name = planned.agent
        let wanted = loaded.desired.agents[name]
        if killed.contains(name) {
            machines.stop(name, graceful: false)
            return AppliedStep(
                agent: name, action: planned.action, detail: "blocked by the kill switch (agentry unkill \(name))",
                failed: false)
        }
        var action = planned.action
        if action == .noop, let wanted, wanted.lifecycle == .active, !machines.isRunning(name) {
            action = .restart  // drift: the machine died or was killed
            try? event(name, "drift", "the machine is not running; starting it again")
        }
        if action == .noop { return nil }
        var booted = false
        do {
            try event(name, "step", "\(action.rawValue): started")
            switch action {
            case .delete:
                machines.stop(name, graceful: true)
                try machines.remove(name, keepDisk: records[name]?.deletionPolicy != DeletionPolicy.delete.rawValue)
                try state { try ports.state.removeAgent(name) }
                try event(name, "step", "delete: done")
                return AppliedStep(agent: name, action: action, detail: "machine stopped", failed: false)
            case .pause, .revoke:
                machines.stop(name, graceful: action == .pause)
                try record(name, wanted: wanted, fields: fields[name], machineState: "stopped", accelerator: nil)
                try event(name, "step", "\(action.rawValue): done")
                return AppliedStep(agent: name, action: action, detail: "machine stopped", failed: false)
            case .replace:
                machines.stop(name, graceful: true)
                try machines.removeDisk(name)
            case .restart:
                machines.stop(name, graceful: true)
            default:
                break
            }
            guard let wanted, let agentFields = fields[name] else {
                throw CoreError(.internalFailure, "internal: no desired state for \(name)")
            }
            let spec = Self.spec(name, fields: agentFields)
            if records[name]?.machineState != nil, action != .replace, !options.recreateMissingDisks,
                !machines.diskExists(name)
            {
                throw CoreError(
                    .machineFailed,
                    "the environment disk \(machines.diskLocation(name)) of \(name) is missing (deleted?), so its files are gone; `agentry apply --recreate-missing-disks` starts it with an empty disk"
                )
            }
            let prepared = try machines.prepare(spec)
            if wanted.lifecycle != .active {
                try record(
                    name, wanted: wanted, fields: agentFields, machineState: "stopped",
                    accelerator: prepared.accelerator)
                let detail = "disk ready; not started (\(wanted.lifecycle.rawValue))"
                return AppliedStep(agent: name, action: action, detail: detail, failed: false)
            }
            let booting = machines.isRunning(name) ? nil : try machines.start(spec)
            booted = true
            try record(
                name, wanted: wanted, fields: agentFields, machineState: "starting", accelerator: prepared.accelerator)
            let channel: any GuestChannel
            var detail = "running"
            if let booting {
                guard let hello = try booting.waitUntilReady(timeout: options.bootTimeout, booting: true) else {
                    throw CoreError(
                        .machineFailed,
                        "the machine \(name) did not report in within \(options.bootTimeout); the end of its serial log:\n\(machines.consoleTail(name))"
                    )
                }
                detail = "running (booted in \(hello.uptimeMilliseconds) ms, disk \(hello.disk))"
                channel = booting
            } else {
                channel = try machines.connect(name, timeout: options.bootTimeout)
            }
            // An operator may have pulled the kill switch while the machine booted.
            if try state({ try ports.state.killSwitch(name) }) != nil {
                machines.stop(name, graceful: false)
                return AppliedStep(agent: name, action: action, detail: "killed while starting", failed: false)
            }
            // The agent's configuration (instructions, skills, rendered harness files) goes in
            // over the control channel: an update needs no reboot.
            guard let bundle = bundles[name] else {
                throw CoreError(.internalFailure, "internal: no bundle for \(name)")
            }
            let rendered = Rendering.render(bundle, run: .none)
            try Provisioner.push(rendered, over: channel, fresh: prepared.freshDisk)
            if prepared.freshDisk {
                detail += try restoreMemory(bundle, channel: channel)
            }
            detail += action == .update ? ", configuration pushed (\(rendered.files.count) files)" : ""
            try record(name, wanted: nil, fields: nil, machineState: "running", accelerator: nil)
            try event(name, "step", "\(action.rawValue): done, \(detail)")
            return AppliedStep(agent: name, action: action, detail: detail, failed: false)
        } catch {
            if booted {
                machines.stop(name, graceful: false)
                try? record(name, wanted: nil, fields: nil, machineState: "failed", accelerator: nil)
            }
            return fail(name, action, error)
        }
    }

    /// The machine for an agent, from its resolved environment fields.
    static func spec(_ name: String, fields: Fields) -> MachineSpec {
        let values = Dictionary(fields, uniquingKeysWith: { a, _ in a })
        let packages = fields.filter { $0.0 == "environment.packages.apt" }.flatMap { EgressPolicy.listValue($0.1) }
        let memory = Quantity(values["environment.resources.memory"] ?? "512Mi")?.bytes ?? 512 << 20
        return MachineSpec(
            name: name, base: values["environment.base"] ?? "minimal", packages: packages,
            cpus: Int(values["environment.resources.cpus"] ?? "1") ?? 1, memoryMiB: Int(max(64, memory >> 20)),
            diskBytes: Quantity(values["environment.resources.disk"] ?? "4Gi")?.bytes ?? 4 << 30,
            egress: EgressPolicy(fields: fields))
    }

    /// Memory survives the machine: a new environment disk gets the agent's memory folder back from
    /// the latest snapshot in history.
    func restoreMemory(_ bundle: AgentBundle, channel: any GuestChannel) throws -> String {
        let location = HistoryLocation(repository: historyRepository, branch: options.historyBranch)
        guard let (runID, files) = try HistoryQueries(ports).latestMemory(agent: bundle.name, in: location),
            !files.isEmpty
        else { return "" }
        let folder = AgentLayout.memoryDirectory(bundle.agent)
        let placed = files.map { BundleFile(path: folder + "/" + $0.path, bytes: $0.bytes) }
        try Provisioner.unpack(placed, over: channel, what: "restoring the memory of \(bundle.name)")
        try event(bundle.name, "memory", "restored \(files.count) memory files from run \(runID)")
        return ", memory restored from run \(runID) (\(files.count) files)"
    }

    func fail(_ name: String, _ action: Action, _ error: any Error) -> AppliedStep {
        let message = describe(error)
        try? event(name, "step", "\(action.rawValue): failed: \(message.split(separator: "\n").first ?? "")")
        return AppliedStep(agent: name, action: action, detail: message, failed: true)
    }

    func event(_ name: String?, _ kind: String, _ message: String) throws {
        try state {
            try ports.state.append(
                EventRecord(time: ports.clock.now(), agent: name, kind: kind, actor: options.actor, message: message))
        }
    }

    func state<T>(_ body: () throws -> T) throws -> T {
        try reporting(.stateUnavailable, body)
    }

    /// Records the applied revision (when `wanted` is given) and the machine's state.
    func record(_ name: String, wanted: DesiredAgent?, fields: Fields?, machineState: String, accelerator: String?)
        throws
    {
        try state {
            var record = try ports.state.agent(name)
            if let wanted {
                record = AgentRecord(
                    name: name, appliedRevision: wanted.revision, appliedFields: fields ?? [],
                    appliedCommit: loaded.commit,
                    lifecycle: wanted.lifecycle.rawValue, deletionPolicy: wanted.deletionPolicy.rawValue,
                    machineID: name,
                    machineState: machineState, accelerator: accelerator ?? record?.accelerator,
                    updatedAt: ports.clock.now(),
                    lastRunAt: record?.lastRunAt)
            }
            guard var record else { return }
            record.machineState = machineState
            record.accelerator = accelerator ?? record.accelerator
            record.updatedAt = ports.clock.now()
            try ports.state.save(record)
        }
    }
}
