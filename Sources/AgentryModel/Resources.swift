import AgentryBasics
import AgentryYAML
import Foundation

/// Where a resource or a value was declared.
public struct Origin: Sendable, Hashable {
    /// Path relative to the agent repository root.
    public var file: String
    public var mark: SourceMark

    public init(file: String, mark: SourceMark) {
        self.file = file
        self.mark = mark
    }
}

/// A by-name reference to another resource, with where it was written.
public struct Reference: Sendable, Hashable {
    public var name: String
    public var mark: SourceMark

    public init(_ name: String, mark: SourceMark) {
        self.name = name
        self.mark = mark
    }
}

public struct Metadata: Sendable, Hashable {
    public var name: String
    public var owner: String?
    public var labels: [String: String]
}

public enum Instructions: Sendable, Hashable {
    case inline(String)
    /// A path relative to the declaring YAML file.
    case file(String, mark: SourceMark)
}

public struct SecretBinding: Sendable, Hashable {
    public var env: String
    public var ref: String
    public var optional: Bool
    public var mark: SourceMark
}

public struct RunDefaults: Sendable, Hashable {
    public var prompt: String?
    public var timeoutMilliseconds: UInt64
    public var output: String
    /// `run.budget.tokens`: the most one run may spend, input and output together.
    public var budgetTokens: Int? = nil
    /// `run.schedule` and `run.timeZone`: when `agentry serve` starts runs on its own.
    public var schedule: RunSchedule? = nil
}

/// A cron expression and the time zone it is read in.
public struct RunSchedule: Sendable, Hashable {
    public var expression: String
    /// An IANA name; `UTC` unless the agent says otherwise.
    public var timeZone: String

    public init(expression: String, timeZone: String) {
        self.expression = expression
        self.timeZone = timeZone
    }

    /// The first time after `date` that it fires; nil if the expression or zone does not read.
    public func next(after date: Date) -> Date? {
        guard let cron = CronSchedule(expression), let zone = TimeZone(identifier: timeZone) else { return nil }
        return cron.next(after: date, in: zone)
    }
}

public struct MemorySettings: Sendable, Hashable {
    public var path: String
    public var snapshot: Bool
}

public struct Agent: Sendable {
    public var metadata: Metadata
    public var origin: Origin
    public var description: String?
    public var instructions: Instructions?
    public var harness: Reference?
    public var model: Reference?
    public var fallbackModels: [Reference]
    public var environment: Reference?
    public var skills: [Reference]
    public var secrets: [SecretBinding]
    public var env: [String: String]
    /// `spec.tools`; nil when the agent leaves every capability to its default (`allow`).
    public var tools: ToolPolicy? = nil
    public var mcpServers: [MCPServer] = []
    public var run: RunDefaults
    public var memory: MemorySettings
    public var lifecycle: Lifecycle
    public var deletionPolicy: DeletionPolicy
}

public struct ConfigFile: Sendable, Hashable {
    public var path: String
    public var content: String
}

public struct InstallSteps: Sendable, Hashable {
    public var apt: [String]
    public var pip: [String]
    public var npm: [String]
    public var script: String?

    public init(apt: [String] = [], pip: [String] = [], npm: [String] = [], script: String? = nil) {
        self.apt = apt
        self.pip = pip
        self.npm = npm
        self.script = script
    }
}

public struct Harness: Sendable {
    public var metadata: Metadata
    public var origin: Origin
    public var type: HarnessType?
    public var version: String?
    public var install: InstallSteps
    public var command: [String]
    /// The argv of a run that continues the previous session; empty when the harness has none.
    public var continueCommand: [String] = []
    public var env: [String: String]
    public var modelEnv: [String: String]
    public var configFiles: [ConfigFile]
    public var instructionsFile: String?
    public var skillsDir: String?
    public var stateDirs: [String]
    public var apis: [ModelAPI]
}

public struct Model: Sendable {
    public var metadata: Metadata
    public var origin: Origin
    public var provider: String
    public var name: String
    public var api: ModelAPI?
    public var baseURL: String
    /// The secret store key holding the API key, if the model needs one.
    public var credentialsRef: String?
    public var contextWindow: Int?
    public var maxOutputTokens: Int?
}

