import AgentryMachine
import AgentryModel
import AgentryPlan
import AgentryState
import AgentryWire
import Foundation
import Logging

/// What `apply` needs besides the repository: where images and the guest agent are, and how long a
/// machine may take to report in.
public struct ApplyOptions: Sendable {
    public var guestAgent: String
    public var bootTimeout: Duration
    public var actor: String
    public var planOptions: PlanOptions
    /// Start afresh with an empty disk where an existing agent's disk file has gone missing.
    public var recreateMissingDisks: Bool
    /// The agentry executable, which machines with an egress allowlist run as their proxy.
    public var agentryExecutable: String = ApplyOptions.currentExecutable
    /// Carry out only these agents' steps (`agentry run` brings up its own agent); nil: all.
    public var only: Set<String>?
    public var historyBranch: String = History.defaultBranch

    public init(
        guestAgent: String, bootTimeout: Duration = .seconds(90), actor: String, planOptions: PlanOptions = PlanOptions(),
        recreateMissingDisks: Bool = false, only: Set<String>? = nil
    ) {
        self.only = only
        self.guestAgent = guestAgent
        self.bootTimeout = bootTimeout
        self.actor = actor
        self.planOptions = planOptions
        self.recreateMissingDisks = recreateMissingDisks
    }
}

extension ApplyOptions {
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// The outcome of one agent's step.
public struct AppliedStep: Sendable {
    public var agent: String
    public var action: Action
    /// What was done, or why it failed.
    public var detail: String
    public var failed: Bool
}

/// Carries out a plan against the machines. Every step measures before it acts (a disk that
/// exists is kept, a machine that runs is not started twice), so an apply killed at any point and
/// run again converges, with no duplicate machine and no lost disk. Steps are recorded in the event
/// log as they start and end. One agent's failure does not stop the others.
public final class Applier {
    let store: StateStore
    let options: ApplyOptions
    let logger: Logger
    let progress: (String) -> Void
    var images: [String: GuestImage] = [:]
    var accelerator: Accelerator?
    /// Agents whose environment disk this apply made: their memory comes back from history.
    var freshDisks: Set<String> = []
    /// The repository whose history branch holds memory snapshots.
    public var historyRepository: String?

    public init(store: StateStore, options: ApplyOptions, logger: Logger, progress: @escaping (String) -> Void) {
        self.store = store
        self.options = options
        self.logger = logger
        self.progress = progress
    }

    var agentsDirectory: String { store.directory + "/agents" }

    public func machineDirectory(_ name: String) -> String { agentsDirectory + "/" + name }

