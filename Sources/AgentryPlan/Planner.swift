import AgentryModel

/// One agent as it actually is: what was last applied and what its machine is doing.
public struct ActualAgent: Sendable, Hashable {
    public var name: String
    public var appliedRevision: String
    /// The resolved fields as applied, for reasons (`model.name: old → new`).
    public var appliedFields: [String: String]
    public var lifecycle: Lifecycle
    public var deletionPolicy: DeletionPolicy
    /// The machine's state as last observed (`running`, `stopped`, `failed`, …), if it has one.
    public var machineState: String?
    /// What measuring the machine found, when it was measured.
    public var health: MachineHealth
    /// The operator's kill switch, when it is on.
    public var killed: KillNotice?

    public init(
        name: String, appliedRevision: String, appliedFields: [String: String], lifecycle: Lifecycle,
        deletionPolicy: DeletionPolicy, machineState: String? = nil, health: MachineHealth = .healthy,
        killed: KillNotice? = nil
    ) {
        self.name = name
        self.appliedRevision = appliedRevision
        self.appliedFields = appliedFields
        self.lifecycle = lifecycle
        self.deletionPolicy = deletionPolicy
        self.machineState = machineState
        self.health = health
        self.killed = killed
    }
}

/// Whether an agent's machine is as its applied state says, from measuring it.
public enum MachineHealth: Sendable, Hashable {
    case healthy
    /// It is not: what repairs it, and why (`machine: died (exit 137 at …) → running`).
    case drifted(repair: Repair, reasons: [Change])

    public enum Repair: String, Sendable, Hashable {
        /// Start it again (it died, was stopped, failed, or runs with other resources).
        case restart
        /// Finish its configuration without a reboot (the last apply stopped half-way).
        case repair
        /// Stop it (it runs although its agent is paused or revoked).
        case stop
    }

    /// A short token for digests: `healthy`, or `repair:field=old,...`.
    func appendToken(to bytes: inout [UInt8]) {
        switch self {
        case .healthy: bytes += "healthy".utf8
        case .drifted(let repair, let reasons):
            bytes += repair.rawValue.utf8
            bytes.append(UInt8(ascii: ":"))
            for (index, reason) in reasons.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                bytes += reason.field.utf8
                bytes.append(UInt8(ascii: "="))
                bytes += (reason.old ?? "").utf8
            }
        }
    }
}

/// Who killed an agent and why.
public struct KillNotice: Sendable, Hashable {
    public var reason: String
    public var actor: String

    public init(reason: String, actor: String) {
        self.reason = reason
        self.actor = actor
    }
}

public struct ActualState: Sendable {
    public var agents: [String: ActualAgent]

    public init(agents: [String: ActualAgent] = [:]) {
        self.agents = agents
    }

    /// A digest of everything the planner reads, so a saved plan can tell whether it went stale.
    public var digest: String {
        // `revision lifecycle machineState health[ killed:reason]` per agent, assembled as bytes
        // (this runs over every agent of every plan).
        var message = Canonical.Message()
        var value: [UInt8] = []
        for name in agents.keys.sorted() {
            let agent = agents[name]!
            value.removeAll(keepingCapacity: true)
            value += agent.appliedRevision.utf8
            value.append(UInt8(ascii: " "))
            value += agent.lifecycle.rawValue.utf8
            value.append(UInt8(ascii: " "))
            value += (agent.machineState ?? "-").utf8
            value.append(UInt8(ascii: " "))
            agent.health.appendToken(to: &value)
            if let killed = agent.killed {
                value += " killed:".utf8
                value += killed.reason.utf8
            }
            message.append(name, value)
        }
        return message.digest
    }
}

/// The smallest step that converges one agent. Ordered by how disruptive it is.
public enum Action: String, Sendable, CaseIterable, Codable, Comparable {
    /// Nothing to do.
    case noop
    /// Configuration only (model, fallbacks, instructions, skills, secret references, run defaults): no reboot.
    case update
    /// The machine runs but is not as applied (a configuration push that did not finish): put it right
    /// without a reboot.
    case repair
    /// CPUs, memory or network changed: the machine reboots, the disk stays.
    case restart
    /// The harness changed: it is installed anew, the environment disk stays.
    case reinstall
    /// The environment's base image or packages changed: a new machine and environment disk.
    case replace
    /// A new agent: a machine is created.
    case create
    /// Lifecycle `paused`: the machine stops, everything is kept.
    case pause
    /// Back to `active` from paused or revoked.
    case resume
    /// Lifecycle `revoked`: stop now, withdraw secrets, refuse runs.
    case revoke
    /// The agent left the repository; its disk is kept or removed per `deletionPolicy`.
    case delete
    /// The operator's kill switch is on: nothing is done until it is lifted.
    case blocked

