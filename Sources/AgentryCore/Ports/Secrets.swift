import Foundation

/// Where a run's secrets come from. Values are bytes, never logged, never stored anywhere else.
public protocol SecretSource: Sendable {
    /// The value of `key`, or nil when no source holds it.
    func value(_ key: String) throws -> [UInt8]?
}

/// The host's secret store, which an operator manages (`agentry secret set|list|rm`).
public protocol SecretStore: SecretSource {
    func set(_ key: String, value: [UInt8]) throws
    /// Keys and when each was set; never values.
    func list() throws -> [SecretEntry]
    func remove(_ key: String) throws
}

public struct SecretEntry: Sendable, Equatable {
    public var key: String
    public var updatedAt: Date

    public init(key: String, updatedAt: Date) {
        self.key = key
        self.updatedAt = updatedAt
    }
}
