import AgentryMachine
import AgentryModel
import AgentryWire
import Foundation

/// Where an agent's things live in its machine, per harness: the home is `/agent` (the environment
/// disk); instructions and skills go where the harness looks for them unless the Harness says
/// otherwise (`instructionsFile`, `skillsDir`).
public enum AgentLayout {
    public static let home = "/agent"
    /// What agentry itself keeps in the home: the list of files it wrote, the installed harnesses.
    public static let own = ".agentry"

    public static func instructionsFile(_ harness: Harness) -> String {
        if let explicit = harness.instructionsFile { return explicit }
        switch harness.type {
        case .hermes?: return ".hermes/SOUL.md"
        case .claudeCode?: return "CLAUDE.md"
        default: return "AGENTS.md"
        }
    }

    public static func skillsDirectory(_ harness: Harness) -> String {
        if let explicit = harness.skillsDir { return explicit }
        switch harness.type {
        case .hermes?: return ".hermes/skills"
        case .claudeCode?: return ".claude/skills"
        case .codex?: return ".codex/skills"
        case .opencode?: return ".opencode/skills"
        default: return "skills"
        }
    }

    public static func outputDirectory(_ agent: Agent) -> String { trimmed(agent.run.output.isEmpty ? "out" : agent.run.output) }
    public static func memoryDirectory(_ agent: Agent) -> String { trimmed(agent.memory.path.isEmpty ? "memory" : agent.memory.path) }

    static func trimmed(_ path: String) -> String {
        SourceTree.normalize(path) ?? path.split(separator: "/").joined(separator: "/")
    }
}

/// The per-run values templates may use besides the agent's own.
public struct RunContext: Sendable {
    public var prompt: String
    public var runID: String
    public var timeoutSeconds: Int

    public init(prompt: String, runID: String, timeoutSeconds: Int) {
        self.prompt = prompt
        self.runID = runID
        self.timeoutSeconds = timeoutSeconds
    }

    /// Apply pushes configuration with no run in sight.
    public static let none = RunContext(prompt: "", runID: "", timeoutSeconds: 0)
}

/// An agent rendered for its machine: the files to put in its home (the files of the previous push,
/// listed in `.agentry/files`, are removed first, so a dropped skill or a switched harness leaves
/// nothing stale), the environment and the command of a run. Secret values are never part of it: a variable that needs one names the secret.
public struct RenderedAgent: Sendable {
    /// Files relative to the home, agentry's own manifest included.
    public var files: [BundleFile]
    public var environment: [String: String]
    /// Variables whose value holds a secret: the variable → its template, and the secret references
    /// the template uses (`{{model.apiKey}}` is the model's credentials).
    public var secretEnvironment: [String: (template: String, secret: String)]
    public var command: [String]
}

public enum Rendering {
    static let apiKey = "model.apiKey"

    /// Template values for an agent (and a run).
    public static func values(_ bundle: AgentBundle, run: RunContext) -> [String: String] {
        let home = AgentLayout.home
        var values = [
            "prompt": run.prompt,
            "agent.name": bundle.name,
            "agent.home": home,
            "agent.instructionsFile": home + "/" + AgentLayout.instructionsFile(bundle.harness),
            "agent.skillsDir": home + "/" + AgentLayout.skillsDirectory(bundle.harness),
            "agent.outputDir": home + "/" + AgentLayout.outputDirectory(bundle.agent),
            "agent.memoryDir": home + "/" + AgentLayout.memoryDirectory(bundle.agent),
            "harness.version": bundle.harness.version ?? "",
            "run.id": run.runID,
            "run.timeoutSeconds": "\(run.timeoutSeconds)",
        ]
        if let model = bundle.model {
            values["model.name"] = model.name
            values["model.provider"] = model.provider
            values["model.api"] = model.api?.rawValue ?? ""
            values["model.baseUrl"] = model.baseURL
            values["model.contextWindow"] = model.contextWindow.map(String.init) ?? ""
            values["model.maxOutputTokens"] = model.maxOutputTokens.map(String.init) ?? ""
        }
        return values
    }

