import AgentryBasics
import AgentryComposition
import AgentryCore
import ArgumentParser
import Foundation
import Synchronization

struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Converge the machines to the repository: plan, then carry the plan out.",
        discussion: """
            With PLAN (saved by `agentry plan --out`), carries out that plan and refuses it when its \
            commit or the actual state has moved since. Steps are journalled and idempotent: run apply \
            again after any interruption and it converges. A second apply while one runs is refused with \
            the holder's pid.

            Exit codes: 0 applied, 1 invalid repository, refused plan, a failed agent or the plan not \
            approved at the prompt, 2 could not run.
            """)

    @Argument(help: "A plan saved by `agentry plan --out`.")
    var plan: String?

    @Option(name: .long, help: RepositoryHelp.repo)
    var repo: String?

    @Option(name: .long, help: "The commit, branch or tag to apply. (default: HEAD)")
    var ref: String?

    @Option(name: .long, help: RepositoryHelp.path)
    var path: String?

    @Option(
        name: .long, help: "How long a machine may take to report in (90s, 5m). (default: 90s)",
        transform: GoDuration.parse)
    var bootTimeout: Duration?

    @Option(name: .long, help: "At most this many agents' machines changed at once. (default: the number of cores)")
    var parallelism: Int?

    @Option(name: .long, help: "Who is applying, for the event log. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Flag(name: .long, help: "Allow a desired state with no agents to delete every running agent.")
    var allowEmpty = false

    @Flag(name: .long, help: "Allow deleting more than half of the running agents at once.")
    var allowMassDelete = false

    @Flag(name: .long, help: "Where an agent's environment disk file has gone missing, start it with an empty one.")
    var recreateMissingDisks = false

    @Flag(
        name: .long, help: "Apply although the state directory applied another agent repository, making it this one's.")
    var adopt = false

    @Flag(name: .long, help: "Do not ask for confirmation at a terminal (CI and pipes never ask).")
    var autoApprove = false

    @OptionGroup var state: StateOptions
    @OptionGroup var format: PlanOutputOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let parallelism, parallelism < 1 {
            throw ValidationError("--parallelism \(parallelism): expected 1 or more")
        }
        if let plan, repo != nil || ref != nil || path != nil {
            throw ValidationError(
                "\(plan) is carried out for the repository, ref and path it was planned from; drop --repo, --ref and --path"
            )
        }
    }

    func run() async throws {
        Heap.growInLargeSteps()
        let ports = state.ports(try logging.makeLogger())
        var status: Int32?
        try await format.run(kind: "apply") {
            let saved = try plan.map { try SavedPlan.parse(try readInput($0, what: "the plan"), name: $0) }
            let source = AgentRepository.resolve(repo: repo, path: path, ports: ports)
            let options = ApplyOptions(
                bootTimeout: bootTimeout ?? .seconds(90), actor: ports.host.actor(actor),
                planOptions: PlanOptions(allowEmpty: allowEmpty, allowMassDelete: allowMassDelete),
                recreateMissingDisks: recreateMissingDisks, historyBranch: ports.host.historyBranch,
                parallelism: parallelism ?? ApplyOptions.defaultParallelism, adopt: adopt)
            let json = format.output == .json
            let stream = ApplyStream(format: format, printPlan: !json)
            // At a terminal a person confirms the plan; CI, pipes, saved plans and -o json never ask.
            let ask = !autoApprove && saved == nil && !json && isatty(0) != 0 && isatty(2) != 0
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(10))
                    stream.tick()
                }
            }
            defer { ticker.cancel() }
            let confirm: @Sendable (PlanDocument) async -> Bool = { _ in ApplyStream.confirm() }
            let outcome = try await Apply(
                ports, progress: Output.progress, observe: { stream.hear($0) }, approve: ask ? confirm : nil
            ).run(
                .init(
                    target: .init(repository: source.repository, ref: ref ?? "HEAD", path: source.path),
                    savedPlan: saved,
                    options: options))
            if json {
                if case .invalid(let report) = outcome.plan {
                    Output.error(ValidationOutput.text(report).trimmingCharacters(in: .newlines))
                }
                Output.standardOutput(outcome.json)
                if case .planned = outcome.plan {} else { status = ExitStatus.invalid }
            } else if stream.printedPlan {
                if outcome.plan.document?.plan.hasChanges == true || !outcome.steps.isEmpty {
                    Output.error(outcome.summaryLine)
                }
            } else {
                status = try format.finish(outcome.plan)
            }
            // As Terraform: a plan not approved at the prompt is not a success.
            if outcome.steps.contains(where: \.failed) || outcome.declined { status = ExitStatus.invalid }
        }
        if let status { throw ExitCode(status) }
    }
}

