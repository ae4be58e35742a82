import AgentryBasics
import AgentryCore
import AgentryModel
import AgentryRender
import AgentryWire
import Foundation
import Synchronization

/// Machines in memory: each has a disk (a map of guest paths to bytes), a running flag and a
/// record of what was done to it. Its guest channel runs agentry's own guest scripts by meaning
/// (`FakeGuest`), and anything else through `harness`, a test's stand-in for the harness command.
public final class FakeMachines: MachineBackend {
    public struct Machine: Sendable {
        public var spec: MachineSpec
        public var running = false
        /// How it last ended, when it is not running.
        public var end: MachineEnd?
        public var boots = 0
        /// Guest paths (`/agent/...`, `/run/...`) to their bytes.
        public var files: [String: [UInt8]] = [:]
    }

    /// What a harness (or any command that is not one of agentry's scripts) was asked to run.
    public struct Command: Sendable {
        public var machine: String
        public var argv: [String]
        public var environment: [String: String]
        public var timeout: Duration?
    }

    /// What it did: its output, how it ended, and files it left (guest paths).
    public struct Outcome: Sendable {
        public var stdout: String
        public var stderr: String
        public var status: Int
        public var timedOut: Bool
        public var writes: [String: [UInt8]]

        public init(
            stdout: String = "", stderr: String = "", status: Int = 0, timedOut: Bool = false,
            writes: [String: [UInt8]] = [:]
        ) {
            self.stdout = stdout
            self.stderr = stderr
            self.status = status
            self.timedOut = timedOut
            self.writes = writes
        }
    }

    struct World {
        var machines: [String: Machine] = [:]
        var calls: [String] = []
        var silent: Set<String> = []
        var heldBoots: Set<String> = []
        var inBoot: Set<String> = []
        var prepareFailures: [String: String] = [:]
        var provideFailures: [String: String] = [:]
        var retired: [String: String] = [:]
        var runLocks: [String: RunLockHolder] = [:]
        var bootMicroseconds: UInt32 = 0
        var booting = 0
        var mostBootingAtOnce = 0
        var harness: @Sendable (Command) -> Outcome = { _ in Outcome() }
    }

    let world = Mutex(World())

    public init() {}

    // MARK: - For tests

    public func machine(_ name: String) -> Machine? { world.withLock { $0.machines[name] } }

    /// Every backend call, in order: `prepare a`, `start a`, `stop a graceful`, ...
    public var calls: [String] { world.withLock { $0.calls } }

    public func clearCalls() { world.withLock { $0.calls = [] } }

    /// The machine starts but its guest never says hello.
    public func neverReportsIn(_ name: String) { world.withLock { _ = $0.silent.insert(name) } }

    /// It says hello again.
    public func reportsIn(_ name: String) { world.withLock { _ = $0.silent.remove(name) } }

    /// The machine's boot does not return until `releaseBoot` (a guest stuck in its boot).
    public func holdBoot(_ name: String) { world.withLock { _ = $0.heldBoots.insert(name) } }

    public func releaseBoot(_ name: String) { world.withLock { _ = $0.heldBoots.remove(name) } }

    /// Whether a boot of `name` is under way.
    public func isBooting(_ name: String) -> Bool {
        world.withLock { $0.inBoot.contains(name) }
    }

    /// Puts a file on the machine's disk behind agentry's back.
    public func putFileForTest(_ name: String, _ path: String, _ text: String) throws {
        try world.withLock { world in
            guard world.machines[name] != nil else { throw FakeFailure(.notFound, "no machine \(name)") }
            world.machines[name]?.files[path] = Array(text.utf8)
        }
    }

    /// `prepare` fails for this agent with this message (a corrupt disk, a full host disk).
    public func failPrepare(_ name: String, _ message: String) { world.withLock { $0.prepareFailures[name] = message } }
    public func failProvide(_ name: String, _ message: String) { world.withLock { $0.provideFailures[name] = message } }

    public func setHarness(_ body: @escaping @Sendable (Command) -> Outcome) { world.withLock { $0.harness = body } }

