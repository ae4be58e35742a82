import AgentryGit
import AgentryMachine
import AgentryModel
import AgentryPlan
import AgentryState
import AgentryWire
import Foundation
import Logging

/// What `agentry run` is asked to do.
public struct RunRequest: Sendable {
    public var agent: String
    public var repository: String
    public var ref: String
    public var path: String
    public var stateDirectory: String
    public var prompt: String?
    public var timeout: Duration?
    public var actor: String
    public var trigger: String
    public var guestAgent: String
    public var historyBranch: String

    public init(
        agent: String, repository: String, ref: String, path: String, stateDirectory: String, prompt: String?,
        timeout: Duration?, actor: String, trigger: String = "manual", guestAgent: String,
        historyBranch: String = History.defaultBranch
    ) {
        self.agent = agent
        self.repository = repository
        self.ref = ref
        self.path = path
        self.stateDirectory = stateDirectory
        self.prompt = prompt
        self.timeout = timeout
        self.actor = actor
        self.trigger = trigger
        self.guestAgent = guestAgent
        self.historyBranch = historyBranch
    }
}

public struct RunOutcome: Sendable {
    public var record: RunRecord
    public var historyCommit: String
    public var pushWarning: String?
}

/// Limits on what a run keeps in history.
public enum RunLimits {
    /// The log kept in history: its head and tail around a marker past this many bytes.
    public static let logBytes = 1 << 20
    /// Artifacts up to this size are committed; larger ones are recorded by digest only.
    public static let storedArtifactBytes = 256 << 10
    /// All committed artifacts of one run together.
    public static let storedArtifactsTotal = 4 << 20
    /// The memory snapshot: files up to this size, at most `memoryTotal` together.
    public static let memoryFileBytes = 1 << 20
    public static let memoryTotal = 8 << 20
    /// What a run's collection reads from the guest at most.
    public static let collectedBytes = 64 << 20
}

/// Replaces every secret value in `bytes` with `***`.
public struct Redactor: Sendable {
    let secrets: [[UInt8]]

    public init(_ values: [[UInt8]]) {
        // Longest first, so a value containing another is replaced whole.
        secrets = values.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
    }

    public func redact(_ bytes: [UInt8]) -> [UInt8] {
        guard !secrets.isEmpty else { return bytes }
        return scan(bytes, before: bytes.count).output
    }

    /// Redacts `bytes` from the start, deciding every position before `end` (a secret starting
    /// there may run past it); returns the output and where it stopped.
    func scan(_ bytes: [UInt8], before end: Int) -> (output: [UInt8], stoppedAt: Int) {
        var output: [UInt8] = []
        output.reserveCapacity(max(0, end))
        var index = 0
        let mask = Array("***".utf8)
        outer: while index < end {
            for secret in secrets where bytes[index] == secret[0] && index + secret.count <= bytes.count {
                if bytes[index..<(index + secret.count)].elementsEqual(secret) {
                    output += mask
                    index += secret.count
                    continue outer
                }
            }
            output.append(bytes[index])
            index += 1
        }
        return (output, index)
    }
}

/// `agentry run`: makes sure the agent's machine is up and current (apply's rules, for this agent
/// only), pushes its configuration, installs its harness once per environment and harness revision,
/// projects its secrets into a tmpfs for this run only, runs the harness command in its home with
/// output streamed and the timeout enforced, collects artifacts and the memory snapshot, and commits
/// the record to the history branch (pushed when there is an `origin`).
public enum Runner {
    static let path = GuestShell.runPath