/// What `apply` prints as it goes: the plan, each step as it starts and ends (with how long it
/// took), a line every ten seconds for steps still going, then the summary.
final class ApplyStream: Sendable {
    let format: PlanOutputOptions
    let printPlan: Bool
    let state = Mutex<(printed: Bool, running: [String: (Action, ContinuousClock.Instant)])>((false, [:]))

    init(format: PlanOutputOptions, printPlan: Bool) {
        self.format = format
        self.printPlan = printPlan
    }

    var printedPlan: Bool { state.withLock { $0.printed } }

    func hear(_ event: ApplyEvent) {
        switch event {
        case .planned(let document):
            guard printPlan else { return }
            format.print(document)
            state.withLock { $0.printed = true }
        case .stepStarted(let agent, let action):
            state.withLock { $0.running[agent] = (action, .now) }
            Output.progress("\(action.rawValue) \(agent): started")
        case .stepEnded(let step):
            state.withLock { _ = $0.running.removeValue(forKey: step.agent) }
            let label = step.failed ? "FAILED" : step.skipped ? "skipped" : "done  "
            var lines = step.detail.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            let seconds = ApplyStream.seconds(step.duration)
            lines[0] = "\(label) \(step.action.rawValue) \(step.agent): \(lines[0]) (\(seconds))"
            Output.error(lines.joined(separator: "\n"))
        }
    }

    /// `create greeter: still going after 20s`, for each step still going.
    func tick() {
        let running = state.withLock { $0.running }
        for (agent, (action, started)) in running.sorted(by: { $0.key < $1.key }) {
            let elapsed = ContinuousClock.now - started
            guard elapsed >= .seconds(10) else { continue }
            Output.progress("\(action.rawValue) \(agent): still going after \(ApplyStream.seconds(elapsed))")
        }
    }

    /// `4.1s`: tenths of a second, as the summary line says it.
    static func seconds(_ duration: Duration) -> String {
        DurationText.seconds(milliseconds: Int(duration.milliseconds))
    }

    /// Asks at the terminal; only `yes` goes on.
    static func confirm() -> Bool {
        Output.error(
            "Apply these changes? Only 'yes' is accepted (--auto-approve skips this question): ", newline: false)
        return readLine()?.trimmingCharacters(in: .whitespaces) == "yes"
    }
}

struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in an agent's machine, with its output streamed and its exit status passed through.")

    @Argument(help: "The agent.")
    var agent: String

    @Option(
        name: .long, help: "Kill the command's process group after this long (90s, 15m).", transform: GoDuration.parse)
    var timeout: Duration?

    @Argument(parsing: .postTerminator, help: "The command, after --.")
    var command: [String] = []

    @Flag(
        name: [.short, .long],
        help:
            "Pass standard input to the command (read to its end first; up to 15 MiB, larger files go with `agentry cp`)."
    )
    var interactive = false

    @Flag(
        name: [.short, .long],
        help:
            "Run the command on a terminal in the machine (a shell, an editor), its output passed to yours unfiltered; with -i, what you type goes to it as you type it."
    )
    var tty = false

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        guard !command.isEmpty else {
            throw ValidationError("name a command after --, e.g. agentry exec \(agent) -- uname -a")
        }
        let guest = GuestOutput(raw: tty)
        // As `docker exec`: 125 when agentry could not run the command at all; 126 and 127 come
        // from the guest (not executable, not found); otherwise the command's own status.
        let status: Int
        do {
            let input =
                interactive && !tty
                ? try readInput(
                    "-", what: "standard input",
                    limit: (Copy.largestFile, "exec -i passes up to that (copy larger files with `agentry cp`)")) : []
            let ports = state.ports(try logging.makeLogger())
            // A terminal in the guest: this one raw while the command runs, so every key reaches it.
            if tty && interactive && isatty(0) == 0 {
                throw CoreError(
                    .invalidArgument,
                    "-it types from a terminal, and standard input is not a terminal; pass input with -i alone")
            }
            let local = tty && interactive ? RawTerminal.enter(0) : nil
            defer { local?.leave() }
            let terminal = tty ? TerminalSession(input: interactive ? 0 : nil, size: { RawTerminal.size() }) : nil
            let variables =
                tty ? ["TERM=" + (LocalHost.environment()["TERM"].flatMap { $0.isEmpty ? nil : $0 } ?? "xterm")] : []
            status = try await Operations(ports).exec(
                agent: agent, argv: command, timeout: timeout, environment: variables, stdin: input, terminal: terminal,
                output: { stream, data in guest.write(data, to: stream == .stdout ? 1 : 2) })
        } catch let error as CoreError {
            guest.finish()
            Output.error("error: \(error.message)")
            throw ExitCode(ExitStatus.execCouldNotRun)
        }
        guest.finish()
        throw ExitCode(Int32(truncatingIfNeeded: status))
    }
}

