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
    /// The apply's audit journal entry.
    let auditID: String
    /// Agents whose run lock the caller holds (a run that applies first).
    let heldRunLocks: Set<String>
    /// The repository whose history branch holds memory snapshots.
    let historyRepository: String
    let progress: @Sendable (String) -> Void

    var machines: any MachineBackend { ports.machines }

    /// Carries out one agent's planned action; nil when there is nothing to do. Every step measures
    /// before it acts and records the applied revision only once the machine is as it says, so a
    /// step repeated after a crash converges. Blocks: call it off the cooperative pool.
    func step(_ planned: PlannedAction) -> AppliedStep? {
        let name = planned.agent
        let wanted = loaded.desired.agents[name]
        if killed.contains(name) || planned.action == .blocked {
            machines.stop(name, graceful: false)
            return AppliedStep(
                agent: name, action: planned.action, detail: "blocked by the kill switch (agentry unkill \(name))",
                failed: false)
        }
        let action = planned.action
        if action == .noop { return nil }
        // A run in progress is never killed by an apply: the step waits for it (revoking does not:
        // it stops the agent now, as the kill switch does). Another apply carrying out this agent
        // is left to it; one that finished while this step waited may have done its work.
        var lease: (any RunLease)?
        if action != .revoke && !heldRunLocks.contains(name) {
            if let other = machines.runLockHolder(name), other.kind == .apply {
                return skipped(name, action, "\(other.description) is carrying it out")
            }
            do {
                lease = try machines.lockRun(
                    name, for: RunLockHolder(.apply, pid: ports.host.processID), deadline: .now + options.runWait,
                    interruption: nil, waiting: { progress("\($0) before \(action.rawValue)") })
            } catch {
                return fail(name, action, error)
            }
            if let reason = doneMeanwhile(name, planned: planned) {
                lease?.release()
                return skipped(name, action, reason)
            }
        }
        defer { lease?.release() }
        let drift = planned.reasons.filter { $0.field == "machine" || $0.field.hasPrefix("machine.") }
        if !drift.isEmpty {
            try? event(
                name, "drift", drift.map { "\($0.field): \($0.old ?? "") → \($0.new ?? "")" }.joined(separator: "; "))
        }
        var booted = false
        do {
            try event(name, "step", "\(action.rawValue): started")
            switch action {
            case .delete:
                machines.stop(name, graceful: true)
                try machines.remove(
                    name, keepDisk: records[name]?.deletionPolicy != DeletionPolicy.delete.rawValue,
                    owner: records[name]?.owner)
                try state { try ports.state.removeAgent(name) }
                return done(name, action, "machine stopped")
            case .pause, .revoke:
                machines.stop(name, graceful: action == .pause)
                try markApplied(name, wanted, machineState: "stopped", accelerator: nil)
                return done(name, action, "machine stopped")
            default:
                break
            }
            guard let wanted, let agentFields = fields[name] else {
                throw CoreError(.internalFailure, "internal: no desired state for \(name)")
            }
            let spec = MachineSpec(name, fields: agentFields)
            // The image and the harness layer are made before the machine is touched: an
            // installation that fails leaves the agent running as it was.
            try machines.provide(spec)
            // Every dimension, whatever the action says: a machine running with other resources
            // than wanted is restarted (a harness bump and a memory change in one commit).
            let observed = machines.observe(name)
            let resized =
                observed.process == .running && observed.resources.map { $0 != MachineResources(spec) } ?? false
            if action == .replace {
                machines.stop(name, graceful: true)
                try machines.removeDisk(name)
            } else if action == .restart || resized {
                machines.stop(name, graceful: true)
            }
            if records[name]?.machineState != nil, action != .replace, !options.recreateMissingDisks,
                !machines.diskExists(name)
            {
                throw CoreError(
                    .machineFailed,
                    "the environment disk \(machines.diskLocation(name)) of \(name) is missing (deleted?), so its files are gone; `agentry apply --recreate-missing-disks` starts it with an empty disk"
                )
            }
            // A name new to the state may find a disk retired under it: its own owner's comes back,
            // another owner's is set aside.
            var claimed = ""
            if records[name] == nil {
                switch try machines.claimDisk(name, owner: owner(name)) {
                case .none: break
                case .kept: claimed = ", its retired disk taken back"
                case .setAside(let place):
                    claimed = ", a disk retired by another owner set aside (\(place))"
                    try? event(name, "disk", "a disk retired by another owner was set aside to \(place)")
                }
            }
            // A new disk owes the agent its memory: journalled before the disk is made, so that an
            // apply killed between making it and recording it still owes the memory.
            if !machines.diskExists(name) { try oweMemory(name, wanted) }
            let prepared = try machines.prepare(spec)
            try markStarting(name, wanted, freshDisk: prepared.freshDisk)
            if wanted.lifecycle != .active {
                try markApplied(name, wanted, machineState: "stopped", accelerator: prepared.accelerator)
                return done(name, action, "disk ready; not started (\(wanted.lifecycle.rawValue))")
            }
            // A run that applies first says what it waits for (an apply shows its steps itself).
            let tell: (String) -> Void = { if heldRunLocks.contains(name) { progress("\(name): \($0)") } }
            let running = machines.isRunning(name)
            if !running { tell("booting its machine") }
            let booting = running ? nil : try machines.start(spec)
            booted = true
            let channel: any GuestChannel
            var detail = "running"
            if let booting {
                guard let hello = try booting.waitUntilReady(timeout: options.bootTimeout, booting: true) else {
                    throw CoreError(
                        .machineFailed,
                        "the machine \(name) did not report in within \(options.bootTimeout.goStyle); the end of its serial log:\n\(machines.consoleTail(name))"
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
            tell("pushing its configuration")
            try Provisioner.push(rendered, over: channel, fresh: prepared.freshDisk)
            if let allowlist = spec.egress.allowlist, machines.egressAllowlist(name) != allowlist {
                try machines.setEgressAllowlist(name, allowlist)
            }
            if try state({ try ports.state.agent(name)?.restorePending }) == true {
                detail += try restoreMemory(bundle, channel: channel)
            }
            detail += claimed
            detail += action == .update ? ", configuration pushed (\(rendered.files.count) files)" : ""
            detail += resized && action != .restart ? ", restarted with the wanted resources" : ""
            try markApplied(name, wanted, machineState: "running", accelerator: prepared.accelerator)
            return done(name, action, detail)
        } catch {
            if booted {
                machines.stop(name, graceful: false)
                try? markState(name, "failed", detail: describe(error))
            }
            return fail(name, action, error)
        }
    }

    /// A step carried out: the event log and the apply's audit journal say so.
    func done(_ name: String, _ action: Action, _ detail: String) -> AppliedStep {
        try? event(name, "step", "\(action.rawValue): done, \(detail)")
        try? state { try ports.state.appendAudit(auditID, step: "\(action.rawValue) \(name): done") }
        return AppliedStep(agent: name, action: action, detail: detail, failed: false)
    }

    /// A step left to another apply: not a failure, and nothing of this agent was touched.
    func skipped(_ name: String, _ action: Action, _ reason: String) -> AppliedStep {
        try? event(name, "step", "\(action.rawValue): skipped, \(reason)")
        try? state { try ports.state.appendAudit(auditID, step: "\(action.rawValue) \(name): skipped") }
        return AppliedStep(agent: name, action: action, detail: reason, failed: false, skipped: true)
    }

    /// Why the step has nothing left to do, when another apply carried out this agent while the step
    /// waited for its run lock: its record changed since planning and now says what is wanted.
    func doneMeanwhile(_ name: String, planned: PlannedAction) -> String? {
        guard let now = try? state({ try ports.state.agent(name) }) else {
            return planned.action == .delete && records[name] != nil ? "another apply deleted it meanwhile" : nil
        }
        guard now != records[name], planned.action != .delete, let wanted = loaded.desired.agents[name],
            now.appliedRevision == wanted.revision, now.lifecycle == wanted.lifecycle.rawValue
        else { return nil }
        let running = now.machineState == "running" && machines.isRunning(name)
        let stopped = now.machineState == "stopped" && !machines.isRunning(name)
        guard wanted.lifecycle == .active ? running : stopped else { return nil }
        return "another apply carried it out meanwhile"
    }

    /// Memory survives the machine: a new environment disk gets the agent's memory folder back from
    /// the latest snapshot in history.
    func restoreMemory(_ bundle: AgentBundle, channel: any GuestChannel) throws -> String {
        let location = HistoryLocation(repository: historyRepository, branch: options.historyBranch)
        let latest: (runID: String, files: [HistoryFile])?
        do {
            latest = try HistoryQueries(ports).latestMemory(
                agent: bundle.name, owner: bundle.agent.metadata.owner, in: location)
        } catch let error as CoreError where error.code == .agentBlocked {
            // Another owner's memory: not this agent's to have.
            try event(bundle.name, "memory", error.message)
            return ", memory not restored (\(error.message))"
        }
        guard let (runID, files) = latest, !files.isEmpty else { return "" }
        let folder = AgentLayout.memoryDirectory(bundle.agent)
        let placed = files.map { BundleFile(path: folder + "/" + $0.path, bytes: $0.bytes) }
        try Provisioner.unpack(placed, over: channel, what: "restoring the memory of \(bundle.name)")
        try event(bundle.name, "memory", "restored \(files.count) memory files from run \(runID)")
        return ", memory restored from run \(runID) (\(files.count) files)"
    }

    func fail(_ name: String, _ action: Action, _ error: any Error) -> AppliedStep {
        let message = describe(error)
        try? event(name, "step", "\(action.rawValue): failed: \(message.split(separator: "\n").first ?? "")")
        try? state { try ports.state.appendAudit(auditID, step: "\(action.rawValue) \(name): failed") }
        return AppliedStep(agent: name, action: action, detail: message, failed: true)
    }

    func event(_ name: String?, _ kind: String, _ message: String) throws {
        try state {
            try ports.state.append(
                EventRecord(time: ports.clock.now(), agent: name, kind: kind, actor: options.actor, message: message))
        }
    }

    /// The state, under the writer lock held only as long as `body` (a step never holds it while
    /// it waits on a machine, so another apply goes on beside a stuck guest).
    func state<T>(_ body: () throws -> T) throws -> T {
        try reporting(.stateUnavailable) {
            try ports.state.withWriterLock(waitingUpTo: Apply.writerPatience, body)
        }
    }

    /// The step has begun: the machine is `starting` under the revision applied before (none for a
    /// new agent), and a new disk's memory restore is owed.
    func markStarting(_ name: String, _ wanted: DesiredAgent, freshDisk: Bool) throws {
        try state {
            var record =
                try ports.state.agent(name)
                ?? AgentRecord(
                    name: name, appliedRevision: "", appliedFields: [], appliedCommit: "",
                    lifecycle: wanted.lifecycle.rawValue, deletionPolicy: wanted.deletionPolicy.rawValue,
                    machineID: name,
                    updatedAt: ports.clock.now(), owner: owner(name))
            record.machineState = "starting"
            record.machineDetail = nil
            record.restorePending = record.restorePending || freshDisk
            record.updatedAt = ports.clock.now()
            try ports.state.save(record)
        }
    }

    /// A disk is about to be made: the agent is owed its memory (the machine's state is left as it
    /// was: nothing says a disk exists yet).
    func oweMemory(_ name: String, _ wanted: DesiredAgent) throws {
        try state {
            var record =
                try ports.state.agent(name)
                ?? AgentRecord(
                    name: name, appliedRevision: "", appliedFields: [], appliedCommit: "",
                    lifecycle: wanted.lifecycle.rawValue, deletionPolicy: wanted.deletionPolicy.rawValue,
                    machineID: name, updatedAt: ports.clock.now(), owner: owner(name))
            guard !record.restorePending else { return }
            record.restorePending = true
            record.updatedAt = ports.clock.now()
            try ports.state.save(record)
        }
    }

    /// The machine is as `wanted` says: its revision, fields and lifecycle are recorded as applied.
    func markApplied(_ name: String, _ wanted: DesiredAgent?, machineState: String, accelerator: String?) throws {
        try state {
            let existing = try ports.state.agent(name)
            guard let wanted else { return }
            let record = AgentRecord(
                name: name, appliedRevision: wanted.revision, appliedFields: fields[name] ?? [],
                appliedCommit: loaded.commit, lifecycle: wanted.lifecycle.rawValue,
                deletionPolicy: wanted.deletionPolicy.rawValue, machineID: name, machineState: machineState,
                accelerator: accelerator ?? existing?.accelerator, updatedAt: ports.clock.now(),
                lastRunAt: existing?.lastRunAt, machineDetail: nil,
                restorePending: machineState == "running" ? false : existing?.restorePending ?? false,
                owner: owner(name))
            try ports.state.save(record)
        }
    }

    /// The agent's owner, as its resolved fields say.
    func owner(_ name: String) -> String? {
        fields[name]?.first { $0.0 == "owner" }?.1
    }

    func markState(_ name: String, _ machineState: String, detail: String?) throws {
        try state {
            guard var record = try ports.state.agent(name) else { return }
            record.machineState = machineState
            record.machineDetail = detail
            record.updatedAt = ports.clock.now()
            try ports.state.save(record)
        }
    }
}