public enum Egress: Sendable, Hashable {
    case none, modelOnly, all
    case hosts([String])
}

public struct Environment: Sendable {
    public var metadata: Metadata
    public var origin: Origin
    public var base: EnvironmentBase?
    public var aptPackages: [String]
    public var pipPackages: [String]
    public var cpus: Int
    public var memory: Quantity
    public var disk: Quantity
    public var egress: Egress
    public var env: [String: String]
}

/// A skill folder `skills/<name>/` with its `SKILL.md` front matter.
public struct Skill: Sendable {
    /// The folder name, which is the name agents refer to.
    public var name: String
    /// Folder path relative to the agent repository root.
    public var path: String
    public var description: String
    public var license: String?
    public var compatibility: String?
    public var metadata: [String: String]
    public var allowedTools: String?
}

/// Every resource of a repository, as decoded. Entries exist for documents with problems too (as
/// far as they could be read), so one broken file does not cascade into "unresolved" errors.
public struct Catalog: Sendable {
    public var agents: [Agent] = []
    public var harnesses: [Harness] = []
    public var models: [Model] = []
    public var environments: [Environment] = []
    public var skills: [Skill] = []

    public init() {}
}

// MARK: - Lenient extraction from validated nodes

extension YAMLNode {
    subscript(path: String...) -> YAMLNode? {
        var node: YAMLNode? = self
        for key in path { node = node?[key] }
        return node
    }

    var stringValue: String? {
        if case .string(let text) = resolved { return text }
        return nil
    }

    var intValue: Int? {
        if case .int(let value) = resolved { return value }
        return nil
    }

    var boolValue: Bool? {
        if case .bool(let value) = resolved { return value }
        return nil
    }

    var stringList: [String] {
        sequence?.compactMap(\.stringValue) ?? []
    }

    var referenceValue: Reference? {
        stringValue.map { Reference($0, mark: mark) }
    }

    var stringMap: [String: String] {
        var map: [String: String] = [:]
        for pair in pairs ?? [] {
            if let key = pair.key.stringValue, let value = pair.value.stringValue { map[key] = value }
        }
        return map
    }
}

enum Extract {
    static func metadata(_ root: YAMLNode) -> Metadata {
        Metadata(
            name: root["metadata", "name"]?.stringValue ?? "",
            owner: root["metadata", "owner"]?.stringValue,
            labels: root["metadata", "labels"]?.stringMap ?? [:])
    }

    static func agent(_ root: YAMLNode, origin: Origin) -> Agent {
        let spec = root["spec"]
        var instructions: Instructions?
        if let node = spec?["instructions"] {
            if let text = node.stringValue {
                instructions = .inline(text)
            } else if let file = node["file"], let path = file.stringValue {
                instructions = .file(path, mark: file.mark)
            }
        }
        let secrets: [SecretBinding] = (spec?["secrets"]?.sequence ?? []).compactMap { item in
            guard let env = item["env"]?.stringValue, let ref = item["ref"]?.stringValue else { return nil }
            return SecretBinding(env: env, ref: ref, optional: item["optional"]?.boolValue ?? false, mark: item.mark)
        }
        return Agent(
            metadata: metadata(root), origin: origin,
            description: spec?["description"]?.stringValue,
            instructions: instructions,
            harness: spec?["harness"]?.referenceValue,
            model: spec?["model"]?.referenceValue,
            fallbackModels: (spec?["fallbackModels"]?.sequence ?? []).compactMap(\.referenceValue),
            environment: spec?["environment"]?.referenceValue,
            skills: (spec?["skills"]?.sequence ?? []).compactMap(\.referenceValue),
            secrets: secrets,
            env: spec?["env"]?.stringMap ?? [:],
            tools: tools(spec?["tools"]),
            mcpServers: mcpServers(spec?["mcpServers"]),
            run: RunDefaults(
                prompt: spec?["run", "prompt"]?.stringValue,
                timeoutMilliseconds: spec?["run", "timeout"]?.stringValue.flatMap(DurationText.parse) ?? 15 * 60_000,
                output: spec?["run", "output"]?.stringValue ?? "out/",
                budgetTokens: spec?["run", "budget", "tokens"]?.intValue,
                schedule: spec?["run", "schedule"]?.stringValue.map {
                    RunSchedule(expression: $0, timeZone: spec?["run", "timeZone"]?.stringValue ?? "UTC")
                }),
            memory: MemorySettings(
                path: spec?["memory", "path"]?.stringValue ?? "memory/",
                snapshot: spec?["memory", "snapshot"]?.boolValue ?? true),
            lifecycle: spec?["lifecycle"]?.stringValue.flatMap(Lifecycle.init(rawValue:)) ?? .active,
            deletionPolicy: spec?["deletionPolicy"]?.stringValue.flatMap(DeletionPolicy.init(rawValue:)) ?? .retain)
    }