struct KillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kill",
        abstract: "The kill switch: stop an agent's machine now and keep apply and runs from starting it again.")

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "Why (recorded in the event log).")
    var reason: String

    @Option(name: .long, help: "Who, for the event log. (default: $AGENTRY_ACTOR or the login name)")
    var actor: String?

    @Option(
        name: .long,
        help: "The git repository whose history branch records the event. (default: the one the last apply read)")
    var repo: String?

    @Flag(name: .long, help: "Set the switch although no agent of this name is applied or in the repository yet.")
    var force = false

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let who = ports.host.actor(actor)
        let earlier = try await Operations(ports).kill(
            agent: agent, reason: reason, actor: who, repository: repo, force: force,
            warn: { Output.progress("warning: \($0)") })
        if output == .json {
            let current = try ports.state.killSwitch(agent)
            return Output.standardOutput(
                KillDocument.json(
                    kind: "kill", agent: agent, changed: earlier == nil, killed: current ?? earlier))
        }
        if let earlier {
            Output.standardOutput(
                "\(agent) was already killed (\(earlier.reason), by \(earlier.actor) at \(ISO8601DateFormatter().string(from: earlier.time))); nothing changed.\n"
            )
        } else {
            Output.standardOutput("\(agent) is killed; `agentry unkill \(agent)` lifts the switch.\n")
        }
    }
}

/// `kill -o json` and `unkill -o json`: the agent's switch after the command, and whether it changed.
enum KillDocument {
    static func json(kind: String, agent: String, changed: Bool, killed: KillSwitch?) -> String {
        JSON.object([
            ("formatVersion", .int(1)),
            ("kind", .string(kind)),
            ("agent", .string(agent)),
            ("changed", .bool(changed)),
            ("killed", .bool(killed != nil)),
            ("reason", killed.map { .string($0.reason) } ?? .null),
            ("by", killed.map { .string($0.actor) } ?? .null),
            ("at", killed.map { .string(Timestamp.rfc3339($0.time.timeIntervalSince1970)) } ?? .null),
        ]).rendered() + "\n"
    }
}

struct UnkillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unkill", abstract: "Lift the kill switch; the next apply starts the machine again.")

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    @Argument(help: "The agent.")
    var agent: String

    @Option(name: .long, help: "Who, for the event log.")
    var actor: String?

    @Option(
        name: .long,
        help: "The git repository whose history branch records the event. (default: the one the last apply read)")
    var repo: String?

    @OptionGroup var state: StateOptions

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let ports = state.ports(try logging.makeLogger())
        let lifted = try await Operations(ports).unkill(
            agent: agent, actor: ports.host.actor(actor), repository: repo, warn: { Output.progress("warning: \($0)") })
        if output == .json {
            return Output.standardOutput(KillDocument.json(kind: "unkill", agent: agent, changed: lifted, killed: nil))
        }
        Output.standardOutput(
            lifted
                ? "\(agent): kill switch lifted; run `agentry apply` to start it.\n"
                : "\(agent) is not killed; nothing changed.\n")
    }
}

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Guest images.", subcommands: [ImageBuild.self])
}

