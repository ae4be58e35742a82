import AgentryBasics
import AgentryCore
import CSodium
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Why a secret could not be stored or read.
public struct SecretError: AgentryFailure {
    public enum Code: String, Sendable {
        /// The key is not a valid secret name, or the value is empty.
        case invalidKey
        case notFound
        /// The key file is missing, loose or not agentry's; a value does not decrypt.
        case keyProblem
        /// The store file is damaged or cannot be written.
        case storeProblem
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var category: FailureCategory {
        switch code {
        case .invalidKey: return .invalidInput
        case .notFound: return .notFound
        case .keyProblem: return .conflict
        case .storeProblem: return .io
        }
    }
}

/// The host's secret store: `<state>/secrets.json` (0600) holds each secret encrypted with
/// XChaCha20-Poly1305 (libsodium) under a 32-byte key kept in a separate file, `<state>/secret.key`
/// by default or `$AGENTRY_SECRET_KEY_FILE` (so the key can live on another volume than the state
/// and its backups). Each value is bound to its key name as associated data, so a ciphertext moved
/// to another name does not decrypt. Values are never logged and never written anywhere else.
///
/// A secret may be limited to agents (`SecretScope`); the scope is bound into the associated data
/// with the name, so it cannot be widened by editing the file. Other sources are looked up after
/// the store (`HostSecrets`). Writes are serialised within the process and across processes (an
/// `flock` on `secrets.lock` beside the store) and go through a temporary file renamed into place.
public final class FileSecretStore: Sendable {
    public let file: String
    public let keyFile: String
    private let writing = Mutex(())

    public static let keyPattern = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"

    /// `keyFile`: `$AGENTRY_SECRET_KEY_FILE` when set, else `<state>/secret.key`.
    public init(stateDirectory: String, keyFile: String? = nil) {
        file = stateDirectory + "/secrets.json"
        self.keyFile = keyFile ?? stateDirectory + "/secret.key"
    }

    static let ready: Bool = sodium_init() >= 0

    public static func isValidKey(_ key: String) -> Bool {
        key.range(of: keyPattern, options: .regularExpression) != nil && !key.contains("..") && !key.hasSuffix("/")
    }

    func checkKey(_ key: String) throws {
        guard Self.isValidKey(key) else {
            throw SecretError(
                .invalidKey,
                "\"\(key)\" is not a secret key: use letters, digits, '.', '_', '-' and '/' (such as github/token), at most 128"
            )
        }
    }

    // MARK: - The store file

    struct Entry: Codable {
        var ciphertext: String
        var updatedAt: Date
        var scope: SecretScope?
    }