    /// The machine's process dies (its disk stays).
    public func crash(_ name: String, status: Int32? = nil, signal: Int32? = 9) {
        world.withLock { world in
            guard world.machines[name]?.running == true else { return }
            world.machines[name]?.running = false
            world.machines[name]?.end = MachineEnd(
                status: status, signal: signal, at: Date(timeIntervalSince1970: 1_800_000_000), requested: false)
        }
    }

    /// The machine runs with other resources than it was started with (someone changed it by hand).
    public func alter(_ name: String, memoryMiB: Int) {
        world.withLock { $0.machines[name]?.spec.memoryMiB = memoryMiB }
    }

    public func file(_ name: String, _ path: String) -> [UInt8]? { world.withLock { $0.machines[name]?.files[path] } }

    public func text(_ name: String, _ path: String) -> String? {
        file(name, path).map { String(decoding: $0, as: UTF8.self) }
    }

    func note(_ call: String) { world.withLock { $0.calls.append(call) } }

    // MARK: - MachineBackend

    public func isRunning(_ name: String) -> Bool { world.withLock { $0.machines[name]?.running ?? false } }

    public func observe(_ name: String) -> MachineObservation {
        world.withLock { world in
            guard let machine = world.machines[name] else { return MachineObservation(process: .absent) }
            if machine.running {
                return MachineObservation(
                    process: .running, resources: MachineResources(machine.spec),
                    allowlist: machine.spec.egress.allowlist)
            }
            return MachineObservation(process: machine.end.map { .ended($0) } ?? .stopped)
        }
    }

    public func diskExists(_ name: String) -> Bool { world.withLock { $0.machines[name] != nil } }

    public func diskLocation(_ name: String) -> String { "fake:/\(name)/env.qcow2" }

    public func provide(_ spec: MachineSpec) throws {
        try world.withLock { world in
            world.calls.append("provide \(spec.name)")
            if let failure = world.provideFailures[spec.name] { throw FakeFailure(.io, failure) }
        }
    }

    public func prepare(_ spec: MachineSpec) throws -> PreparedMachine {
        try world.withLock { world in
            world.calls.append("prepare \(spec.name)")
            if let failure = world.prepareFailures[spec.name] { throw FakeFailure(.io, failure) }
            let fresh = world.machines[spec.name] == nil
            if fresh { world.machines[spec.name] = Machine(spec: spec) }
            world.machines[spec.name]?.spec = spec
            return PreparedMachine(freshDisk: fresh, accelerator: "tcg")
        }
    }

    public func start(_ spec: MachineSpec) throws -> any GuestChannel {
        let silent = try world.withLock { world in
            world.calls.append("start \(spec.name)")
            guard world.machines[spec.name] != nil else {
                throw FakeFailure(.internalFailure, "started without a disk")
            }
            guard world.machines[spec.name]?.running != true else {
                throw FakeFailure(.internalFailure, "started twice")
            }
            world.machines[spec.name]?.running = true
            world.machines[spec.name]?.end = nil
            world.machines[spec.name]?.boots += 1
            world.machines[spec.name]?.spec = spec
            world.booting += 1
            world.inBoot.insert(spec.name)
            world.mostBootingAtOnce = max(world.mostBootingAtOnce, world.booting)
            return world.silent.contains(spec.name)
        }
        // A boot takes a while (when a test says so), so that boots can overlap.
        usleep(world.withLock { $0.bootMicroseconds })
        while world.withLock({ $0.heldBoots.contains(spec.name) }) { usleep(1000) }
        world.withLock {
            $0.booting -= 1
            $0.inBoot.remove(spec.name)
        }
        return FakeGuest(machines: self, name: spec.name, silent: silent, booting: true)
    }

    public func connect(_ name: String, timeout: Duration) throws -> any GuestChannel {
        note("connect \(name)")
        guard isRunning(name), !world.withLock({ $0.silent.contains(name) }) else {
            throw FakeFailure(.unavailable, "the machine \(name) did not report in within \(timeout)")
        }
        return FakeGuest(machines: self, name: name, silent: false, booting: false)
    }

    public func stop(_ name: String, graceful: Bool) {
        world.withLock { world in
            guard world.machines[name]?.running == true else { return }
            world.calls.append("stop \(name)\(graceful ? " graceful" : "")")
            world.machines[name]?.running = false
            world.machines[name]?.end = MachineEnd(status: 0, signal: nil, at: nil, requested: true)
            // A power-off empties the guest's tmpfs.
            let kept = world.machines[name]?.files.filter { !$0.key.hasPrefix("/run/") } ?? [:]
            world.machines[name]?.files = kept
        }
    }