struct ImageBuild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build a guest image from Debian's packages into the state directory (cached by content).",
        discussion: """
            minimal: Debian's cloud kernel with its virtio modules and an initramfs of busybox-static and \
            the guest agent. Needs apt (to download linux-image-cloud-amd64), dpkg-deb and busybox-static.

            debian-12: a Debian bookworm root filesystem (debootstrap --variant=minbase, as root) packed \
            as an ext4 image, booted with the minimal image's kernel and initramfs. Environments with \
            packages.apt get their own image with those packages, built by apply when first needed.
            """)

    @Argument(help: "The base: minimal or debian-12.")
    var base: String = "minimal"

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    @Option(name: [.short, .long], help: "Output: text or json.")
    var output: StatusFormat = .text

    func run() async throws {
        let ports = state.ports(try logging.makeLogger(), progress: { Output.error("image: \($0)") })
        let directory = try await Images(ports).build(base: base)
        Output.standardOutput(
            output == .json
                ? JSON.object([
                    ("formatVersion", .int(1)), ("kind", .string("image")), ("base", .string(base)),
                    ("directory", .string(directory)),
                ]).rendered() + "\n" : directory + "\n")
    }
}

struct DisksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disks",
        abstract: "List the environment disks that belong to no agent; `disks rm ID` removes one.",
        discussion: """
            A deleted agent with deletionPolicy: retain leaves its disk, marked with its owner: an \\
            agent of the same name and owner gets it back; one of another owner starts afresh and the \\
            old disk is set aside (agents/.retired/). Both stay until removed here.
            """,
        subcommands: [DisksList.self, DisksRemove.self], defaultSubcommand: DisksList.self)
}

struct DisksList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List retained disks.")

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let disks = RetainedDisks(state.ports(try logging.makeLogger())).list()
        guard !disks.isEmpty else { return Output.progress("no retained disks") }
        Output.standardOutput(RetainedDisks.table(disks))
    }
}

struct DisksRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a retained disk for good.")

    @Argument(help: "The disk's ID (see `agentry disks`).")
    var id: String

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try RetainedDisks(state.ports(try logging.makeLogger())).remove(id)
        Output.progress("removed the retained disk \(id)")
    }
}

struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp",
        abstract: "Copy files and folders between the host and an agent's machine, byte for byte.",
        discussion: """
            One side is AGENT:PATH (a relative PATH is in the agent's home, /agent). A folder is copied \
            with the regular files in it; into an existing folder, it goes under its own name. Files \
            of up to 15 MiB, at most 10,000 at once. Names from the guest that could leave the \
            destination are refused and named.
            """)

    @Argument(help: "What to copy: a host path, or AGENT:PATH.")
    var source: String

    @Argument(help: "Where to: a host path, or AGENT:PATH.")
    var destination: String

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    /// `agent:path` when the part before the first colon is an agent name.
    static func guest(_ text: String) -> (agent: String, path: String)? {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let agent = String(text[..<colon])
        guard !agent.isEmpty, agent.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" }) else { return nil }
        return (agent, String(text[text.index(after: colon)...]))
    }

    func validate() throws {
        switch (Self.guest(source), Self.guest(destination)) {
        case (nil, nil): throw ValidationError("one side must be AGENT:PATH, e.g. agentry cp report.txt greeter:in/")
        case (.some, .some): throw ValidationError("copy between the host and one agent: one side is a host path")
        default: break
        }
    }

    func run() async throws {
        let copy = Copy(state.ports(try logging.makeLogger()))
        if let (agent, path) = Self.guest(destination) {
            let files = try Self.read(source)
            let single = files.count == 1 && files[0].path.isEmpty
            var target = path
            if single && (path.hasSuffix("/") || path.isEmpty) {
                target += (source as NSString).lastPathComponent
            } else if !single {
                target = path.isEmpty || path.hasSuffix("/") ? path + (source as NSString).lastPathComponent : path
            }
            let count = try await copy.toGuest(agent: agent, files: files, destination: target)
            Output.progress("copied \(count) file\(count == 1 ? "" : "s") to \(agent):\(Copy.guestPath(target))")
        } else if let (agent, path) = Self.guest(source) {
            var target = destination
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: target, isDirectory: &isFolder), isFolder.boolValue {
                let name = (Copy.guestPath(path) as NSString).lastPathComponent
                guard !["", ".", "..", "/"].contains(name) else {
                    throw ValidationError("\(source) has no name of its own to copy under; name the destination itself")
                }
                target += "/" + name
            }
            let writer = HostTree(target)
            let (count, refused) = try await copy.fromGuest(agent: agent, source: path) { file in
                try writer.write(file)
            }
            Output.progress("copied \(count) file\(count == 1 ? "" : "s") to \(target)")
            if !refused.isEmpty {
                Output.error(
                    "error: \(refused.count) name\(refused.count == 1 ? "" : "s") from the guest refused (they could leave \(target)): \(refused.prefix(5).joined(separator: ", "))"
                )
                throw ExitCode(ExitStatus.invalid)
            }
        }
    }

    /// A host file (one, path empty) or the regular files under a host folder.
    static func read(_ path: String) throws -> [Copy.File] {
        let manager = FileManager.default
        var isFolder: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw CoreError(.notFound, "\(path) does not exist")
        }
        guard isFolder.boolValue else {
            return [
                Copy.File(
                    path: "", bytes: try readInput(path, what: "the file"),
                    executable: manager.isExecutableFile(atPath: path))
            ]
        }
        var files: [Copy.File] = []
        guard let walker = manager.enumerator(atPath: path) else {
            throw CoreError(.io, "cannot read the folder \(path)")
        }
        while let relative = walker.nextObject() as? String {
            let full = path + "/" + relative
            let type = (try? manager.attributesOfItem(atPath: full)[.type] as? FileAttributeType) ?? nil
            guard type == .typeRegular else {
                if type == .typeSymbolicLink { Output.progress("warning: \(full) is a symbolic link; not copied") }
                continue
            }
            files.append(
                Copy.File(
                    path: relative, bytes: try readInput(full, what: "the file"),
                    executable: manager.isExecutableFile(atPath: full)))
        }
        return files
    }
}

