import AgentryBasics
import AgentryRender
import AgentryWire
import Foundation

/// One persistent machine per agent, by the agent's name: its environment disk, its process, its
/// control channel. Every method measures before it acts (a disk that exists is kept, a machine
/// that runs is not started twice), so a step repeated after a crash is a no-op. Safe to call from
/// several threads at once for different agents; calls for one agent are ordered by the caller.
public protocol MachineBackend: Sendable {
    /// Whether the agent's machine process is alive.
    func isRunning(_ name: String) -> Bool
    /// What the machine is doing now, measured: its process (or how it ended), what it was
    /// started with, the hosts it may reach.
    func observe(_ name: String) -> MachineObservation
    func diskExists(_ name: String) -> Bool
    /// Where the environment disk is, for messages.
    func diskLocation(_ name: String) -> String
    /// Builds or finds what the machine is made from (its image, its harness layer) without
    /// touching the machine: a build that fails leaves a running machine as it was.
    func provide(_ spec: MachineSpec) throws
    /// Builds or finds the image, picks the accelerator, and makes the environment disk when there
    /// is none (a disk that exists is checked, never replaced).
    func prepare(_ spec: MachineSpec) throws -> PreparedMachine
    /// Starts the machine (it must not be running) and returns its control channel, connected
    /// before the guest is up so its hello cannot be missed; wait with `waitUntilReady(booting: true)`.
    func start(_ spec: MachineSpec) throws -> any GuestChannel
    /// Connects to a running machine's guest and waits until it answers.
    func connect(_ name: String, timeout: Duration) throws -> any GuestChannel
    /// Stops the machine: a clean power-off through the guest when `graceful`, then harder, each
    /// with a deadline. Returns when the process is gone; nothing when it was not running.
    func stop(_ name: String, graceful: Bool)
    /// Removes the environment disk (the machine must be stopped).
    func removeDisk(_ name: String) throws
    /// Removes everything of the machine (`keepDisk`: all but the disk, marked as retired by `owner`).
    func remove(_ name: String, keepDisk: Bool, owner: String?) throws
    /// A new agent takes its name: a disk retired by the same owner is its own again; one retired by
    /// another owner is set aside, never given to a stranger.
    func claimDisk(_ name: String, owner: String?) throws -> DiskClaim
    /// Environment disks kept after their agents were deleted (`deletionPolicy: retain`), and
    /// those set aside when another owner's agent took the name.
    func retainedDisks() -> [RetainedDisk]
    /// Removes one of them (by `RetainedDisk.id`).
    func removeRetainedDisk(_ id: String) throws
    /// Why a machine of this name cannot run here, when it cannot (a socket path too long for the
    /// kernel), with the fix; nil when it can.
    func pathProblem(_ name: String) -> String?
    /// The last lines of the machine's console, for error messages.
    func consoleTail(_ name: String) -> String
    /// The hosts a running machine with an allowlist may reach now (read by its proxy for each
    /// connection, so a harness installation can widen it while it runs).
    func egressAllowlist(_ name: String) -> EgressAllowlist?
    func setEgressAllowlist(_ name: String, _ allowlist: EgressAllowlist) throws
    /// Takes the agent's run lock, held by a run for as long as it runs and by an apply's step that
    /// must stop or change the machine: across processes, one of them at a time. While another
    /// holds it, `waiting` is told (once) and the lock is waited for until `deadline` (nil: as long
    /// as it takes) or until `interruption` says stop; then it fails.
    func lockRun(
        _ name: String, for holder: RunLockHolder, deadline: ContinuousClock.Instant?, interruption: Interruption?,
        waiting: (String) -> Void
    ) throws -> any RunLease
    /// Who holds the agent's run lock now (nil: nobody).
    func runLockHolder(_ name: String) -> RunLockHolder?
    /// Builds a guest image (`minimal` or `debian-12`), even when one is cached; returns where it is.
    func buildImage(base: String) throws -> String
}

/// What a machine is made of, from the agent's Environment.
public struct MachineSpec: Sendable, Equatable {
    public var name: String
    /// `minimal` or `debian-12`.
    public var base: String
    /// `packages.apt` of the Environment (built into its debian-12 image).
    public var packages: [String]
    public var cpus: Int
    public var memoryMiB: Int
    public var diskBytes: UInt64
    public var egress: EgressPolicy
    /// The agent has a model: the machine reaches the model gateway.
    public var gateway: Bool
    /// The harness's installation, made on the host into a layer the machine mounts (debian-12);
    /// nil when it installs nothing.
    public var install: InstallSteps?
    /// The harness's name, for what is said about its layer.
    public var harness: String?
    /// Names that layer (`HarnessLayer.key`): a machine running with another is restarted.
    public var layer: String? {
        install.flatMap { HarnessLayerRecipe.key($0, base: base, packages: packages) }
    }