    public static func run(
        _ request: RunRequest, logger: Logger, progress: @escaping (String) -> Void,
        output: @escaping (ProcessStream, [UInt8]) -> Void
    ) throws -> RunOutcome {
        var phases = PhaseClock(logger: logger)
        // 1. The machine, as apply would leave it (this agent only). Waits briefly for another apply.
        var options = ApplyOptions(guestAgent: request.guestAgent, actor: request.actor, only: [request.agent])
        options.historyBranch = request.historyBranch
        var applied: (Planning.Outcome, [AppliedStep])?
        let deadline = Date().addingTimeInterval(60)
        while applied == nil {
            do {
                applied = try Planning.apply(
                    repository: request.repository, ref: request.ref, path: request.path,
                    stateDirectory: request.stateDirectory, savedPlan: nil, options: options, logger: logger,
                    progress: progress)
            } catch let error as LoadError where error.message.contains("locked by process") && Date() < deadline {
                usleep(250_000)
            }
        }
        guard let (outcome, steps) = applied else { throw LoadError("internal: no apply outcome") }
        switch outcome {
        case .invalid(let report):
            throw LoadError("the repository at \(request.ref) is invalid (\(report.errorCount) errors); `agentry validate` shows them")
        case .refused(let refusal):
            throw LoadError("apply refused: \(refusal)")
        default:
            break
        }
        for step in steps where step.failed { throw LoadError("\(request.agent): \(step.action.rawValue) failed: \(step.detail)") }

        phases.mark("apply")
        guard let store = try Planning.openStore(request.stateDirectory) else { throw LoadError("no state in \(request.stateDirectory)") }
        if let kill = try store.killSwitch(request.agent) {
            throw LoadError("\(request.agent) is killed (\(kill.reason), by \(kill.actor)); it does not run until `agentry unkill \(request.agent)`")
        }
        let reader = try CommitReader(repository: request.repository, path: request.path, store: store, logger: logger)
        let loaded = try reader.load(request.ref)
        guard let wanted = loaded.desired.agents[request.agent] else {
            throw LoadError("the repository at \(request.ref) has no agent \(request.agent)")
        }
        guard wanted.lifecycle == .active else {
            throw LoadError("\(request.agent) is \(wanted.lifecycle.rawValue) (lifecycle in \(wanted.origin.file)); it does not run")
        }
        let bundle = try reader.bundle(request.agent, in: loaded)
        phases.mark("load")
        let directory = store.directory + "/agents/" + request.agent
        let channel: ControlChannel
        do {
            channel = try QEMUMachine.connect(directory, name: request.agent, timeout: .seconds(30))
        } catch let error as MachineError {
            throw LoadError(error.message)
        }

        // The machine's egress allowlist as the desired state says (an installation that was
        // interrupted may have left it widened for package registries).
        let egressField = bundle.fields.first { $0.0 == "environment.network.egress" }?.1 ?? "none"
        if let allowlist = Applier.allowlist(egress: egressField, fields: bundle.fields) {
            try? allowlist.write(to: QEMUMachine.egressAllowFile(directory))
        }
        phases.mark("connect")
        // 2. Secrets, resolved before anything starts: a missing one fails the run, naming it.
        let secrets = SecretStore(stateDirectory: store.directory)
        var secretValues: [String: [UInt8]] = [:]
        var missing: [String] = []
        let rendered0 = Rendering.render(bundle, run: .none)
        var needed = bundle.agent.secrets.map { ($0.ref, $0.optional) }
        needed += rendered0.secretEnvironment.values.map { ($0.secret, false) }.filter { !$0.0.isEmpty }
        for (reference, optional) in needed where secretValues[reference] == nil {
            do {
                if let value = try secrets.value(reference) {
                    secretValues[reference] = value
                } else if !optional {
                    missing.append(reference)
                }
            } catch let error as SecretError {
                throw LoadError(error.message)
            }
        }
        if rendered0.secretEnvironment.values.contains(where: { $0.secret.isEmpty }) {
            throw LoadError("the harness \(bundle.harness.metadata.name) uses {{model.apiKey}} but the model \(bundle.model?.metadata.name ?? "-") has no credentials.ref")
        }
        guard missing.isEmpty else {
            throw LoadError(
                "the run of \(request.agent) needs the secret\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")), which the store does not hold; `agentry secret set \(missing[0])` (value on stdin)")
        }
        let redactor = Redactor(Array(secretValues.values))

