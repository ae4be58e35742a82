import AgentryBasics
import AgentryModel
import AgentryPlan
import AgentryRender
import Foundation

/// An agent's machine measured against what was applied to it: what `status` shows as its health
/// and what the planner repairs.
public struct MachineStatus: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable {
        /// Running, configured at the applied revision, with the applied resources.
        case running
        /// The last apply started it and did not finish configuring it.
        case starting
        /// Running, but not as applied (other resources, another allowlist, running while paused).
        case drifted
        /// Its process ended without agentry asking.
        case died
        /// The last apply failed on it.
        case failed
        /// Not running, though its agent is active.
        case stopped
        case paused
        case revoked
        /// The operator's kill switch is on.
        case killed
        /// There is no machine (no environment disk).
        case absent
    }

    public var state: State
    /// Why, in words: the exit, the failure, the differences, who killed it.
    public var detail: String?
    /// What the planner does about it.
    public var health: MachineHealth
}

enum HealthCheck {
    /// Measures one applied agent: its record, its kill switch, its machine as observed.
    static func status(record: AppliedAgent, killed: KillSwitch?, observation: MachineObservation) -> MachineStatus {
        if let killed {
            return MachineStatus(state: .killed, detail: "\(killed.reason), by \(killed.actor)", health: .healthy)
        }
        let running = observation.process == .running
        let lifecycle = Lifecycle(rawValue: record.lifecycle) ?? .active
        if lifecycle != .active {
            let state: MachineStatus.State = lifecycle == .paused ? .paused : .revoked
            guard running else { return MachineStatus(state: state, detail: nil, health: .healthy) }
            return MachineStatus(
                state: .drifted, detail: "running although \(lifecycle.rawValue)",
                health: .drifted(repair: .stop, reasons: [Change(field: "machine", old: "running", new: "stopped")]))
        }
        func restart(_ state: MachineStatus.State, _ detail: String?, _ shown: String) -> MachineStatus {
            MachineStatus(
                state: state, detail: detail,
                health: .drifted(repair: .restart, reasons: [Change(field: "machine", old: shown, new: "running")]))
        }
        switch observation.process {
        case .absent:
            return restart(.absent, "no environment disk", "absent (no environment disk)")
        case .stopped:
            return restart(.stopped, nil, "stopped")
        case .ended(let end):
            if record.machineState == "failed" {
                let detail = record.machineDetail ?? "the last apply failed"
                return restart(.failed, detail, "failed (\(firstLine(detail)))")
            }
            if end.requested { return restart(.stopped, "stopped (\(end.description))", "stopped") }
            return restart(.died, end.description, "died (\(end.description))")
        case .running:
            if record.machineState == "starting" {
                return MachineStatus(
                    state: .starting, detail: "the last apply did not finish configuring it",
                    health: .drifted(
                        repair: .repair,
                        reasons: [
                            Change(field: "machine", old: "starting (the last apply did not finish)", new: "running")
                        ]))
            }
            if record.machineState == "failed" {
                let detail = record.machineDetail ?? "the last apply failed"
                return restart(.failed, detail, "failed (\(firstLine(detail)))")
            }
            // (Read for every running machine: `Planning.measure`, `Status`.)
            let fields = record.fieldsJSON.map(AgentRecord.decodeFields) ?? []
            let spec = MachineSpec(record.name, fields: fields)
            if let actual = observation.resources {
                let wanted = MachineResources(spec)
                var changes: [Change] = []
                if actual.cpus != wanted.cpus {
                    changes.append(Change(field: "machine.cpus", old: "\(actual.cpus)", new: "\(wanted.cpus)"))
                }
                if actual.memoryMiB != wanted.memoryMiB {
                    changes.append(
                        Change(field: "machine.memory", old: "\(actual.memoryMiB)Mi", new: "\(wanted.memoryMiB)Mi"))
                }
                if actual.network != wanted.network {
                    changes.append(
                        Change(field: "machine.network", old: actual.network.rawValue, new: wanted.network.rawValue))
                }
                if actual.gateway != wanted.gateway {
                    // A machine started before its agent had a model (or by an agentry without the
                    // gateway) cannot reach it.
                    changes.append(
                        Change(field: "machine.gateway", old: "\(actual.gateway)", new: "\(wanted.gateway)"))
                }
                if !changes.isEmpty {
                    let detail = changes.map { "\($0.field) \($0.old ?? "") (applied: \($0.new ?? ""))" }
                    return MachineStatus(
                        state: .drifted, detail: "runs with " + detail.joined(separator: ", "),
                        health: .drifted(repair: .restart, reasons: changes))
                }
            }
            if let wanted = spec.egress.allowlist, let actual = observation.allowlist,
                Set(wanted.entries) != Set(actual.entries)
            {
                let change = Change(
                    field: "machine.egress", old: actual.entries.joined(separator: ", "),
                    new: wanted.entries.joined(separator: ", "))
                return MachineStatus(
                    state: .drifted, detail: "may reach \(change.old ?? "") (applied: \(change.new ?? ""))",
                    health: .drifted(repair: .repair, reasons: [change]))
            }
            return MachineStatus(state: .running, detail: nil, health: .healthy)
        }
    }

    static func firstLine(_ text: String) -> String {
        String(text.split(separator: "\n").first ?? "")
    }
}

extension MachineSpec {
    /// The machine for an agent, from its resolved environment fields.
    init(_ name: String, fields: Fields) {
        let values = Dictionary(fields, uniquingKeysWith: { a, _ in a })
        let packages = fields.filter { $0.0 == "environment.packages.apt" }.flatMap { EgressPolicy.listValue($0.1) }
        let memory = Quantity(values["environment.resources.memory"] ?? "512Mi")?.bytes ?? 512 << 20
        let list = { (field: String) in fields.filter { $0.0 == field }.flatMap { EgressPolicy.listValue($0.1) } }
        let install = InstallSteps(
            apt: list("harness.install.apt"), pip: list("harness.install.pip"), npm: list("harness.install.npm"),
            script: values["harness.install.script"])
        self.init(
            name: name, base: values["environment.base"] ?? "minimal", packages: packages,
            cpus: Int(values["environment.resources.cpus"] ?? "1") ?? 1, memoryMiB: Int(max(64, memory >> 20)),
            diskBytes: Quantity(values["environment.resources.disk"] ?? "4Gi")?.bytes ?? 4 << 30,
            egress: EgressPolicy(fields: fields), gateway: !(values["model"] ?? "").isEmpty)
        // Only a debian-12 root takes a layer; a minimal machine runs a harness's script itself.
        if self.base == EnvironmentBase.debian12.rawValue { self.install = install }
        harness = values["harness"]
    }
}
