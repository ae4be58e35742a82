import Foundation

/// Where a run's secrets come from. Values are bytes, never logged, never stored anywhere else.
public protocol SecretSource: Sendable {
    /// The value of `key`, or nil when no source holds it.
    func value(_ key: String) throws -> [UInt8]?
    /// Which agents may use `key` (nil: any agent, as for secrets from files and variables).
    func scope(_ key: String) throws -> SecretScope?
}

/// The host's secret store, which an operator manages (`agentry secret set|list|rm`).
public protocol SecretStore: SecretSource {
    func set(_ key: String, value: [UInt8], scope: SecretScope?) throws
    /// Keys, their scopes and when each was set; never values.
    func list() throws -> [SecretEntry]
    func remove(_ key: String) throws
}

public struct SecretEntry: Sendable, Equatable {
    public var key: String
    public var updatedAt: Date
    public var scope: SecretScope?

    public init(key: String, updatedAt: Date, scope: SecretScope? = nil) {
        self.key = key
        self.updatedAt = updatedAt
        self.scope = scope
    }
}

/// The agents a stored secret is limited to: by name, by owner (`metadata.owner`) or by label
/// (`key=value` in `metadata.labels`); an agent that matches any rule may use it.
public struct SecretScope: Sendable, Equatable, Codable {
    public var agents: [String]
    public var owners: [String]
    public var labels: [String]

    public init(agents: [String] = [], owners: [String] = [], labels: [String] = []) {
        self.agents = agents.sorted()
        self.owners = owners.sorted()
        self.labels = labels.sorted()
    }

    public var isEmpty: Bool { agents.isEmpty && owners.isEmpty && labels.isEmpty }

    public func allows(agent: String, owner: String?, labels agentLabels: [String: String]) -> Bool {
        agents.contains(agent) || owner.map(owners.contains) == true
            || labels.contains { rule in
                guard let equals = rule.firstIndex(of: "=") else { return false }
                return agentLabels[String(rule[..<equals])] == String(rule[rule.index(after: equals)...])
            }
    }

    /// `agent greeter, owner platform-team, label tier=prod`.
    public var description: String {
        (agents.map { "agent " + $0 } + owners.map { "owner " + $0 } + labels.map { "label " + $0 })
            .joined(separator: ", ")
    }
}