        let started = Date()
        let runID = RunID.make(started)
        let timeoutMilliseconds = request.timeout.map {
            max(1, Int($0.components.seconds * 1000 + ($0.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
        } ?? Int(min(bundle.agent.run.timeoutMilliseconds, UInt64(Int.max)))
        let context = RunContext(
            prompt: request.prompt ?? bundle.agent.run.prompt ?? "", runID: runID, timeoutSeconds: timeoutMilliseconds / 1000)
        let rendered = Rendering.render(bundle, run: context)

        do {
            // 3. Configuration, the install check, the secrets folder and an empty output folder:
            // one command in the guest (every command costs a process start, emulated under TCG).
            let secretFolder = "/run/secrets/\(runID)"
            let outputFolder = AgentLayout.outputDirectory(bundle.agent)
            let memory = AgentLayout.memoryDirectory(bundle.agent)
            let marker = installMarker(bundle)
            var prepare = "set -e\n" + (try Provisioner.stage(rendered, over: channel))
            if let marker { prepare += "[ -f \(marker) ] && echo installed || echo not-installed\n" }
            prepare += "umask 077\nmkdir -p \(secretFolder)\numask 022\nrm -rf -- \(quoted(outputFolder))\nmkdir -p -- \(quoted(outputFolder)) \(quoted(memory))\n"
            let prepared = String(decoding: try shell(channel, prepare), as: UTF8.self)
            phases.mark("configuration")
            if marker != nil, prepared.contains("not-installed") {
                try install(bundle, channel: channel, store: store, actor: request.actor, progress: progress)
                phases.mark("install")
            }

            // 4. Secrets into the run's tmpfs folder and the harness's environment.
            // From here on, the run's secrets folder goes whatever happens.
            var secretsRemoved = false
            defer { if !secretsRemoved { try? shell(channel, "rm -rf -- \(secretFolder)") } }
            var environment = rendered.environment
            environment["PATH"] = path
            if bundle.environment?.egress.goesThroughProxy == true {
                environment.merge(EgressProxy.environment) { own, _ in own }
            }
            environment["AGENTRY_SECRETS_DIR"] = secretFolder
            for binding in bundle.agent.secrets {
                guard let value = secretValues[binding.ref] else { continue }
                try channel.putFile(secretFolder + "/" + binding.env, value, mode: 0o400)
                environment[binding.env] = String(decoding: value, as: UTF8.self)
            }
            for (variable, entry) in rendered.secretEnvironment {
                guard let value = secretValues[entry.secret] else { continue }
                var values = Rendering.values(bundle, run: context)
                values["model.apiKey"] = String(decoding: value, as: UTF8.self)
                environment[variable] = Rendering.render(entry.template, values)
            }

            phases.mark("secrets")
            // 5. The harness command, streamed; the log kept redacted.
            guard !rendered.command.isEmpty else { throw LoadError("the harness \(bundle.harness.metadata.name) has no command") }
            progress("run \(runID): \(bundle.harness.metadata.name) for \(request.agent)")
            var log: [UInt8] = []
            var dropped = 0
            // Each stream is redacted as a stream (a secret may arrive split across chunks).
            var streams = [ProcessStream.stdout: StreamRedactor(redactor), .stderr: StreamRedactor(redactor)]
            func emit(_ stream: ProcessStream, _ clean: [UInt8]) {
                guard !clean.isEmpty else { return }
                output(stream, clean)
                if log.count < RunLimits.logBytes * 4 { log += clean } else { dropped += clean.count }
            }
            let result = try channel.exec(
                rendered.command, environment: environment.map { "\($0.key)=\($0.value)" }.sorted(),
                directory: AgentLayout.home, timeout: .milliseconds(timeoutMilliseconds),
                output: { stream, bytes in emit(stream, streams[stream]!.feed(bytes)) })
            for stream in [ProcessStream.stdout, .stderr] { emit(stream, streams[stream]!.finish()) }
            let ended = Date()

            phases.mark("harness")
            // 6. Secrets removed, then artifacts and the memory snapshot collected: one command.
            var folders = [(outputFolder, RunLimits.storedArtifactBytes)]
            if bundle.agent.memory.snapshot { folders.append((memory, RunLimits.memoryFileBytes)) }
            let collected = try collect(channel, folders: folders, secretFolder: secretFolder, redactor: redactor)
            secretsRemoved = true
            let artifacts = limit(collected.filter { $0.folder == outputFolder }, total: RunLimits.storedArtifactsTotal)
            let memoryFiles = limit(collected.filter { $0.folder == memory && bundle.agent.memory.snapshot }, total: RunLimits.memoryTotal)
            var logText = redactor.redact(log)
            var truncated = dropped > 0
            if logText.count > RunLimits.logBytes {
                let head = RunLimits.logBytes / 4
                let tail = RunLimits.logBytes - head
                let skipped = logText.count - head - tail + dropped
                logText = Array(logText.prefix(head)) + Array("\n[agentry: \(skipped) bytes of output not kept]\n".utf8) + Array(logText.suffix(tail))
                truncated = true
            } else if dropped > 0 {
                logText += Array("\n[agentry: \(dropped) bytes of output not kept]\n".utf8)
            }
            if result.timedOut {
                logText += Array("\n[agentry: timed out after \(Canonical.duration(UInt64(timeoutMilliseconds))); the process tree was killed]\n".utf8)
            }

            let record = RunRecord(
                runID: runID, agent: request.agent, desiredCommit: loaded.commit, agentRevision: bundle.revision,
                harnessName: bundle.harness.metadata.name, harnessType: bundle.harness.type?.rawValue ?? "custom",
                harnessVersion: bundle.harness.version ?? "", modelName: bundle.model?.metadata.name ?? "",
                modelProvider: bundle.model?.provider ?? "", model: bundle.model?.name ?? "", trigger: request.trigger,
                triggeredBy: request.actor, host: History.hostName(), startedAt: started, endedAt: ended,
                exitStatus: result.status, timedOut: result.timedOut,
                artifacts: artifacts.map { RunRecord.Artifact(path: $0.path, size: $0.size, sha256: $0.sha256, stored: $0.bytes != nil) },
                logBytes: logText.count, logSHA256: SHA256.hex(logText), logTruncated: truncated,
                memoryFiles: memoryFiles.filter { $0.bytes != nil }.count)

            phases.mark("collect")
            // 7. History.
            var files = [
                RecordFile(path: record.folder + "/record.yaml", bytes: Array(record.yaml.utf8)),
                RecordFile(path: record.folder + "/log.txt", bytes: logText),
            ]
            for artifact in artifacts { if let bytes = artifact.bytes { files.append(RecordFile(path: record.folder + "/artifacts/" + artifact.relative, bytes: bytes)) } }
            for file in memoryFiles { if let bytes = file.bytes { files.append(RecordFile(path: record.folder + "/memory/" + file.relative, bytes: bytes)) } }
            var committed: (commit: String, pushWarning: String?)
            do {
                committed = try History.record(
                    files, message: record.commitMessage, actor: request.actor, repository: request.repository,
                    branch: request.historyBranch, at: ended)
            } catch let error as LoadError where files.count > 2 {
                // Whatever the artifacts hold, the run itself is not lost: record and log alone.
                progress("warning: \(error.message); recording the run without its artifacts and memory")
                committed = try History.record(
                    Array(files.prefix(2)), message: record.commitMessage, actor: request.actor,
                    repository: request.repository, branch: request.historyBranch, at: ended)
            }
            phases.mark("history")
            defer { phases.mark("state") }
            _ = store.withWriterLockIfFree {
                if var agent = try? store.agent(request.agent) {
                    agent.lastRunAt = ended
                    try? store.save(agent)
                }
                try? store.append(
                    EventRecord(
                        agent: request.agent, kind: "run", actor: request.actor,
                        message: "run \(runID): \(result.timedOut ? "timed out" : "exit \(result.status)"), recorded in \(committed.commit.prefix(12))"))
            }
            return RunOutcome(record: record, historyCommit: committed.commit, pushWarning: committed.pushWarning)
        } catch let error as MachineError {
            throw LoadError("the run of \(request.agent) failed: \(redactor.text(error.message))")
        }
    }

    static func quoted(_ text: String) -> String { GuestShell.quote(text) }

    /// Runs a shell snippet in the guest with the run's PATH; fails with its error output.
    @discardableResult
    static func shell(_ channel: ControlChannel, _ script: String, timeout: Duration = .seconds(60)) throws -> [UInt8] {
        try GuestShell.run(script, over: channel, path: path, home: AgentLayout.home, timeout: timeout)
    }

    struct Collected {
        var folder: String
        var relative: String
        var path: String
        var size: Int
        var sha256: String
        var bytes: [UInt8]?
    }

    /// In one guest command: removes the run's secrets, then returns the files of `folders`
    /// (relative to the home): those within each folder's size limit as a tar on stdout (digests
    /// taken here, bytes redacted), the larger ones by size and digest only (taken in the guest).
    static func collect(_ channel: ControlChannel, folders: [(String, Int)], secretFolder: String, redactor: Redactor) throws -> [Collected] {
        // Two finds over all the folders (each find is a process start): files up to the smallest
        // limit come back in the tar; larger ones are listed with size and digest, and those a
        // folder's own limit still allows are fetched one by one below (no process start).
        let smallest = folders.map(\.1).min() ?? 0
        let kib = smallest / 1024
        let existing = folders.map { quoted($0.0) }.joined(separator: " ")
        var script = "rm -rf -- \(secretFolder)\ncd \(AgentLayout.home) || exit 0\nlist=/run/agentry-collect.$$\n"
        script += """
            set --
            for folder in \(existing); do [ -d "$folder" ] && set -- "$@" "$folder"; done
            : > $list
            if [ $# -gt 0 ]; then
                find "$@" -type f -size -\(kib + 1)k > $list
                find "$@" -type f -size +\(kib)k > $list.big
                if [ -s $list.big ]; then
                    while IFS= read -r f; do sha256sum "$f"; wc -c "$f"; done < $list.big >&2
                fi
                rm -f $list.big
            fi

            """
        // (busybox's tar has no -T: the names become the shell's arguments.)
        script += "set --\nwhile IFS= read -r f; do set -- \"$@\" \"$f\"; done < $list\nrm -f $list\n[ $# -eq 0 ] || tar -cf - \"$@\"\n"
        var archive: [UInt8] = []
        var large: [UInt8] = []
        let result = try channel.exec(
            ["/bin/sh", "-c", script], environment: ["PATH=" + path, "HOME=" + AgentLayout.home], timeout: .seconds(300),
            output: { stream, bytes in
                // At most what the limits could ever store, whatever the guest sends.
                if stream == .stdout { if archive.count < RunLimits.collectedBytes { archive += bytes } } else if large.count < 1 << 20 { large += bytes }
            })
        guard result.status == 0 || !archive.isEmpty || result.status == 1 else {
            throw MachineError("collecting the run's files failed (exit \(result.status)): \(String(decoding: large.suffix(400), as: UTF8.self))")
        }
        func folderOf(_ path: String) -> (String, String)? {
            for (folder, _) in folders where path.hasPrefix(folder + "/") { return (folder, String(path.dropFirst(folder.count + 1))) }
            return nil
        }
        var collected: [Collected] = []
        for file in TarReader.files(archive) {
            guard let (folder, relative) = folderOf(file.path) else { continue }
            collected.append(
                collectedFile(folder: folder, relative: relative, path: file.path, raw: file.bytes, redactor: redactor))
        }
        // sha256sum prints "DIGEST  PATH", wc -c "SIZE PATH" (and a total line).
        var digests: [String: String] = [:]
        var sizes: [String: Int] = [:]
        for line in String(decoding: large, as: UTF8.self).split(separator: "\n") {
            let parts = line.trimmingCharacters(in: .whitespaces).split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2 else { continue }
            let path = parts[1].trimmingCharacters(in: .whitespaces)
            if parts[0].count == 64, parts[0].allSatisfy(\.isHexDigit) { digests[path] = String(parts[0]) } else if let size = Int(parts[0]) { sizes[path] = size }
        }
        for (path, digest) in digests.sorted(by: { $0.key < $1.key }) {
            guard let (folder, relative) = folderOf(path) else { continue }
            let size = sizes[path] ?? 0
            var bytes: [UInt8]?
            if let limit = folders.first(where: { $0.0 == folder })?.1, size <= limit,
                let data = try? channel.getFile(AgentLayout.home + "/" + path), SHA256.hex(data) == digest
            {
                collected.append(collectedFile(folder: folder, relative: relative, path: path, raw: data, redactor: redactor))
                continue
            }
            collected.append(Collected(folder: folder, relative: relative, path: path, size: size, sha256: digest, bytes: bytes))
        }
        return collected.sorted { $0.path < $1.path }
    }

    /// A collected file: its bytes redacted, and its digest and size those of what is stored when
    /// redaction changed it (a digest of a file that holds only a token would let a weak token be
    /// guessed). Paths git refuses to store (a `.git` folder inside the output) keep their digest only.
    static func collectedFile(folder: String, relative: String, path: String, raw: [UInt8], redactor: Redactor) -> Collected {
        let clean = redactor.redact(raw)
        let storable = !relative.split(separator: "/").contains { $0.lowercased() == ".git" || $0.lowercased() == "git~1" }
        let digest = SHA256.hex(clean)
        return Collected(folder: folder, relative: relative, path: path, size: clean.count, sha256: digest, bytes: storable ? clean : nil)
    }

    /// Keeps the bytes of files while their sum stays within `total`; the rest by digest only.
    static func limit(_ files: [Collected], total: Int) -> [Collected] {
        var used = 0
        return files.map { file in
            var file = file
            if let bytes = file.bytes {
                if used + bytes.count > total { file.bytes = nil } else { used += bytes.count }
            }
            return file
        }
    }

    /// The marker of a harness installation on the environment disk; nil when it installs nothing.
    static func installMarker(_ bundle: AgentBundle) -> String? {
        installDigest(bundle).map { "\(AgentLayout.home)/\(AgentLayout.own)/installed/\(bundle.harness.metadata.name)-\($0)" }
    }

    /// The harness's installation revision; nil when it installs nothing.
    static func installDigest(_ bundle: AgentBundle) -> String? {
        let steps = bundle.harness.install
        guard !steps.apt.isEmpty || !steps.pip.isEmpty || !steps.npm.isEmpty || steps.script != nil else { return nil }
        return String(SHA256.hex(
            [bundle.harness.metadata.name, bundle.harness.version ?? "", steps.apt.joined(separator: ","), steps.pip.joined(separator: ","),
             steps.npm.joined(separator: ","), steps.script ?? ""].joined(separator: "\n")).prefix(16))
    }

    /// Installs the harness (apt, pip, npm, script) once per environment disk and harness revision:
    /// a marker in `.agentry/installed/` says it was done; the event log records it.
    static func install(_ bundle: AgentBundle, channel: ControlChannel, store: StateStore, actor: String, progress: (String) -> Void) throws {
        let steps = bundle.harness.install
        guard let marker = installMarker(bundle), let digest = installDigest(bundle) else { return }
        let debian = bundle.environment?.base == .debian12
        if !debian, !steps.apt.isEmpty || !steps.pip.isEmpty || !steps.npm.isEmpty {
            throw LoadError(
                "the harness \(bundle.harness.metadata.name) installs with apt, pip or npm, which need the debian-12 base; the environment \(bundle.environment?.metadata.name ?? "-") is minimal")
        }
        if !steps.apt.isEmpty || !steps.pip.isEmpty || !steps.npm.isEmpty, bundle.environment.map({ $0.egress == .none }) ?? true {
            throw LoadError(
                "installing the harness \(bundle.harness.metadata.name) downloads packages, but the environment \(bundle.environment?.metadata.name ?? "-") has no network (egress: none)")
        }
        progress("installing the harness \(bundle.harness.metadata.name) \(bundle.harness.version ?? "") (once per environment disk)")
        // Behind an allowlist, the installation may also reach the package registries it uses.
        var proxyEnvironment: [String] = []
        var restoreAllowlist: () -> Void = {}
        defer { restoreAllowlist() }
        if bundle.environment?.egress.goesThroughProxy == true {
            let file = QEMUMachine.egressAllowFile(store.directory + "/agents/" + bundle.name)
            let runtime = EgressAllowlist.read(file)
            let registries = EgressAllowlist.registries(
                apt: !steps.apt.isEmpty, pip: !steps.pip.isEmpty, npm: !steps.npm.isEmpty, debianMirror: DebianImage.mirror())
            try? EgressAllowlist(runtime.entries + registries).write(to: file)
            restoreAllowlist = { try? runtime.write(to: file) }
            proxyEnvironment = EgressProxy.environment.map { "\($0.key)=\($0.value)" }
            progress("the installation may also reach \(registries.joined(separator: ", "))")
        }
        var script = "set -e\nexport DEBIAN_FRONTEND=noninteractive\n"
        if !steps.apt.isEmpty {
            script += "apt-get update -qq\napt-get install -y -qq --no-install-recommends \(steps.apt.map(quoted).joined(separator: " "))\n"
        }
        if !steps.pip.isEmpty {
            script += "[ -x /opt/agentry/venv/bin/pip ] || python3 -m venv /opt/agentry/venv\n/opt/agentry/venv/bin/pip install -q \(steps.pip.map(quoted).joined(separator: " "))\n"
        }
        if !steps.npm.isEmpty {
            script += "npm install -g -q --prefix /opt/agentry/npm \(steps.npm.map(quoted).joined(separator: " "))\n"
        }
        if let custom = steps.script { script += custom + "\n" }
        script += "mkdir -p \(AgentLayout.home)/\(AgentLayout.own)/installed && echo \(quoted(bundle.harness.version ?? "")) > \(marker)\n"
        var tail: [UInt8] = []
        // The installation's own output, a line at a time, as progress.
        var pending: [UInt8] = []
        func progressLine(_ bytes: [UInt8]) {
            pending += bytes
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                if !line.trimmingCharacters(in: .whitespaces).isEmpty { progress("install: " + line) }
                pending.removeSubrange(...newline)
            }
        }
        let result = try channel.exec(
            ["/bin/sh", "-c", script], environment: ["PATH=" + path, "HOME=" + AgentLayout.home] + proxyEnvironment,
            timeout: .seconds(1800), output: { _, bytes in
                tail = Array((tail + bytes).suffix(2000))
                progressLine(bytes)
            })
        guard result.status == 0 else {
            throw LoadError("installing the harness \(bundle.harness.metadata.name) failed (exit \(result.status)):\n\(String(decoding: tail, as: UTF8.self))")
        }
        _ = store.withWriterLockIfFree {
            try? store.append(
                EventRecord(
                    agent: bundle.name, kind: "install", actor: actor,
                    message: "installed \(bundle.harness.metadata.name) \(bundle.harness.version ?? "") (\(digest))"))
        }
    }
}

extension Redactor {
    func text(_ text: String) -> String { String(decoding: redact(Array(text.utf8)), as: UTF8.self) }