    public init(
        name: String, base: String, packages: [String], cpus: Int, memoryMiB: Int, diskBytes: UInt64,
        egress: EgressPolicy, gateway: Bool = false
    ) {
        self.gateway = gateway
        self.name = name
        self.base = base
        self.packages = packages
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.diskBytes = diskBytes
        self.egress = egress
    }
}

public struct PreparedMachine: Sendable, Equatable {
    /// The environment disk was made now (nothing of the agent's is on it yet).
    public var freshDisk: Bool
    /// `kvm` or `tcg`.
    public var accelerator: String

    public init(freshDisk: Bool, accelerator: String) {
        self.freshDisk = freshDisk
        self.accelerator = accelerator
    }
}

/// The host's end of a machine's control channel. One operation uses a channel at a time; it
/// blocks, so the core calls it off the cooperative pool (`BlockingWork`).
public protocol GuestChannel: AnyObject {
    /// Waits until the guest agent answers: a machine that was just started (`booting`) is waited
    /// for passively until it says hello; one already running is pinged. Nil at the deadline.
    func waitUntilReady(timeout: Duration, booting: Bool) throws -> GuestHello?
    /// Runs a command in the guest, streaming its output; the guest kills the whole process group
    /// at `timeout`.
    func exec(
        _ argv: [String], environment: [String], directory: String, stdin: [UInt8], timeout: Duration?,
        interruption: Interruption?, output: (ProcessStream, [UInt8]) -> Void
    ) throws -> GuestExit
    /// Runs a command on a new pseudo-terminal in the guest (`agentry exec -t`): what it writes comes
    /// to `output`, what is read from the terminal session's input is typed into it.
    func execTerminal(
        _ argv: [String], environment: [String], directory: String, terminal: TerminalSession, timeout: Duration?,
        output: ([UInt8]) -> Void
    ) throws -> GuestExit
    func putFile(_ path: String, _ data: [UInt8], mode: Int) throws
    func getFile(_ path: String) throws -> [UInt8]
    /// Asks the guest to sync its disks and power off.
    func shutdown() throws
}

extension GuestChannel {
    /// A channel without terminals (a test double) says so.
    public func execTerminal(
        _ argv: [String], environment: [String], directory: String, terminal: TerminalSession, timeout: Duration?,
        output: ([UInt8]) -> Void
    ) throws -> GuestExit {
        throw CoreError(.machineFailed, "this machine's channel cannot run a command on a terminal")
    }

    public func exec(
        _ argv: [String], environment: [String] = [], directory: String = AgentLayout.home, timeout: Duration? = nil,
        output: (ProcessStream, [UInt8]) -> Void
    ) throws -> GuestExit {
        try exec(
            argv, environment: environment, directory: directory, stdin: [], timeout: timeout, interruption: nil,
            output: output)
    }
}

/// The operator's side of `agentry exec -t`: where typing comes from and how big the window is.
public struct TerminalSession: Sendable {
    /// A terminal (raw) whose keys are typed into the guest's terminal; nil: nothing is typed.
    public var input: Int32?
    /// The window's size now (asked again as the command runs: a resized window follows).
    public var size: @Sendable () -> (rows: Int, columns: Int)

    public init(input: Int32?, size: @escaping @Sendable () -> (rows: Int, columns: Int)) {
        self.input = input
        self.size = size
    }
}

/// What a guest says when it comes up.
public struct GuestHello: Sendable, Equatable {
    public var agentVersion: String
    public var kernel: String
    public var uptimeMilliseconds: Int
    public var disk: String

    public init(agentVersion: String, kernel: String, uptimeMilliseconds: Int, disk: String) {
        self.agentVersion = agentVersion
        self.kernel = kernel
        self.uptimeMilliseconds = uptimeMilliseconds
        self.disk = disk
    }
}

/// How a guest command ended.
public struct GuestExit: Sendable, Equatable {
    public var status: Int
    public var timedOut: Bool
    /// It was killed because an `Interruption` asked.
    public var interrupted: Bool

