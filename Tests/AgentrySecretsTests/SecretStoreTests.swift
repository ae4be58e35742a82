import AgentryCore
import AgentrySecrets
import Foundation
import TestSupport
import Testing

@Suite struct SecretStoreTests {
    @Test func storesEncryptedAndReadsBack() throws {
        let state = try TemporaryDirectory()
        let store = FileSecretStore(stateDirectory: state.path)
        let value = Array("very-secret-value-\(UUID().uuidString)".utf8)
        try store.set("github/token", value: value)
        try store.set("model/key", value: Array("other".utf8))
        #expect(try store.value("github/token") == value)
        #expect(try store.list().map(\.key) == ["github/token", "model/key"])
        // Neither file holds the value; both are private.
        for file in ["secrets.json", "secret.key"] {
            let bytes = try Data(contentsOf: state.url.appendingPathComponent(file))
            #expect(bytes.range(of: Data(value)) == nil)
            let mode =
                try FileManager.default.attributesOfItem(atPath: state.path + "/" + file)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        try store.remove("model/key")
        #expect(try store.value("model/key") == nil)
        #expect(throws: SecretError.self) { try store.remove("model/key") }
    }

    @Test func aCiphertextMovedToAnotherNameOrAnotherKeyDoesNotDecrypt() throws {
        let state = try TemporaryDirectory()
        let store = FileSecretStore(stateDirectory: state.path)
        try store.set("a", value: Array("alpha".utf8))
        try store.set("b", value: Array("bravo".utf8))
        let path = state.path + "/secrets.json"
        var json =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        var secrets = json["secrets"] as! [String: Any]
        secrets["b"] = secrets["a"]
        json["secrets"] = secrets
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        #expect { try store.value("b") } throws: { ($0 as? SecretError)?.message.contains("does not decrypt") == true }

        let otherKey = try TemporaryDirectory()
        try Data(repeating: 7, count: 32).write(to: otherKey.url.appendingPathComponent("k"))
        chmod(otherKey.path + "/k", 0o600)
        let wrong = FileSecretStore(stateDirectory: state.path, keyFile: otherKey.path + "/k")
        #expect { try wrong.value("a") } throws: { ($0 as? SecretError)?.message.contains("does not decrypt") == true }
    }

    @Test func refusesBadKeysLooseKeyFilesAndALostKey() throws {
        let state = try TemporaryDirectory()
        let store = FileSecretStore(stateDirectory: state.path)
        #expect(throws: SecretError.self) { try store.set("../escape", value: [1]) }
        #expect(throws: SecretError.self) { try store.set("has space", value: [1]) }
        try store.set("ok", value: [1])
        chmod(state.path + "/secret.key", 0o644)
        #expect { try store.value("ok") } throws: {
            ($0 as? SecretError)?.message.contains("readable by others") == true
        }
        try FileManager.default.removeItem(atPath: state.path + "/secret.key")
        #expect { try store.value("ok") } throws: { ($0 as? SecretError)?.message.contains("is missing") == true }
        #expect { try store.set("new", value: [1]) } throws: {
            ($0 as? SecretError)?.message.contains("restore the key file") == true
        }
    }

    /// Runs find a secret in the store, then in a folder of files, then in a variable.
    @Test func hostSecretsLookInTheStoreTheFolderAndTheEnvironment() throws {
        let state = try TemporaryDirectory()
        let folder = try TemporaryDirectory()
        try folder.write("ci/token", "from-folder\n\n")
        let secrets = HostSecrets(
            store: FileSecretStore(stateDirectory: state.path), folder: folder.path,
            variables: ["AGENTRY_SECRET_MODEL_KEY": "from-env", "AGENTRY_SECRET_CI_TOKEN": "shadowed"])
        #expect(try secrets.value("ci/token") == Array("from-folder".utf8))
        #expect(try secrets.value("model/key") == Array("from-env".utf8))
        #expect(try secrets.value("absent") == nil)
        try secrets.set("ci/token", value: Array("from-store".utf8), scope: nil)
        #expect(try secrets.value("ci/token") == Array("from-store".utf8), "the store comes first")
        #expect(try secrets.list().map(\.key) == ["ci/token"])
        #expect(HostSecrets.variable(for: "github/triage-token") == "AGENTRY_SECRET_GITHUB_TRIAGE_TOKEN")
    }

    /// A scope is sealed with the value: widening it by editing the file breaks the secret instead.
    @Test func aScopeCannotBeWidenedByEditingTheStore() throws {
        let state = try TemporaryDirectory()
        let store = FileSecretStore(stateDirectory: state.path)
        try store.set("ci/token", value: Array("scoped-value-1".utf8), scope: SecretScope(owners: ["platform"]))
        #expect(try store.scope("ci/token") == SecretScope(owners: ["platform"]))
        #expect(try store.list().first?.scope?.description == "owner platform")
        let file = state.path + "/secrets.json"
        let edited = try String(contentsOfFile: file, encoding: .utf8).replacingOccurrences(
            of: "\"platform\"", with: "\"anyone\"")
        try edited.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: SecretError.self) { try store.value("ci/token") }
    }

    /// Writers in several processes at once lose nothing (the store is locked across processes;
    /// separate store objects stand for separate processes here, each with its own file lock).
    @Test func concurrentWritersLoseNothing() throws {
        let state = try TemporaryDirectory()
        try FileSecretStore(stateDirectory: state.path).set("seed/key", value: Array("seed-value-1".utf8))
        DispatchQueue.concurrentPerform(iterations: 4) { writer in
            let store = FileSecretStore(stateDirectory: state.path)
            for index in 0..<15 {
                try? store.set("writer\(writer)/key\(index)", value: Array("value-\(writer)-\(index)-x".utf8))
            }
        }
        let keys = try FileSecretStore(stateDirectory: state.path).list().map(\.key)
        #expect(keys.count == 61, "\(keys.count) keys")
    }
}