    public static func < (lhs: Action, rhs: Action) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// One field's change, `field: old → new`. Secret references are shown by name, never resolved.
public struct Change: Sendable, Hashable {
    public var field: String
    public var old: String?
    public var new: String?

    public init(field: String, old: String?, new: String?) {
        self.field = field
        self.old = old
        self.new = new
    }
}

public struct PlannedAction: Sendable, Hashable {
    public var agent: String
    public var action: Action
    public var reasons: [Change]
    /// Extra facts for the reader ("environment disk removed (deletionPolicy: delete)").
    public var notes: [String]
    public var fromRevision: String?
    public var toRevision: String?
}

public struct Plan: Sendable {
    /// Every agent, sorted by name, `noop`s included.
    public var actions: [PlannedAction]

    public init(actions: [PlannedAction]) {
        self.actions = actions
    }

    /// The actions apply carries out (blocked agents are shown, but nothing is done to them).
    public var changes: [PlannedAction] { actions.filter { $0.action != .noop && $0.action != .blocked } }
    public var hasChanges: Bool { actions.contains { $0.action != .noop && $0.action != .blocked } }
    /// What a reader is shown: every action but `noop`, blocked agents included.
    public var listed: [PlannedAction] { actions.filter { $0.action != .noop } }

    public func count(_ action: Action) -> Int { actions.lazy.filter { $0.action == action }.count }
}

public struct PlanOptions: Sendable {
    /// Allow a desired state with no agents at all to delete every running agent.
    public var allowEmpty: Bool
    /// Allow deleting more than half of the running agents at once.
    public var allowMassDelete: Bool

    public init(allowEmpty: Bool = false, allowMassDelete: Bool = false) {
        self.allowEmpty = allowEmpty
        self.allowMassDelete = allowMassDelete
    }
}

/// Why the planner refused to plan.
public enum PlanRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    case emptyDesiredState(running: Int)
    case massDelete(deleting: Int, running: Int)

    public var description: String {
        switch self {
        case .emptyDesiredState(let running):
            return
                "the repository declares no agents, which would delete all \(running) running agent\(running == 1 ? "" : "s"); if that is intended, pass --allow-empty"
        case .massDelete(let deleting, let running):
            return
                "the plan deletes \(deleting) of \(running) running agents (more than half); if that is intended, pass --allow-mass-delete"
        }
    }
}

/// Compares desired and actual state. A pure function: no I/O, same inputs, same plan.
public enum Planner {
    /// Plans every agent. `fields` gives the resolved fields of a desired agent; it is asked only for
    /// agents that exist on both sides and changed, and may return nil when they are not at hand
    /// (reasons then show the revision).
    public static func plan(
        desired: DesiredState, actual: ActualState, options: PlanOptions = PlanOptions(),
        fields: (DesiredAgent) -> Fields?
    ) -> Result<Plan, PlanRefusal> {
        let running = actual.agents.count
        if desired.agents.isEmpty && running > 0 && !options.allowEmpty {
            return .failure(.emptyDesiredState(running: running))
        }
        let deleting = actual.agents.keys.filter { desired.agents[$0] == nil }.count
        // --allow-empty already consents to deleting everything.
        let consented = options.allowMassDelete || (desired.agents.isEmpty && options.allowEmpty)
        if deleting > 1 && deleting * 2 > running && !consented {
            return .failure(.massDelete(deleting: deleting, running: running))
        }
        var actions: [PlannedAction] = []
        for name in Set(desired.agents.keys).union(actual.agents.keys).sorted() {
            switch (desired.agents[name], actual.agents[name]) {
            case (let wanted?, nil):
                actions.append(create(wanted))
            case (nil, let existing?):
                actions.append(blocked(delete(existing), existing.killed))
            case (let wanted?, let existing?) where existing.appliedRevision.isEmpty:
                // The machine was being created when the last apply stopped: create it again.
                var again = create(wanted)
                again.notes.append("the last apply did not finish creating it")
                actions.append(blocked(again, existing.killed))
            case (let wanted?, let existing?):
                actions.append(blocked(converge(wanted, existing, fields: { fields(wanted) }), existing.killed))
            case (nil, nil):
                continue
            }
        }
        return .success(Plan(actions: actions))
    }

    /// A killed agent's action is shown, held back, with who and why.
    static func blocked(_ planned: PlannedAction, _ killed: KillNotice?) -> PlannedAction {
        guard let killed else { return planned }
        var held = planned
        held.action = .blocked
        let pending = planned.action == .noop ? [] : ["held back: \(planned.action.rawValue)"]
        held.notes =
            ["killed by \(killed.actor): \(killed.reason) (agentry unkill \(planned.agent) lifts it)"] + pending
            + planned.notes
        return held
    }

