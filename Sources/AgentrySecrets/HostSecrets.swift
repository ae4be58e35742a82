import AgentryCore
import Foundation

/// The secrets of this host, as runs find them: the encrypted store first, then a folder of files
/// (`$AGENTRY_SECRETS_DIR/<key>`, as Kubernetes or systemd credentials mount them; trailing
/// newlines dropped), then environment variables (`AGENTRY_SECRET_<KEY>`, the key upper-cased with
/// every other character as `_`). `set`, `list` and `remove` manage the store alone.
public struct HostSecrets: SecretStore {
    public let store: FileSecretStore
    public let folder: String?
    public let variables: [String: String]

    public init(store: FileSecretStore, folder: String?, variables: [String: String]) {
        self.store = store
        self.folder = folder
        self.variables = variables
    }

    public func value(_ key: String) throws -> [UInt8]? {
        if let value = try store.value(key) { return value }
        if let folder, !folder.isEmpty, FileSecretStore.isValidKey(key),
            let data = FileManager.default.contents(atPath: folder + "/" + key)
        {
            var bytes = Array(data)
            while bytes.last == 0x0A { bytes.removeLast() }
            return bytes
        }
        if let value = variables[Self.variable(for: key)], !value.isEmpty { return Array(value.utf8) }
        return nil
    }

    /// The environment variable that may hold `key`.
    public static func variable(for key: String) -> String {
        "AGENTRY_SECRET_" + String(key.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    public func scope(_ key: String) throws -> SecretScope? { try store.scope(key) }
    public func set(_ key: String, value: [UInt8], scope: SecretScope?) throws {
        try store.set(key, value: value, scope: scope)
    }
    public func list() throws -> [SecretEntry] { try store.list() }
    public func remove(_ key: String) throws { try store.remove(key) }
}
