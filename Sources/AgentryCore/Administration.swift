import AgentryBasics
import Foundation

/// The host's secret store, as an operator manages it.
public struct Secrets: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    /// Values shorter than this are refused: redacting them would rewrite ordinary text (and
    /// leave the value guessable from what was rewritten).
    public static let minimumLength = 8

    /// Stores a secret, limited to `scope` when given.
    public func set(_ key: String, value: [UInt8], scope: SecretScope? = nil) throws {
        try Self.checkLength(key, value)
        if let scope {
            for agent in scope.agents where !ResourceName.isValid(agent) {
                throw CoreError(.invalidArgument, "--allow-agent \(agent): not an agent name (a DNS label)")
            }
            for label in scope.labels where !label.contains("=") || label.hasPrefix("=") {
                throw CoreError(.invalidArgument, "--allow-label \(label): expected key=value")
            }
        }
        try reporting(.secretUnavailable) { try ports.secrets.set(key, value: value, scope: scope) }
    }

    static func checkLength(_ key: String, _ value: [UInt8]) throws {
        guard value.count >= minimumLength else {
            throw CoreError(
                .invalidArgument,
                "the value of \(key) is \(value.count) bytes; secrets under \(minimumLength) are refused: too short to keep out of logs and artifacts without rewriting ordinary text"
            )
        }
    }

    public func remove(_ key: String) throws {
        try reporting(.secretUnavailable) { try ports.secrets.remove(key) }
    }

    /// `{"formatVersion": 1, "kind": "secrets", "secrets": [{"key", "updatedAt", "scope"}]}`; never values.
    public func listJSON() throws -> String {
        let entries = try reporting(.secretUnavailable) { try ports.secrets.list() }
        return JSON.object([
            ("formatVersion", .int(1)),
            ("kind", .string("secrets")),
            (
                "secrets",
                .array(
                    entries.map { entry in
                        .object([
                            ("key", .string(entry.key)),
                            ("updatedAt", .string(Timestamp.rfc3339(entry.updatedAt.timeIntervalSince1970))),
                            (
                                "scope",
                                entry.scope.map { scope in
                                    .object([
                                        ("agents", .array(scope.agents.map(JSON.string))),
                                        ("owners", .array(scope.owners.map(JSON.string))),
                                        ("labels", .array(scope.labels.map(JSON.string))),
                                    ])
                                } ?? .null
                            ),
                        ])
                    })
            ),
        ]).rendered() + "\n"
    }

    /// Keys and when each was set, a line each (`key<TAB>time`); never values.
    public func list() throws -> String {
        try reporting(.secretUnavailable) { try ports.secrets.list() }
            .map { entry in
                let scope = entry.scope.map { "\tonly " + $0.description } ?? ""
                return "\(entry.key)\t\(Timestamp.rfc3339(entry.updatedAt.timeIntervalSince1970))\(scope)\n"
            }.joined()
    }
}

/// Guest images.
public struct Images: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    /// Builds the image for `base` (even when one is cached); returns where it is.
    public func build(base: String) async throws -> String {
        let machines = ports.machines
        return try await BlockingWork.run { try reporting(.machineFailed) { try machines.buildImage(base: base) } }
    }
}

/// `agentry init`: a new agent repository with a starter layout that validates clean.
public enum Scaffolding {
    /// Creates the repository at `path` and commits the starter layout; returns the commit.
    public static func create(at path: String, owner: String, ports: Ports) async throws -> String {
        let source = ports.source
        return try await BlockingWork.run {
            try reporting(.invalidArgument) { try source.scaffold(at: path, owner: owner) }
        }
    }
}

/// Environment disks that belong to no agent (kept by `deletionPolicy: retain`, or set aside when
/// another owner's agent took the name): listed, and removed on request.
public struct RetainedDisks: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    public func list() -> [RetainedDisk] { ports.machines.retainedDisks() }

    public func remove(_ id: String) throws {
        try reporting(.notFound) { try ports.machines.removeRetainedDisk(id) }
    }

    /// `agent  owner  retired  size  id`, a line each.
    public static func table(_ disks: [RetainedDisk]) -> String {
        var table = TextTable(["AGENT", "OWNER", "RETIRED", "SIZE", "ID"])
        for disk in disks {
            table.append([
                disk.agent + (disk.setAside ? " (set aside)" : ""), disk.owner.isEmpty ? "-" : disk.owner,
                disk.retiredAt.isEmpty ? "-" : disk.retiredAt, "\(disk.bytes / (1 << 20)) MiB", disk.id,
            ])
        }
        return table.rendered
    }
}