    public func removeDisk(_ name: String) throws {
        world.withLock { world in
            world.calls.append("removeDisk \(name)")
            world.machines[name] = nil
        }
    }

    public func remove(_ name: String, keepDisk: Bool, owner: String?) throws {
        world.withLock { world in
            world.calls.append("remove \(name)\(keepDisk ? " keepDisk" : "")")
            if keepDisk { world.retired[name] = owner ?? "" } else { world.machines[name] = nil }
        }
    }

    public func claimDisk(_ name: String, owner: String?) throws -> DiskClaim {
        world.withLock { world in
            guard let retired = world.retired.removeValue(forKey: name) else { return .none }
            if !retired.isEmpty, retired == owner { return .kept }
            world.machines[name] = nil
            return .setAside("fake:/retired/\(name)")
        }
    }

    public func consoleTail(_ name: String) -> String { "  | [fake console of \(name)]" }

    public func egressAllowlist(_ name: String) -> EgressAllowlist? {
        world.withLock { $0.machines[name]?.spec.egress.allowlist }
    }

    public func setEgressAllowlist(_ name: String, _ allowlist: EgressAllowlist) throws {
        world.withLock { $0.machines[name]?.spec.egress = .allowlist(allowlist) }
    }

    public func buildImage(base: String) throws -> String { "fake:/images/\(base)" }

    public func pathProblem(_ name: String) -> String? { nil }

    public func retainedDisks() -> [RetainedDisk] {
        world.withLock { world in
            world.retired.sorted { $0.key < $1.key }.map {
                RetainedDisk(id: $0.key, agent: $0.key, owner: $0.value, retiredAt: "-", bytes: 0, setAside: false)
            }
        }
    }

    public func removeRetainedDisk(_ id: String) throws {
        try world.withLock { world in
            guard world.retired.removeValue(forKey: id) != nil else {
                throw FakeFailure(.notFound, "no retained disk \(id)")
            }
            world.machines[id] = nil
        }
    }

    final class Lease: RunLease {
        let machines: FakeMachines
        let name: String
        let held = Mutex(true)

        init(_ machines: FakeMachines, _ name: String) {
            self.machines = machines
            self.name = name
        }

        func release() {
            guard
                held.withLock({ value in
                    defer { value = false }; return value
                })
            else { return }
            machines.world.withLock { _ = $0.runLocks.removeValue(forKey: name) }
        }

        deinit { release() }
    }

    /// Makes every boot take `microseconds`, and says how many machines booted at once at most.
    public func setBootTime(microseconds: UInt32) { world.withLock { $0.bootMicroseconds = microseconds } }
    public var mostBootingAtOnce: Int { world.withLock { $0.mostBootingAtOnce } }

    /// Holds an agent's run lock as another process would (a run, or an apply's step, elsewhere).
    public func holdRunLock(_ name: String, as holder: RunLockHolder = RunLockHolder(.run, pid: 4242)) -> any RunLease {
        world.withLock { $0.runLocks[name] = holder }
        return Lease(self, name)
    }

    public func runLockHolder(_ name: String) -> RunLockHolder? { world.withLock { $0.runLocks[name] } }

    public func lockRun(
        _ name: String, for holder: RunLockHolder, deadline: ContinuousClock.Instant?, interruption: Interruption?,
        waiting: (String) -> Void
    ) throws -> any RunLease {
        var told = false
        while true {
            let other = world.withLock { world -> RunLockHolder? in
                if let other = world.runLocks[name] { return other }
                world.runLocks[name] = holder
                return nil
            }
            guard let other else { break }
            if !told {
                waiting("\(name) is busy with \(other.description); waiting for it to end")
                told = true
            }
            if interruption?.isInterrupted == true || deadline.map({ ContinuousClock.now >= $0 }) == true {
                throw FakeFailure(.conflict, "\(name) is still busy with \(other.description); try again once it ends")
            }
            usleep(1000)
        }
        return Lease(self, name)
    }
}