    static func create(_ wanted: DesiredAgent) -> PlannedAction {
        let reasons = (wanted.references + [("lifecycle", wanted.lifecycle.rawValue)]).map {
            Change(field: $0.0, old: nil, new: $0.1)
        }
        var notes = ["new agent"]
        if wanted.lifecycle != .active {
            notes.append("created \(wanted.lifecycle.rawValue): the machine is not started")
        }
        return PlannedAction(
            agent: wanted.name, action: .create, reasons: reasons, notes: notes, fromRevision: nil,
            toRevision: wanted.revision)
    }

    static func delete(_ existing: ActualAgent) -> PlannedAction {
        let disk =
            existing.deletionPolicy == .delete
            ? "environment disk removed (deletionPolicy: delete)" : "environment disk retained (deletionPolicy: retain)"
        return PlannedAction(
            agent: existing.name, action: .delete, reasons: [], notes: ["removed from the repository", disk],
            fromRevision: existing.appliedRevision, toRevision: nil)
    }

    static func converge(_ wanted: DesiredAgent, _ existing: ActualAgent, fields: () -> Fields?) -> PlannedAction {
        let lifecycleChanged = wanted.lifecycle != existing.lifecycle
        let revisionChanged = wanted.revision != existing.appliedRevision
        guard lifecycleChanged || revisionChanged else {
            // The repository and what was applied agree; the machine may not.
            guard case .drifted(let repair, let reasons) = existing.health else {
                return PlannedAction(
                    agent: wanted.name, action: .noop, reasons: [], notes: [], fromRevision: existing.appliedRevision,
                    toRevision: wanted.revision)
            }
            return PlannedAction(
                agent: wanted.name, action: action(repairing: repair, wanted.lifecycle), reasons: reasons,
                notes: ["drift: the machine is not as applied"], fromRevision: existing.appliedRevision,
                toRevision: wanted.revision)
        }
        let reasons = revisionChanged || lifecycleChanged ? changes(from: existing.appliedFields, to: fields()) : []
        var action = classify(reasons)
        if reasons.isEmpty && revisionChanged { action = .update }
        var notes: [String] = []
        if lifecycleChanged {
            let configuration = action
            switch (existing.lifecycle, wanted.lifecycle) {
            case (_, .revoked): action = .revoke
            case (_, .paused): action = .pause
            case (_, .active): action = .resume
            }
            if configuration != .noop {
                notes.append("configuration changes are applied too (\(configuration.rawValue))")
            }
        } else if wanted.lifecycle != .active && action != .noop {
            notes.append("applied while \(wanted.lifecycle.rawValue): the machine is not started")
        }
        var shown = reasons
        if reasons.isEmpty && revisionChanged {
            shown = [Change(field: "revision", old: short(existing.appliedRevision), new: short(wanted.revision))]
        }
        // A machine that is also not as applied is put right by the same action.
        if case .drifted(let repair, let drift) = existing.health, wanted.lifecycle == existing.lifecycle {
            action = max(action, self.action(repairing: repair, wanted.lifecycle))
            shown += drift
        }
        return PlannedAction(
            agent: wanted.name, action: action, reasons: shown, notes: notes, fromRevision: existing.appliedRevision,
            toRevision: wanted.revision)
    }

    static func action(repairing repair: MachineHealth.Repair, _ lifecycle: Lifecycle) -> Action {
        switch repair {
        case .restart: return .restart
        case .repair: return .repair
        case .stop: return lifecycle == .revoked ? .revoke : .pause
        }
    }

    static func short(_ digest: String) -> String {
        String(digest.prefix(12))
    }

    /// Field-level differences, in the new fields' order, then removed fields.
    static func changes(from old: [String: String], to new: Fields?) -> [Change] {
        guard let new else { return [] }
        var result: [Change] = []
        var seen = Set<String>()
        for (field, value) in new {
            seen.insert(field)
            if old[field] != value { result.append(Change(field: field, old: old[field], new: value)) }
        }
        for field in old.keys.sorted() where !seen.contains(field) {
            result.append(Change(field: field, old: old[field], new: nil))
        }
        return result
    }

    /// The smallest action that covers every changed field.
    public static func classify(_ changes: [Change]) -> Action {
        var action = Action.noop
        for change in changes where change.field != "lifecycle" {
            action = max(action, actionFor(field: change.field))
        }
        return action
    }

    static func actionFor(field: String) -> Action {
        if field == "environment.base" || field.hasPrefix("environment.packages") { return .replace }
        if field == "harness" || field.hasPrefix("harness.") { return .reinstall }
        if field.hasPrefix("environment.resources.") || field == "environment.network.egress" { return .restart }
        return .update
    }
}
