import CSodium
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public struct SecretError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The host's secret store: `<state>/secrets.json` (0600) holds each secret encrypted with
/// XChaCha20-Poly1305 (libsodium) under a 32-byte key kept in a separate file, `<state>/secret.key`
/// by default or `$AGENTRY_SECRET_KEY_FILE` (so the key can live on another volume than the state
/// and its backups). Each value is bound to its key name as associated data, so a ciphertext moved
/// to another name does not decrypt. Values are never logged and never written anywhere else.
///
/// Other sources, looked up after the store: a folder of files (`$AGENTRY_SECRETS_DIR/<ref>`, as
/// mounted by Kubernetes or systemd credentials) and environment variables
/// (`AGENTRY_SECRET_<REF>`, the reference upper-cased with every other character as `_`).
public final class SecretStore {
    public let file: String
    public let keyFile: String

    public static let keyPattern = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"

    public init(stateDirectory: String, keyFile: String? = nil) {
        file = stateDirectory + "/secrets.json"
        self.keyFile = keyFile ?? ProcessInfo.processInfo.environment["AGENTRY_SECRET_KEY_FILE"] ?? stateDirectory + "/secret.key"
    }

    static let ready: Bool = sodium_init() >= 0

    public static func isValidKey(_ key: String) -> Bool {
        key.range(of: keyPattern, options: .regularExpression) != nil && !key.contains("..") && !key.hasSuffix("/")
    }

    func checkKey(_ key: String) throws {
        guard Self.isValidKey(key) else {
            throw SecretError(
                "\"\(key)\" is not a secret key: use letters, digits, '.', '_', '-' and '/' (such as github/token), at most 128")
        }
    }

    // MARK: - The store file

    struct Entry: Codable {
        var ciphertext: String
        var updatedAt: Date
    }

    struct Contents: Codable {
        var formatVersion = 1
        var secrets: [String: Entry] = [:]
    }

    func readContents() throws -> Contents {
        guard let data = FileManager.default.contents(atPath: file) else { return Contents() }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let contents = try? decoder.decode(Contents.self, from: data), contents.formatVersion == 1 else {
            throw SecretError("\(file) is not an agentry secret store (formatVersion 1)")
        }
        return contents
    }

    func writeContents(_ contents: Contents) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(contents)
        let temporary = file + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SecretError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        fsync(descriptor)
        close(descriptor)
        guard written == data.count, rename(temporary, file) == 0 else {
            unlink(temporary)
            throw SecretError("cannot write \(file): \(String(cString: strerror(errno)))")
        }
    }

    /// The key, created (0600, random) on first use when `create`.
    func key(create: Bool) throws -> [UInt8] {
        guard Self.ready else { throw SecretError("libsodium could not be initialised") }
        if let data = FileManager.default.contents(atPath: keyFile) {
            var status = stat()
            if stat(keyFile, &status) == 0, status.st_mode & 0o077 != 0 {
                throw SecretError("the secret key \(keyFile) is readable by others (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 it")
            }
            guard data.count == Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES) else {
                throw SecretError("the secret key \(keyFile) is not a key agentry made (\(data.count) bytes)")
            }
            return Array(data)
        }
        guard create else {
            throw SecretError("the secret key \(keyFile) is missing; without it the stored secrets cannot be read")
        }
        if FileManager.default.fileExists(atPath: file), let contents = try? readContents(), !contents.secrets.isEmpty {
            throw SecretError("the secret key \(keyFile) is missing but \(file) holds secrets; restore the key file (or remove \(file) to start over)")
        }
        var key = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES))
        crypto_aead_xchacha20poly1305_ietf_keygen(&key)
        try FileManager.default.createDirectory(
            atPath: (keyFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let descriptor = open(keyFile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SecretError("cannot create the secret key \(keyFile): \(String(cString: strerror(errno)))") }
        let written = write(descriptor, key, key.count)
        fsync(descriptor)
        close(descriptor)
        guard written == key.count else { throw SecretError("cannot write the secret key \(keyFile)") }
        return key
    }

    // MARK: - Operations

    public func set(_ name: String, value: [UInt8]) throws {
        try checkKey(name)
        guard !value.isEmpty else { throw SecretError("the value of \(name) is empty") }
        var key = try key(create: true)
        defer { sodium_memzero(&key, key.count) }
        var nonce = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES))
        randombytes_buf(&nonce, nonce.count)
        var sealed = [UInt8](repeating: 0, count: value.count + Int(crypto_aead_xchacha20poly1305_ietf_ABYTES))
        var sealedLength: UInt64 = 0
        let associated = Array(name.utf8)
        crypto_aead_xchacha20poly1305_ietf_encrypt(
            &sealed, &sealedLength, value, UInt64(value.count), associated, UInt64(associated.count), nil, nonce, key)
        var contents = try readContents()
        contents.secrets[name] = Entry(ciphertext: Data(nonce + sealed.prefix(Int(sealedLength))).base64EncodedString(), updatedAt: Date())
        try writeContents(contents)
    }

    /// Keys and when each was set; never values.
    public func list() throws -> [(key: String, updatedAt: Date)] {
        try readContents().secrets.map { ($0.key, $0.value.updatedAt) }.sorted { $0.key < $1.key }
    }

    public func remove(_ name: String) throws {
        var contents = try readContents()
        guard contents.secrets.removeValue(forKey: name) != nil else { throw SecretError("no secret \(name) in the store") }
        try writeContents(contents)
    }

    /// The value of `name` from the store, then the folder and environment sources; nil if none has it.
    public func value(_ name: String) throws -> [UInt8]? {
        if let entry = try readContents().secrets[name] {
            var key = try key(create: false)
            defer { sodium_memzero(&key, key.count) }
            guard let data = Data(base64Encoded: entry.ciphertext),
                data.count > Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)
            else { throw SecretError("the stored secret \(name) is damaged") }
            let bytes = Array(data)
            let nonceLength = Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
            let nonce = Array(bytes[..<nonceLength])
            let sealed = Array(bytes[nonceLength...])
            var plain = [UInt8](repeating: 0, count: sealed.count)
            var plainLength: UInt64 = 0
            let associated = Array(name.utf8)
            let result = crypto_aead_xchacha20poly1305_ietf_decrypt(
                &plain, &plainLength, nil, sealed, UInt64(sealed.count), associated, UInt64(associated.count), nonce, key)
            guard result == 0 else {
                throw SecretError("the stored secret \(name) does not decrypt with \(keyFile) (a different key, or a damaged store)")
            }
            return Array(plain.prefix(Int(plainLength)))
        }
        if let folder = ProcessInfo.processInfo.environment["AGENTRY_SECRETS_DIR"], Self.isValidKey(name),
            let data = FileManager.default.contents(atPath: folder + "/" + name)
        {
            var bytes = Array(data)
            while bytes.last == 0x0A { bytes.removeLast() }
            return bytes
        }
        let variable = "AGENTRY_SECRET_" + String(name.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
        if let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty { return Array(value.utf8) }
        return nil
    }
}