    /// What a value is sealed with besides the key: its name, and its scope when it has one.
    static func associatedData(_ name: String, _ scope: SecretScope?) -> [UInt8] {
        guard let scope, !scope.isEmpty else { return Array(name.utf8) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(name.utf8) + [0] + Array((try? encoder.encode(scope)) ?? Data())
    }

    /// Runs `body` holding the store's lock (other processes' writes wait).
    func locked<T>(_ body: () throws -> T) throws -> T {
        try writing.withLock { _ in
            let folder = (file as NSString).deletingLastPathComponent
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let path = folder + "/secrets.lock"
            let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw SecretError(.storeProblem, "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            defer { close(descriptor) }
            while flock(descriptor, LOCK_EX) != 0 {
                guard errno == EINTR else {
                    throw SecretError(.storeProblem, "cannot lock \(path): \(String(cString: strerror(errno)))")
                }
            }
            return try body()
        }
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
            throw SecretError(.storeProblem, "\(file) is not an agentry secret store (formatVersion 1)")
        }
        return contents
    }

    func writeContents(_ contents: Contents) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(contents)
        let temporary = TemporaryName.beside(file)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw SecretError(.storeProblem, "cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        fsync(descriptor)
        close(descriptor)
        guard written == data.count, rename(temporary, file) == 0 else {
            unlink(temporary)
            throw SecretError(.storeProblem, "cannot write \(file): \(String(cString: strerror(errno)))")
        }
    }

    /// The key, created (0600, random) on first use when `create`.
    func key(create: Bool) throws -> [UInt8] {
        guard Self.ready else { throw SecretError(.keyProblem, "libsodium could not be initialised") }
        if let data = FileManager.default.contents(atPath: keyFile) {
            var status = stat()
            if stat(keyFile, &status) == 0, status.st_mode & 0o077 != 0 {
                throw SecretError(
                    .keyProblem,
                    "the secret key \(keyFile) is readable by others (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 it"
                )
            }
            guard data.count == Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES) else {
                throw SecretError(
                    .keyProblem, "the secret key \(keyFile) is not a key agentry made (\(data.count) bytes)")
            }
            return Array(data)
        }
        guard create else {
            throw SecretError(
                .keyProblem, "the secret key \(keyFile) is missing; without it the stored secrets cannot be read")
        }
        if FileManager.default.fileExists(atPath: file), let contents = try? readContents(), !contents.secrets.isEmpty {
            throw SecretError(
                .keyProblem,
                "the secret key \(keyFile) is missing but \(file) holds secrets; restore the key file (or remove \(file) to start over)"
            )
        }
        var key = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES))
        crypto_aead_xchacha20poly1305_ietf_keygen(&key)
        try FileManager.default.createDirectory(
            atPath: (keyFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let descriptor = open(keyFile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw SecretError(
                .keyProblem, "cannot create the secret key \(keyFile): \(String(cString: strerror(errno)))")
        }
        let written = write(descriptor, key, key.count)
        fsync(descriptor)
        close(descriptor)
        guard written == key.count else { throw SecretError(.keyProblem, "cannot write the secret key \(keyFile)") }
        return key
    }

    // MARK: - Operations

    public func set(_ name: String, value: [UInt8], scope: SecretScope? = nil) throws {
        try checkKey(name)
        guard !value.isEmpty else { throw SecretError(.invalidKey, "the value of \(name) is empty") }
        let scope = scope.flatMap { $0.isEmpty ? nil : $0 }
        try locked {
            var key = try key(create: true)
            defer { sodium_memzero(&key, key.count) }
            var nonce = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES))
            randombytes_buf(&nonce, nonce.count)
            var sealed = [UInt8](repeating: 0, count: value.count + Int(crypto_aead_xchacha20poly1305_ietf_ABYTES))
            var sealedLength: UInt64 = 0
            let associated = Self.associatedData(name, scope)
            crypto_aead_xchacha20poly1305_ietf_encrypt(
                &sealed, &sealedLength, value, UInt64(value.count), associated, UInt64(associated.count), nil, nonce,
                key)
            var contents = try readContents()
            contents.secrets[name] = Entry(
                ciphertext: Data(nonce + sealed.prefix(Int(sealedLength))).base64EncodedString(), updatedAt: Date(),
                scope: scope)
            try writeContents(contents)
        }
    }

    /// Keys, scopes and when each was set; never values.
    public func list() throws -> [SecretEntry] {
        try readContents().secrets.map {
            SecretEntry(key: $0.key, updatedAt: $0.value.updatedAt, scope: $0.value.scope)
        }
        .sorted { $0.key < $1.key }
    }

    /// The agents `name` is limited to; nil when it is not in the store or not limited.
    public func scope(_ name: String) throws -> SecretScope? {
        try readContents().secrets[name]?.scope
    }

    public func remove(_ name: String) throws {
        try locked {
            var contents = try readContents()
            guard contents.secrets.removeValue(forKey: name) != nil else {
                throw SecretError(.notFound, "no secret \(name) in the store")
            }
            try writeContents(contents)
        }
    }

    /// The value of `name` in the store; nil when the store does not hold it.
    public func value(_ name: String) throws -> [UInt8]? {
        if let entry = try readContents().secrets[name] {
            var key = try key(create: false)
            defer { sodium_memzero(&key, key.count) }
            guard let data = Data(base64Encoded: entry.ciphertext),
                data.count
                    > Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)
            else { throw SecretError(.storeProblem, "the stored secret \(name) is damaged") }
            let bytes = Array(data)
            let nonceLength = Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
            let nonce = Array(bytes[..<nonceLength])
            let sealed = Array(bytes[nonceLength...])
            var plain = [UInt8](repeating: 0, count: sealed.count)
            var plainLength: UInt64 = 0
            let associated = Self.associatedData(name, entry.scope)
            let result = crypto_aead_xchacha20poly1305_ietf_decrypt(
                &plain, &plainLength, nil, sealed, UInt64(sealed.count), associated, UInt64(associated.count), nonce,
                key)
            guard result == 0 else {
                throw SecretError(
                    .keyProblem,
                    "the stored secret \(name) does not decrypt with \(keyFile) (a different key, or a damaged or edited store: its scope is sealed with it)"
                )
            }
            return Array(plain.prefix(Int(plainLength)))
        }
        return nil
    }
}