    /// Replaces `{{ name }}` placeholders. Unknown names were refused by validation; they render empty.
    public static func render(_ template: String, _ values: [String: String]) -> String {
        var output = ""
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            output += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                output += rest[open.lowerBound...]
                return output
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            output += values[name] ?? ""
            rest = rest[close.upperBound...]
        }
        output += rest
        return output
    }

    public static func uses(_ template: String, _ name: String) -> Bool {
        var rest = Substring(template)
        while let open = rest.range(of: "{{"), let close = rest[open.upperBound...].range(of: "}}") {
            if rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces) == name { return true }
            rest = rest[close.upperBound...]
        }
        return false
    }

    public static func render(_ bundle: AgentBundle, run: RunContext) -> RenderedAgent {
        let values = values(bundle, run: run)
        var files: [BundleFile] = []
        if let instructions = bundle.instructions {
            files.append(BundleFile(path: AgentLayout.instructionsFile(bundle.harness), bytes: instructions))
        }
        let skills = AgentLayout.skillsDirectory(bundle.harness)
        for skill in bundle.skills {
            for file in skill.files {
                var copy = file
                copy.path = skills + "/" + skill.name + "/" + file.path
                files.append(copy)
            }
        }
        for config in bundle.harness.configFiles {
            files.append(BundleFile(path: AgentLayout.trimmed(config.path), mode: 0o600, bytes: Array(render(config.content, values).utf8)))
        }
        let identity = """
            {"agent": \(JSONText.quote(bundle.name)), "revision": \(JSONText.quote(bundle.revision)), \
            "commit": \(JSONText.quote(bundle.commit)), "harness": \(JSONText.quote(bundle.harness.metadata.name)), \
            "model": \(JSONText.quote(bundle.model?.metadata.name ?? ""))}

            """
        files.append(BundleFile(path: AgentLayout.own + "/agent.json", bytes: Array(identity.utf8)))
        let manifest = (files.map(\.path) + [AgentLayout.own + "/files"]).joined(separator: "\n") + "\n"
        files.append(BundleFile(path: AgentLayout.own + "/files", bytes: Array(manifest.utf8)))

        // Later layers win: the environment's, the harness's, the model's, the agent's own.
        var environment: [String: String] = [:]
        var secretEnvironment: [String: (template: String, secret: String)] = [:]
        let layers = [bundle.environment?.env ?? [:], bundle.harness.env, bundle.harness.modelEnv, bundle.agent.env]
        for layer in layers {
            for (key, template) in layer {
                if uses(template, apiKey) {
                    environment[key] = nil
                    secretEnvironment[key] = (template, bundle.model?.credentialsRef ?? "")
                } else {
                    secretEnvironment[key] = nil
                    environment[key] = render(template, values)
                }
            }
        }
        environment["HOME"] = AgentLayout.home
        environment["AGENTRY_AGENT"] = bundle.name
        if !run.runID.isEmpty { environment["AGENTRY_RUN_ID"] = run.runID }
        environment["AGENTRY_OUTPUT_DIR"] = values["agent.outputDir"]
        let command = bundle.harness.command.map { render($0, values) }
        return RenderedAgent(
            files: files, environment: environment,
            secretEnvironment: secretEnvironment, command: command)
    }
}

enum JSONText {
    static func quote(_ text: String) -> String {
        var output = ""
        JSON.quote(text, into: &output)
        return output
    }
}

/// Writes a POSIX ustar archive (what busybox tar and GNU tar both extract).
public struct TarWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public enum TarError: Error, CustomStringConvertible {
        case pathTooLong(String)
        public var description: String {
            switch self {
            case .pathTooLong(let path): return "the path \(path) is too long for the archive (255 bytes at most)"
            }
        }
    }

    public mutating func add(_ file: BundleFile) throws {
        var header = [UInt8](repeating: 0, count: 512)
        var name = Array(file.path.utf8)
        var prefix: [UInt8] = []
        if name.count > 100 {
            // Split at a slash: up to 155 bytes of prefix, up to 100 of name.
            guard let split = name.indices.last(where: { name[$0] == UInt8(ascii: "/") && $0 <= 155 && name.count - $0 - 1 <= 100 })
            else { throw TarError.pathTooLong(file.path) }
            prefix = Array(name[..<split])
            name = Array(name[(split + 1)...])
        }
        func put(_ value: [UInt8], at offset: Int) {
            for (index, byte) in value.enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: Int, width: Int) -> [UInt8] {
            let text = String(value, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - text.count)) + text).utf8) + [0]
        }
        let isLink = file.linkTarget != nil
        put(name, at: 0)
        put(octal(file.mode & 0o7777, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(octal(isLink ? 0 : file.bytes.count, width: 12), at: 124)
        put(octal(0, width: 12), at: 136)
        put(Array("        ".utf8), at: 148)
        header[156] = isLink ? UInt8(ascii: "2") : UInt8(ascii: "0")
        if let target = file.linkTarget { put(Array(target.utf8.prefix(100)), at: 157) }
        put(Array("ustar".utf8) + [0] + Array("00".utf8), at: 257)
        put(prefix, at: 345)
        let checksum = header.reduce(0) { $0 + Int($1) }
        put(Array((String(repeating: "0", count: max(0, 6 - String(checksum, radix: 8).count)) + String(checksum, radix: 8)).utf8) + [0, 0x20], at: 148)
        bytes += header
        if !isLink {
            bytes += file.bytes
            bytes += [UInt8](repeating: 0, count: (512 - file.bytes.count % 512) % 512)
        }
    }

    public mutating func finish() -> [UInt8] {
        bytes += [UInt8](repeating: 0, count: 1024)
        return bytes
    }
}

