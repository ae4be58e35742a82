import AgentryBasics
import Foundation

/// The host's secret store, as an operator manages it.
public struct Secrets: Sendable {
    let ports: Ports

    public init(_ ports: Ports) {
        self.ports = ports
    }

    public func set(_ key: String, value: [UInt8]) throws {
        try reporting(.secretUnavailable) { try ports.secrets.set(key, value: value) }
    }

    public func remove(_ key: String) throws {
        try reporting(.secretUnavailable) { try ports.secrets.remove(key) }
    }

    /// Keys and when each was set, a line each (`key<TAB>time`); never values.
    public func list() throws -> String {
        try reporting(.secretUnavailable) { try ports.secrets.list() }
            .map { "\($0.key)\t\(Timestamp.rfc3339($0.updatedAt.timeIntervalSince1970))\n" }.joined()
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