    /// Applies `plan`, computed from `loaded` against the current actual state. Agents whose machine
    /// died (drift) are started again even when their plan says noop.
    public func apply(_ plan: Plan, loaded: LoadedCommit, reader: CommitReader) throws -> [AppliedStep] {
        let killed = try store.killedAgents()
        let records = Dictionary(try store.agents().map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let needFields = Set(plan.actions.filter { $0.action != .delete && (options.only?.contains($0.agent) ?? true) }.map(\.agent))
        let fields = try reader.resolvedFields(of: needFields, in: loaded)
        var steps: [AppliedStep] = []
        // Each machine's control channel is opened right after QEMU starts, before the guest is up,
        // so its hello cannot be missed.
        var booting: [(name: String, action: Action, channel: ControlChannel?)] = []

        for planned in plan.actions where options.only?.contains(planned.agent) ?? true {
            let name = planned.agent
            let wanted = loaded.desired.agents[name]
            if killed.contains(name) {
                QEMUMachine.stop(machineDirectory(name), graceful: false)
                steps.append(AppliedStep(agent: name, action: planned.action, detail: "blocked by the kill switch (agentry unkill \(name))", failed: false))
                continue
            }
            var action = planned.action
            let running = QEMUMachine.runningPID(machineDirectory(name)) != nil
            if action == .noop, let wanted, wanted.lifecycle == .active, !running {
                action = .restart  // drift: the machine died or was killed
                try event(name, "drift", "the machine is not running; starting it again")
            }
            if action == .noop { continue }
            try event(name, "step", "\(action.rawValue): started")
            do {
                switch action {
                case .delete:
                    try delete(name, record: records[name])
                    steps.append(AppliedStep(agent: name, action: action, detail: "machine stopped", failed: false))
                    try event(name, "step", "delete: done")
                    continue
                case .pause, .revoke:
                    QEMUMachine.stop(machineDirectory(name), graceful: action == .pause)
                    try record(name, wanted: wanted, fields: fields[name], commit: loaded.commit, machineState: "stopped")
                    steps.append(AppliedStep(agent: name, action: action, detail: "machine stopped", failed: false))
                    try event(name, "step", "\(action.rawValue): done")
                    continue
                case .replace:
                    QEMUMachine.stop(machineDirectory(name), graceful: true)
                    try? FileManager.default.removeItem(atPath: QEMUMachine.disk(machineDirectory(name)))
                case .restart:
                    QEMUMachine.stop(machineDirectory(name), graceful: true)
                default:
                    break
                }
                guard let wanted, let agentFields = fields[name] else {
                    throw MachineError("internal: no desired state for \(name)")
                }
                let configuration = try machineConfiguration(name, fields: agentFields)
                let diskPath = QEMUMachine.disk(configuration.directory)
                if records[name]?.machineState != nil, action != .replace, !options.recreateMissingDisks,
                    !FileManager.default.fileExists(atPath: diskPath)
                {
                    throw MachineError(
                        "the environment disk \(diskPath) of \(name) is missing (deleted?), so its files are gone; `agentry apply --recreate-missing-disks` starts it with an empty disk")
                }
                if try QEMUMachine.ensureDisk(configuration) { freshDisks.insert(name) }
                if wanted.lifecycle != .active {
                    try record(name, wanted: wanted, fields: agentFields, commit: loaded.commit, machineState: "stopped")
                    steps.append(AppliedStep(agent: name, action: action, detail: "disk ready; not started (\(wanted.lifecycle.rawValue))", failed: false))
                    continue
                }
                var channel: ControlChannel?
                if QEMUMachine.runningPID(configuration.directory) == nil {
                    _ = try QEMUMachine.start(configuration)
                    channel = try ControlChannel.connect(
                        QEMUMachine.controlSocket(configuration.directory), deadline: .now + .seconds(10))
                }
                booting.append((name, action, channel))
                try record(name, wanted: wanted, fields: agentFields, commit: loaded.commit, machineState: "starting")
            } catch {
                steps.append(fail(name, action, error))
            }
        }

        var phases = PhaseClock(logger: logger, label: "apply step phase")
        phases.mark("prepare and start machines")
        // Machines boot in parallel; wait for each to report in.
        for (name, action, opened) in booting {
            let directory = machineDirectory(name)
            do {
                let channel: ControlChannel
                if let opened {
                    guard try opened.waitUntilReady(deadline: .now + options.bootTimeout, booting: true) != nil else {
                        throw MachineError(
                            "the machine \(name) did not report in within \(options.bootTimeout); the end of its serial log:\n\(QEMUMachine.serialTail(directory))")
                    }
                    channel = opened
                } else {
                    channel = try QEMUMachine.connect(directory, name: name, timeout: options.bootTimeout)
                }
                // An operator may have pulled the kill switch while the machine booted.
                if try store.killSwitch(name) != nil {
                    QEMUMachine.stop(directory, graceful: false)
                    steps.append(AppliedStep(agent: name, action: action, detail: "killed while starting", failed: false))
                    continue
                }
                var detail = "running"
                if case .hello(_, _, _, let uptime, let disk)? = channel.hello {
                    detail = "running (booted in \(uptime) ms, disk \(disk))"
                }
                phases.mark("boot \(name)")
                // The agent's configuration (instructions, skills, rendered harness files) goes in
                // over the control channel: an update needs no reboot.
                let bundle = try reader.bundle(name, in: loaded)
                let rendered = Rendering.render(bundle, run: .none)
                try Provisioner.push(rendered, over: channel, fresh: freshDisks.contains(name))
                if freshDisks.contains(name), let historyRepository {
                    detail += try restoreMemory(bundle, channel: channel, repository: historyRepository)
                }
                detail += action == .update ? ", configuration pushed (\(rendered.files.count) files)" : ""
                phases.mark("configure \(name)")
                try record(name, wanted: nil, fields: nil, commit: nil, machineState: "running")
                steps.append(AppliedStep(agent: name, action: action, detail: detail, failed: false))
                try event(name, "step", "\(action.rawValue): done, \(detail)")
            } catch {
                QEMUMachine.stop(directory, graceful: false)
                try? record(name, wanted: nil, fields: nil, commit: nil, machineState: "failed")
                steps.append(fail(name, action, error))
            }
        }
        return steps
    }

    /// Memory survives the machine: a new environment disk gets the agent's memory folder back from
    /// the latest snapshot in history.
    func restoreMemory(_ bundle: AgentBundle, channel: ControlChannel, repository: String) throws -> String {
        guard let (runID, files) = try History.latestMemory(agent: bundle.name, repository: repository, branch: options.historyBranch),
            !files.isEmpty
        else { return "" }
        let folder = AgentLayout.memoryDirectory(bundle.agent)
        let placed = files.map { file -> BundleFile in
            var copy = file
            copy.path = folder + "/" + file.path
            return copy
        }
        try Provisioner.unpack(placed, over: channel, what: "restoring the memory of \(bundle.name)")
        try event(bundle.name, "memory", "restored \(files.count) memory files from run \(runID)")
        return ", memory restored from run \(runID) (\(files.count) files)"
    }

    func fail(_ name: String, _ action: Action, _ error: Error) -> AppliedStep {
        let message = (error as? MachineError)?.message ?? "\(error)"
        try? event(name, "step", "\(action.rawValue): failed: \(message.split(separator: "\n").first ?? "")")
        return AppliedStep(agent: name, action: action, detail: message, failed: true)
    }

    func event(_ name: String?, _ kind: String, _ message: String) throws {
        try store.append(EventRecord(agent: name, kind: kind, actor: options.actor, message: message))
    }

    /// Records the applied revision (when `wanted` is given) and the machine's state.
    func record(_ name: String, wanted: DesiredAgent?, fields: Fields?, commit: String?, machineState: String) throws {
        var record = try store.agent(name)
        if let wanted, let commit {
            record = AgentRecord(
                name: name, appliedRevision: wanted.revision, appliedFields: fields ?? [], appliedCommit: commit,
                lifecycle: wanted.lifecycle.rawValue, deletionPolicy: wanted.deletionPolicy.rawValue,
                machineID: name, machineState: machineState, accelerator: accelerator?.rawValue,
                lastRunAt: record?.lastRunAt)
        }
        guard var record else { return }
        record.machineState = machineState
        record.accelerator = accelerator?.rawValue ?? record.accelerator
        record.updatedAt = Date()
        try store.save(record)
    }

    func delete(_ name: String, record: AgentRecord?) throws {
        let directory = machineDirectory(name)
        QEMUMachine.stop(directory, graceful: true)
        if record?.deletionPolicy == DeletionPolicy.delete.rawValue {
            try? FileManager.default.removeItem(atPath: directory)
        } else {
            // Keep the disk (deletionPolicy: retain); the machine's runtime files go.
            for file in ["serial.log", "qemu.log"] { try? FileManager.default.removeItem(atPath: directory + "/" + file) }
        }
        try store.removeAgent(name)
    }

    /// The machine for an agent, from its resolved environment fields.
    func machineConfiguration(_ name: String, fields: Fields) throws -> MachineConfiguration {
        let values = Dictionary(fields, uniquingKeysWith: { a, _ in a })
        let base = values["environment.base"] ?? "minimal"
        let packages = fields.filter { $0.0 == "environment.packages.apt" }.flatMap { Self.listValue($0.1) }
        let image = try image(for: base, packages: packages)
        let cpus = Int(values["environment.resources.cpus"] ?? "1") ?? 1
        let memory = Quantity(values["environment.resources.memory"] ?? "512Mi")?.bytes ?? 512 << 20
        let disk = Quantity(values["environment.resources.disk"] ?? "4Gi")?.bytes ?? 4 << 30
        let egress = values["environment.network.egress"] ?? "none"
        if accelerator == nil {
            accelerator = AcceleratorProbe.detect(image: image, stateDirectory: store.directory, log: progress)
        }
        var configuration = MachineConfiguration(
            name: name, directory: machineDirectory(name), image: image, cpus: cpus,
            memoryMiB: Int(max(64, memory >> 20)), diskBytes: disk, network: egress != "none",
            accelerator: accelerator ?? .tcg)
        if let allowlist = Self.allowlist(egress: egress, fields: fields) {
            configuration.restrict(to: allowlist, proxyExecutable: options.agentryExecutable)
        }
        return configuration
    }

    func image(for base: String, packages: [String]) throws -> GuestImage {
        let key = base + " " + packages.joined(separator: ",")
        if let image = images[key] { return image }
        let image = try ImageBuilder.build(
            base, packages: packages, imagesDirectory: store.directory + "/images", guestAgent: options.guestAgent,
            progress: progress)
        images[key] = image
        return image
    }

    /// The hosts an Environment's egress allows, when it is a list or `model-only` (the model's and
    /// the fallback models' endpoints); nil for `none` and `all`.
    static func allowlist(egress: String, fields: Fields) -> EgressAllowlist? {
        switch egress {
        case "none", "all": return nil
        case "model-only":
            let endpoints = fields.filter { $0.0 == "model.baseUrl" || ($0.0.hasPrefix("fallbackModels.") && $0.0.hasSuffix(".baseUrl")) }
            return EgressAllowlist(endpoints.compactMap { URL(string: $0.1) }.compactMap { url in
                guard let host = url.host else { return nil }
                return "\(host):\(url.port ?? (url.scheme == "http" ? 80 : 443))"
            })
        default:
            return EgressAllowlist(listValue(egress))
        }
    }

    /// A list field's value (`["git", "curl"]`, as `Canonical.list` writes it).
    static func listValue(_ text: String) -> [String] {
        guard let data = text.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String] else { return [] }
        return list
    }
}

/// A plan saved by `agentry plan --out`: what it was computed from.
public struct SavedPlan: Sendable {
    public var repository: String
    public var ref: String
    public var path: String
    public var commit: String
    public var actualDigest: String