/// Where `cp` writes what comes from a guest: one file at `root` (written beside it and renamed
/// into place, never through a link at its name), or a folder `root` made new, with folders it
/// makes itself and files it creates (`O_EXCL`), so nothing that was there before is written
/// through.
final class HostTree: Sendable {
    let root: String
    let made = Mutex<Set<String>>([])

    init(_ root: String) { self.root = root }

    func write(_ file: Copy.File) throws {
        let mode: mode_t = file.executable ? 0o755 : 0o644
        guard !file.path.isEmpty else { return try Self.replace(root, with: file.bytes, mode: mode) }
        let parts = file.path.split(separator: "/").map(String.init)
        var folder = root
        try make(folder, first: true)
        for part in parts.dropLast() {
            folder += "/" + part
            try make(folder, first: false)
        }
        try Self.create(folder + "/" + parts.last!, file.bytes, mode: mode)
    }

    /// A folder of the tree; the root must be new.
    func make(_ path: String, first: Bool) throws {
        guard !made.withLock({ $0.contains(path) }) else { return }
        guard mkdir(path, 0o755) == 0 else {
            throw CoreError(
                .io,
                first
                    ? "\(path) exists; a folder from a guest is copied into a new one (name another destination)"
                    : "cannot make \(path): \(String(cString: strerror(errno)))")
        }
        made.withLock { _ = $0.insert(path) }
    }

    /// A new file of `mode` (less the umask, as any file a program creates).
    static func create(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw CoreError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        try writeAll(descriptor, bytes, path)
    }

    static func replace(_ path: String, with bytes: [UInt8], mode: mode_t) throws {
        let temporary = path + ".agentry-cp-\(getpid())"
        try create(temporary, bytes, mode: mode)
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw CoreError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8], _ path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBufferPointer {
                Glibc.write(descriptor, $0.baseAddress! + offset, bytes.count - offset)
            }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw CoreError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
            offset += written
        }
    }
}

/// This process's terminal, raw for the length of an `exec -it` session and restored after.
struct RawTerminal {
    let descriptor: Int32
    let saved: termios

    /// Makes `descriptor` raw when it is a terminal; nil when it is not (a pipe, a file).
    static func enter(_ descriptor: Int32) -> RawTerminal? {
        guard isatty(descriptor) != 0 else { return nil }
        var saved = termios()
        guard tcgetattr(descriptor, &saved) == 0 else { return nil }
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(descriptor, TCSANOW, &raw) == 0 else { return nil }
        return RawTerminal(descriptor: descriptor, saved: saved)
    }

    func leave() {
        var saved = saved
        tcsetattr(descriptor, TCSANOW, &saved)
    }

    /// The window's size (of whichever standard descriptor is a terminal), else 24 by 80.
    static func size() -> (rows: Int, columns: Int) {
        var window = winsize()
        for descriptor: Int32 in [1, 0, 2] where ioctl(descriptor, UInt(TIOCGWINSZ), &window) == 0 && window.ws_row > 0
        {
            return (Int(window.ws_row), Int(window.ws_col))
        }
        return (24, 80)
    }
}
