import AgentryBasics

/// Every resource flattens to ordered `field path → value` pairs. The pairs are the canonical form:
/// a resource's digest is the SHA-256 of its pairs, so reformatting, reordering keys, comments and
/// moving a definition to another file change nothing, and any change of meaning changes the digest.
/// The same pairs, prefixed per resource, are the reasons a plan shows (`model.name: a → b`).
public typealias Fields = [(String, String)]

public enum Canonical {
    /// SHA-256 over length-prefixed pairs (so no value can forge a field boundary).
    public static func digest(_ fields: Fields) -> String {
        var message = Message()
        message.bytes.reserveCapacity(fields.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count + 24 })
        for (key, value) in fields { message.append(key, value.utf8) }
        return message.digest
    }

    /// The pairs' message, built a pair at a time (a value may be assembled from parts as bytes).
    public struct Message {
        var bytes: [UInt8] = []

        public init() {}

        public mutating func append<Value: Collection>(_ key: String, _ value: Value) where Value.Element == UInt8 {
            appendDecimal(key.utf8.count, to: &bytes)
            bytes.append(UInt8(ascii: ":"))
            bytes += key.utf8
            bytes.append(UInt8(ascii: "="))
            appendDecimal(value.count, to: &bytes)
            bytes.append(UInt8(ascii: ":"))
            bytes += value
            bytes.append(UInt8(ascii: "\n"))
        }

        public var digest: String {
            var hasher = SHA256()
            hasher.update(bytes)
            return Hex.string(hasher.finalize())
        }
    }

    static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
        if value >= 10 { appendDecimal(value / 10, to: &bytes) }
        bytes.append(UInt8(ascii: "0") + UInt8(value % 10))
    }

    static func list(_ items: [String]) -> String {
        "[" + items.map(quoted).joined(separator: ", ") + "]"
    }

    static func quoted(_ text: String) -> String {
        var output = ""
        JSON.quote(text, into: &output)
        return output
    }

    /// A normalised duration: 900000 ms prints as `15m`, 5400000 as `1h30m`.
    public static func duration(_ milliseconds: UInt64) -> String {
        DurationText.format(milliseconds: milliseconds)
    }

    /// A normalised size: 536870912 prints as `512Mi`.
    public static func size(_ bytes: UInt64) -> String {
        for (unit, size) in [("Ti", UInt64(1) << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)]
        where bytes >= size && bytes % size == 0 {
            return "\(bytes / size)\(unit)"
        }
        return "\(bytes)"
    }

    static func map(_ prefix: String, _ values: [String: String]) -> Fields {
        values.keys.sorted().map { (prefix + $0, values[$0]!) }
    }
}

extension Agent {
    /// The agent's own fields. Instructions kept in a file are left out: their content's blob id
    /// enters the revision where the file is resolved, so moving the file changes nothing.
    public var fields: Fields {
        var fields: Fields = [("owner", metadata.owner ?? "")]
        fields += Canonical.map("labels.", metadata.labels)
        if let description { fields.append(("description", description)) }
        if case .inline(let text) = instructions { fields.append(("instructions", GitBlobID.of(Array(text.utf8)))) }
        fields += [
            ("harness", harness?.name ?? ""),
            ("model", model?.name ?? ""),
            ("fallbackModels", Canonical.list(fallbackModels.map(\.name))),
            ("environment", environment?.name ?? ""),
            ("skills", Canonical.list(skills.map(\.name))),
        ]
        for secret in secrets.sorted(by: { $0.env < $1.env }) {
            fields.append(("secrets.\(secret.env)", "ref " + secret.ref + (secret.optional ? " (optional)" : "")))
        }
        fields += Canonical.map("env.", env)
        fields += toolFields
        if let prompt = run.prompt { fields.append(("run.prompt", prompt)) }
        fields += [
            ("run.timeout", Canonical.duration(run.timeoutMilliseconds)),
            ("run.output", run.output),
        ]
        if let budget = run.budgetTokens { fields.append(("run.budget.tokens", String(budget))) }
        if let schedule = run.schedule {
            fields += [("run.schedule", schedule.expression), ("run.timeZone", schedule.timeZone)]
        }
        fields += [
            ("memory.path", memory.path),
            ("memory.snapshot", String(memory.snapshot)),
            ("lifecycle", lifecycle.rawValue),
            ("deletionPolicy", deletionPolicy.rawValue),
        ]
        return fields
    }
}

extension Harness {
    public var fields: Fields {
        var fields: Fields = [("type", type?.rawValue ?? "")]
        if let version { fields.append(("version", version)) }
        if !install.apt.isEmpty { fields.append(("install.apt", Canonical.list(install.apt))) }
        if !install.pip.isEmpty { fields.append(("install.pip", Canonical.list(install.pip))) }
        if !install.npm.isEmpty { fields.append(("install.npm", Canonical.list(install.npm))) }
        if let script = install.script { fields.append(("install.script", script)) }
        fields.append(("command", Canonical.list(command)))
        if !continueCommand.isEmpty { fields.append(("continueCommand", Canonical.list(continueCommand))) }
        fields += Canonical.map("env.", env)
        fields += Canonical.map("modelEnv.", modelEnv)
        for file in configFiles.sorted(by: { $0.path < $1.path }) {
            fields.append(("configFiles.\(file.path)", file.content))
        }
        if let instructionsFile { fields.append(("instructionsFile", instructionsFile)) }
        if let skillsDir { fields.append(("skillsDir", skillsDir)) }
        if !stateDirs.isEmpty { fields.append(("stateDirs", Canonical.list(stateDirs))) }
        fields.append(("supports.apis", Canonical.list(apis.map(\.rawValue))))
        return fields
    }
}

extension Model {
    public var fields: Fields {
        var fields: Fields = [
            ("provider", provider), ("name", name), ("api", api?.rawValue ?? ""), ("baseUrl", baseURL),
        ]
        if let credentialsRef { fields.append(("credentials", "ref " + credentialsRef)) }
        if let contextWindow { fields.append(("contextWindow", String(contextWindow))) }
        if let maxOutputTokens { fields.append(("maxOutputTokens", String(maxOutputTokens))) }
        return fields
    }
}

extension Environment {
    public var fields: Fields {
        var fields: Fields = [("base", base?.rawValue ?? "")]
        if !aptPackages.isEmpty { fields.append(("packages.apt", Canonical.list(aptPackages))) }
        if !pipPackages.isEmpty { fields.append(("packages.pip", Canonical.list(pipPackages))) }
        fields += [
            ("resources.cpus", String(cpus)),
            ("resources.memory", Canonical.size(memory.bytes)),
            ("resources.disk", Canonical.size(disk.bytes)),
        ]
        let egress: String
        switch self.egress {
        case .none: egress = "none"
        case .modelOnly: egress = "model-only"
        case .all: egress = "all"
        case .hosts(let hosts): egress = Canonical.list(hosts)
        }
        fields.append(("network.egress", egress))
        fields += Canonical.map("env.", env)
        return fields
    }
}