    public static func read(_ file: String) throws -> SavedPlan {
        guard let data = FileManager.default.contents(atPath: file) else { throw LoadError("cannot read the plan \(file)") }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            object["formatVersion"] as? Int == PlanOutput.formatVersion, object["kind"] as? String == "plan",
            let repository = object["repository"] as? String, let ref = object["ref"] as? String,
            let path = object["path"] as? String, let commit = object["commit"] as? String,
            let digest = object["actualDigest"] as? String
        else {
            throw LoadError("\(file) is not a plan saved by `agentry plan --out` (formatVersion \(PlanOutput.formatVersion))")
        }
        return SavedPlan(repository: repository, ref: ref, path: path, commit: commit, actualDigest: digest)
    }
}

extension Planning {
    /// `agentry apply`: plans the desired state at `ref` (or takes a saved plan, refusing it when its
    /// commit or the actual state moved since) and carries it out.
    public static func apply(
        repository: String, ref: String, path: String, stateDirectory: String, savedPlan: SavedPlan?,
        options: ApplyOptions, logger: Logger, progress: @escaping (String) -> Void
    ) throws -> (Outcome, [AppliedStep]) {
        var phases = PhaseClock(logger: logger, label: "apply phase")
        let store: StateStore
        do {
            store = try StateStore.openForWriting(stateDirectory)
        } catch let error as StateError {
            throw LoadError(error.message)
        }
        let reader = try CommitReader(repository: savedPlan?.repository ?? repository, path: savedPlan?.path ?? path, store: store, logger: logger)
        let target = savedPlan?.commit ?? ref
        if let savedPlan {
            let now = try reader.commit(for: savedPlan.ref)
            guard now == savedPlan.commit || savedPlan.ref == savedPlan.commit else {
                throw LoadError(
                    "the saved plan is for \(savedPlan.commit.prefix(12)), but \(savedPlan.ref) is now \(now.prefix(12)); plan again")
            }
        }
        let loaded = try reader.load(target)
        guard loaded.report.isValid else { return (.invalid(loaded.report), []) }
        let outcome = try plan(
            loaded, reader: reader, store: store, options: options.planOptions, repository: repository, ref: ref,
            path: path,
            checkActual: { actual in
                if let savedPlan, savedPlan.actualDigest != actual.digest {
                    throw LoadError(
                        "the actual state changed since the plan was made (another apply, a kill, a drift); plan again")
                }
            })
        guard case .planned(let document) = outcome else { return (outcome, []) }
        let plan = document.plan
        let applier = Applier(store: store, options: options, logger: logger, progress: progress)
        applier.historyRepository = savedPlan?.repository ?? repository
        phases.mark("load and plan")
        let steps = try applier.apply(plan, loaded: loaded, reader: reader)
        phases.mark("steps")
        defer { phases.mark("records") }
        if plan.hasChanges || !steps.isEmpty {
            try store.append(
                EventRecord(
                    agent: nil, kind: "apply", actor: options.actor,
                    message: "applied \(loaded.commit.prefix(12)): \(PlanOutput.summary(plan))\(steps.contains(where: \.failed) ? " (with failures)" : "")"))
        }
        History.rememberRepository(savedPlan?.repository ?? repository, stateDirectory: store.directory)
        if !steps.isEmpty {
            // The audit trail in git: what was applied, from which commit, by whom.
            do {
                let warning = try History.audit(
                    kind: "apply",
                    fields: [("desiredCommit", loaded.commit), ("ref", savedPlan?.ref ?? ref), ("summary", PlanOutput.summary(plan))],
                    lists: [("actions", steps.map { "\($0.action.rawValue) \($0.agent): \($0.failed ? "failed" : "done")" })],
                    actor: options.actor, repository: savedPlan?.repository ?? repository, subject: String(loaded.commit.prefix(12)),
                    branch: options.historyBranch)
                if let warning { progress("warning: \(warning)") }
            } catch let error as LoadError {
                progress("warning: \(error.message)")
            }
        }
        return (.planned(document), steps)
    }
}