    /// The longest secret, in bytes.
    var longest: Int { secrets.first?.count ?? 0 }
}

/// Redacts a stream that arrives in chunks: a secret split across two chunks is still caught, by
/// holding back the bytes that could be the start of one until the next chunk (or the end) says.
public struct StreamRedactor {
    let redactor: Redactor
    var held: [UInt8] = []

    public init(_ redactor: Redactor) {
        self.redactor = redactor
    }

    /// The redacted bytes that are safe to pass on now. Positions from which the longest secret
    /// would still fit in what has arrived are decided; the rest waits for the next chunk.
    public mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        let longest = redactor.longest
        guard longest > 0 else { return bytes }
        let text = held + bytes
        let (output, index) = redactor.scan(text, before: text.count - (longest - 1))
        held = index < text.count ? Array(text[index...]) : []
        return output
    }

    /// What is still held back, redacted (at the end of the stream).
    public mutating func finish() -> [UInt8] {
        defer { held = [] }
        return redactor.redact(held)
    }
}

/// Logs how long each phase of a run took (at debug level: `--log-level debug`).
struct PhaseClock {
    let logger: Logger
    let label: Logger.Message
    var last = ContinuousClock.now

    init(logger: Logger, label: Logger.Message = "run phase") {
        self.logger = logger
        self.label = label
    }

    mutating func mark(_ phase: String) {
        let now = ContinuousClock.now
        let elapsed = now - last
        last = now
        logger.debug(label, metadata: ["phase": "\(phase)", "ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)"])
    }
}

extension Egress {
    /// `model-only` and host lists reach out only through the machine's egress proxy.
    var goesThroughProxy: Bool {
        switch self {
        case .modelOnly, .hosts: return true
        case .none, .all: return false
        }
    }
}