    public init(status: Int, timedOut: Bool, interrupted: Bool = false) {
        self.status = status
        self.timedOut = timedOut
        self.interrupted = interrupted
    }
}

/// A held run lock (see `MachineBackend.lockRun`).
public protocol RunLease: AnyObject, Sendable {
    func release()
}

/// A machine, measured.
public struct MachineObservation: Sendable, Equatable {
    public enum Process: Sendable, Equatable {
        /// No environment disk and no process.
        case absent
        /// A disk but no process, and nothing recorded of an end (made but never started, or
        /// stopped by an earlier agentry).
        case stopped
        case running
        /// The process is gone, and this is how it ended.
        case ended(MachineEnd)
    }

    public var process: Process
    /// What the running machine was started with.
    public var resources: MachineResources?
    /// The hosts it may reach now, when its egress is an allowlist.
    public var allowlist: EgressAllowlist?

    public init(process: Process, resources: MachineResources? = nil, allowlist: EgressAllowlist? = nil) {
        self.process = process
        self.resources = resources
        self.allowlist = allowlist
    }
}

/// What a machine runs with.
public struct MachineResources: Sendable, Equatable {
    public enum Network: String, Sendable, Equatable {
        case none, unrestricted, allowlist
    }

    public var cpus: Int
    public var memoryMiB: Int
    public var network: Network
    /// The machine reaches the model gateway.
    public var gateway = false
    /// The harness layer it mounts (`HarnessLayer.key`).
    public var layer: String?

    public init(cpus: Int, memoryMiB: Int, network: Network) {
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.network = network
    }

    /// What a spec asks for.
    public init(_ spec: MachineSpec) {
        let network: Network
        switch spec.egress {
        case .none: network = .none
        case .unrestricted: network = .unrestricted
        case .allowlist: network = .allowlist
        }
        self.init(cpus: spec.cpus, memoryMiB: spec.memoryMiB, network: network)
        gateway = spec.gateway
        layer = spec.layer
    }
}

/// How a machine's process ended.
public struct MachineEnd: Sendable, Equatable {
    /// The exit code, when it exited (nil when a signal killed it, or nothing was watching).
    public var status: Int32?
    public var signal: Int32?
    public var at: Date?
    /// agentry asked it to stop.
    public var requested: Bool

    public init(status: Int32?, signal: Int32?, at: Date?, requested: Bool) {
        self.status = status
        self.signal = signal
        self.at = at
        self.requested = requested
    }

    /// "exit 137 at 2026-12-02T01:14:00Z", "killed by signal 9 at …", "powered off at …".
    public var description: String {
        let when = at.map { " at " + Timestamp.rfc3339($0.timeIntervalSince1970) } ?? ""
        if let signal { return "killed by signal \(signal)\(when)" }
        if let status { return status == 0 ? "powered off\(when)" : "exit \(status)\(when)" }
        return "ended\(when)"
    }
}

/// What became of a retired environment disk when an agent of its name came back.
public enum DiskClaim: Sendable, Equatable {
    /// There was none.
    case none
    /// Its owner came back: the disk is the agent's again.
    case kept
    /// Another owner: the disk was moved aside (to this place), the agent starts afresh.
    case setAside(String)
}

/// An environment disk that belongs to no agent now.
public struct RetainedDisk: Sendable, Equatable {
    /// What `removeRetainedDisk` takes: the agent's name, or the set-aside folder's name.
    public var id: String
    /// The agent it belonged to.
    public var agent: String
    public var owner: String
    public var retiredAt: String
    public var bytes: Int64
    /// Set aside when another owner's agent took its name (never handed back by name).
    public var setAside: Bool

    public init(id: String, agent: String, owner: String, retiredAt: String, bytes: Int64, setAside: Bool) {
        self.id = id
        self.agent = agent
        self.owner = owner
        self.retiredAt = retiredAt
        self.bytes = bytes
        self.setAside = setAside
    }
}

/// What holds an agent's run lock: a run, or an apply's step; and which process.
public struct RunLockHolder: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case run, apply
    }

    public var kind: Kind
    public var pid: Int32

    public init(_ kind: Kind, pid: Int32) {
        self.kind = kind
        self.pid = pid
    }

    /// `a run (process 4242)`.
    public var description: String { "\(kind == .run ? "a run" : "an apply") (process \(pid))" }
}