    static func harness(_ root: YAMLNode, origin: Origin) -> Harness {
        let spec = root["spec"]
        let configFiles: [ConfigFile] = (spec?["configFiles"]?.sequence ?? []).compactMap { item in
            guard let path = item["path"]?.stringValue, let content = item["content"]?.stringValue else { return nil }
            return ConfigFile(path: path, content: content)
        }
        return Harness(
            metadata: metadata(root), origin: origin,
            type: spec?["type"]?.stringValue.flatMap(HarnessType.init(rawValue:)),
            version: spec?["version"]?.stringValue,
            install: InstallSteps(
                apt: spec?["install", "apt"]?.stringList ?? [],
                pip: spec?["install", "pip"]?.stringList ?? [],
                npm: spec?["install", "npm"]?.stringList ?? [],
                script: spec?["install", "script"]?.stringValue),
            command: spec?["command"]?.stringList ?? [],
            continueCommand: spec?["continueCommand"]?.stringList ?? [],
            env: spec?["env"]?.stringMap ?? [:],
            modelEnv: spec?["modelEnv"]?.stringMap ?? [:],
            configFiles: configFiles,
            instructionsFile: spec?["instructionsFile"]?.stringValue,
            skillsDir: spec?["skillsDir"]?.stringValue,
            stateDirs: spec?["stateDirs"]?.stringList ?? [],
            apis: (spec?["supports", "apis"]?.stringList ?? []).compactMap(ModelAPI.init(rawValue:)))
    }

    static func model(_ root: YAMLNode, origin: Origin) -> Model {
        let spec = root["spec"]
        return Model(
            metadata: metadata(root), origin: origin,
            provider: spec?["provider"]?.stringValue ?? "",
            name: spec?["name"]?.stringValue ?? "",
            api: spec?["api"]?.stringValue.flatMap(ModelAPI.init(rawValue:)),
            baseURL: spec?["baseUrl"]?.stringValue ?? "",
            credentialsRef: spec?["credentials", "ref"]?.stringValue,
            contextWindow: spec?["contextWindow"]?.intValue,
            maxOutputTokens: spec?["maxOutputTokens"]?.intValue)
    }

    static func environment(_ root: YAMLNode, origin: Origin) -> Environment {
        let spec = root["spec"]
        var egress = Egress.none
        if let node = spec?["network", "egress"] {
            if let text = node.stringValue, let mode = EgressMode(rawValue: text) {
                switch mode {
                case .none: egress = .none
                case .modelOnly: egress = .modelOnly
                case .all: egress = .all
                }
            } else if node.sequence != nil {
                egress = .hosts(node.stringList)
            }
        }
        return Environment(
            metadata: metadata(root), origin: origin,
            base: spec?["base"]?.stringValue.flatMap(EnvironmentBase.init(rawValue:)),
            aptPackages: spec?["packages", "apt"]?.stringList ?? [],
            pipPackages: spec?["packages", "pip"]?.stringList ?? [],
            cpus: spec?["resources", "cpus"]?.intValue ?? 1,
            memory: spec?["resources", "memory"]?.stringValue.flatMap(Quantity.init) ?? Quantity("512Mi")!,
            disk: spec?["resources", "disk"]?.stringValue.flatMap(Quantity.init) ?? Quantity("4Gi")!,
            egress: egress,
            env: spec?["env"]?.stringMap ?? [:])
    }
}