/// Puts a rendered agent's files into its machine: one archive over the control channel, unpacked in
/// the home after the previous push's files are removed. Two round trips whatever the file count.
public enum Provisioner {
    /// Puts `files` into the guest as one tar at `staging` (a tmpfs path) and returns its digest.
    static func putArchive(_ files: [BundleFile], at staging: String, over channel: ControlChannel) throws -> String {
        let bytes = try archive(files)
        try channel.putFile(staging, bytes, mode: 0o600)
        return SHA256.hex(bytes)
    }

    static func archive(_ files: [BundleFile]) throws -> [UInt8] {
        var archive = TarWriter()
        for file in files { try archive.add(file) }
        return archive.finish()
    }

    /// Puts the configuration archive into the guest and returns the shell snippet that applies it
    /// (a no-op when the same configuration is already there).
    static func stage(_ rendered: RenderedAgent, over channel: ControlChannel) throws -> String {
        let staging = "/run/agentry-config.tar"
        let digest = try putArchive(rendered.files, at: staging, over: channel)
        return """
            cd \(AgentLayout.home)
            current=; [ -f \(AgentLayout.own)/config.digest ] && read -r current < \(AgentLayout.own)/config.digest
            if [ "$current" != \(digest) ]; then
                if [ -f \(AgentLayout.own)/files ]; then
                    while IFS= read -r file; do
                        [ -n "$file" ] || continue
                        rm -f -- "$file"
                        # and the folders that held only what agentry wrote
                        folder=$(dirname -- "$file")
                        while [ "$folder" != . ] && rmdir -- "$folder" 2>/dev/null; do folder=$(dirname -- "$folder"); done
                    done < \(AgentLayout.own)/files
                fi
                tar -xf \(staging)
                echo \(digest) > \(AgentLayout.own)/config.digest
            fi
            rm -f \(staging)

            """
    }

    /// `fresh`: the disk was made by this apply, so nothing of agentry's is on it yet.
    public static func push(_ rendered: RenderedAgent, over channel: ControlChannel, fresh: Bool = false) throws {
        // Starting a shell in the guest is the expensive part (emulated under TCG), so the common
        // cases go without one: the same configuration already there (a restart), or none of
        // agentry's files there yet (a new disk), where plain file puts do.
        let digest = SHA256.hex(try archive(rendered.files))
        let home = AgentLayout.home + "/"
        let current = fresh ? nil : try? channel.getFile(home + AgentLayout.own + "/config.digest")
        if let current, String(decoding: current, as: UTF8.self) == digest + "\n" { return }
        // No digest: a new disk, unless an interrupted push left its files (then the manifest says).
        if current == nil, !rendered.files.contains(where: { $0.linkTarget != nil }),
            fresh || (try? channel.getFile(home + AgentLayout.own + "/files")) == nil
        {
            for file in rendered.files { try channel.putFile(home + file.path, file.bytes, mode: file.mode) }
            try channel.putFile(home + AgentLayout.own + "/config.digest", Array((digest + "\n").utf8))
            return
        }
        try GuestShell.run(
            "set -e\n" + (try stage(rendered, over: channel)), over: channel,
            what: "writing the agent's configuration")
    }

    /// Unpacks `files` (paths relative to the home) into the agent's home, keeping what is there.
    static func unpack(_ files: [BundleFile], over channel: ControlChannel, what: String) throws {
        let staging = "/run/agentry-unpack.tar"
        _ = try putArchive(files, at: staging, over: channel)
        try GuestShell.run(
            "cd \(AgentLayout.home) && tar -xf \(staging) && rm -f \(staging)", over: channel, what: what)
    }
}

/// Reads the regular files of a tar archive (ustar and GNU, as busybox and GNU tar write them).
public enum TarReader {
    public static func files(_ bytes: [UInt8]) -> [(path: String, bytes: [UInt8])] {
        var files: [(String, [UInt8])] = []
        var offset = 0
        var longName: String?
        func field(_ start: Int, _ length: Int) -> [UInt8] {
            Array(bytes[(offset + start)..<(offset + start + length)].prefix { $0 != 0 })
        }
        while offset + 512 <= bytes.count {
            let header = bytes[offset..<(offset + 512)]
            if header.allSatisfy({ $0 == 0 }) { break }
            let sizeText = String(decoding: field(124, 12), as: UTF8.self).trimmingCharacters(in: .whitespaces)
            guard let size = Int(sizeText, radix: 8), size >= 0 else { break }
            let type = bytes[offset + 156]
            var name = String(decoding: field(0, 100), as: UTF8.self)
            let prefix = String(decoding: field(345, 155), as: UTF8.self)
            if !prefix.isEmpty, field(257, 5) == Array("ustar".utf8) { name = prefix + "/" + name }
            let dataStart = offset + 512
            guard dataStart + size <= bytes.count else { break }
            let data = Array(bytes[dataStart..<(dataStart + size)])
            switch type {
            case UInt8(ascii: "L"):
                longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "0"), 0:
                files.append((longName ?? name, data))
                longName = nil
            default:
                longName = nil
            }
            offset = dataStart + (size + 511) / 512 * 512
        }
        return files
    }
}
