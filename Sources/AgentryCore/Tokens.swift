import AgentryBasics
import AgentryModel
import Foundation
import Synchronization

/// The service's bearer tokens: made here (printed once), kept only as their SHA-256, checked on
/// every request, listed and revoked by id.
public struct Tokens: Sendable {
    let store: any ServiceStore
    let clock: any WallClock
    /// Tokens found good, by hash, since the store's `revocations()` last changed: a request with
    /// one is checked without reading the database.
    let known = Known()

    final class Known: Sendable {
        let entries = Mutex<(revocations: String?, tokens: [String: APIToken])>((nil, [:]))
    }

    public init(store: any ServiceStore, clock: any WallClock) {
        self.store = store
        self.clock = clock
    }

    /// Tokens are `agt_` and 256 random bits in hex: guessing one is hopeless, so a plain SHA-256
    /// is enough to keep the stored form useless to whoever reads the database.
    static let prefix = "agt_"

    public static func hash(_ token: String) -> String {
        var hasher = SHA256()
        hasher.update(Array(token.utf8))
        return Hex.string(hasher.finalize())
    }

    /// A new token; the text is shown to the caller once and never stored.
    public func create(scope: TokenScope, agents: [String], expiresIn: Duration?, by actor: String) throws -> (
        token: APIToken, text: String
    ) {
        for agent in agents where !ResourceName.isValid(agent) {
            throw CoreError(.invalidArgument, "--agent \(agent) is not an agent name")
        }
        let now = clock.now()
        let text = Self.prefix + Hex.random(bytes: 32)
        let token = APIToken(
            id: "tok_" + Hex.random(bytes: 6), scope: scope, agents: Array(Set(agents)).sorted(), createdAt: now,
            createdBy: actor,
            expiresAt: expiresIn.map { now.addingTimeInterval(Double($0.components.seconds)) })
        try reporting(.stateUnavailable) { try store.saveToken(token, hash: Self.hash(text)) }
        return (token, text)
    }

    public func list() throws -> [APIToken] {
        try reporting(.stateUnavailable) { try store.tokens() }
    }

    public func revoke(id: String) throws {
        guard try reporting(.stateUnavailable, { try store.revokeToken(id: id, at: clock.now()) }) else {
            throw CoreError(.notFound, "there is no token \(id) (agentry token list shows them)")
        }
    }

    /// Why a request's credentials are refused.
    public enum Refusal: Error, Sendable, Equatable {
        /// No token, or one that is unknown, revoked or expired (401).
        case unauthenticated(String)
        /// A good token without the scope or the agent (403).
        case forbidden(String)
    }

    /// The token behind an `Authorization` header, if it may act at `scope` on `agent`.
    public func authorize(_ header: String?, scope: TokenScope, agent: String?) throws -> Result<APIToken, Refusal> {
        guard let header, header.hasPrefix("Bearer ") else {
            return .failure(.unauthenticated("send Authorization: Bearer <token> (agentry token create makes one)"))
        }
        guard let hash = Self.hash(bearer: header) else { return .failure(.unauthenticated("the token is not known")) }
        // Read before the database: a revocation that lands meanwhile empties what is kept here.
        let revocations = store.revocations()
        guard let token = try reporting(.stateUnavailable, { try store.token(hash: hash) }) else {
            return .failure(.unauthenticated("the token is not known"))
        }
        if token.revokedAt == nil {
            known.entries.withLock { entries in
                if entries.revocations != revocations { entries = (revocations, [:]) }
                entries.tokens[hash] = token
            }
        }
        return check(token, scope: scope, agent: agent)
    }

    /// The same answer for a token found good before and not revoked since, without reading the
    /// database; nil when it must be read (`authorize`).
    public func authorizeKnown(_ header: String?, scope: TokenScope, agent: String?) -> Result<APIToken, Refusal>? {
        guard let header, let hash = Self.hash(bearer: header) else { return nil }
        let revocations = store.revocations()
        let token = known.entries.withLock { entries -> APIToken? in
            guard entries.revocations == revocations else {
                entries = (revocations, [:])
                return nil
            }
            return entries.tokens[hash]
        }
        return token.map { check($0, scope: scope, agent: agent) }
    }

    /// The hash of the token in `Authorization: Bearer <token>`, when it has the form of one.
    static func hash(bearer header: String) -> String? {
        guard header.hasPrefix("Bearer ") else { return nil }
        let text = String(header.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        guard text.hasPrefix(prefix), text.utf8.count < 200 else { return nil }
        return hash(text)
    }

    func check(_ token: APIToken, scope: TokenScope, agent: String?) -> Result<APIToken, Refusal> {
        if token.revokedAt != nil { return .failure(.unauthenticated("the token \(token.id) was revoked")) }
        if let expiry = token.expiresAt, expiry <= clock.now() {
            return .failure(.unauthenticated("the token \(token.id) expired"))
        }
        guard token.scope >= scope else {
            return .failure(
                .forbidden("the token \(token.id) has scope \(token.scope.rawValue); this needs \(scope.rawValue)"))
        }
        if let refusal = Self.refusal(token, for: agent) { return .failure(refusal) }
        return .success(token)
    }

    /// Why `token` may not act on `agent`; nil when it may.
    public static func refusal(_ token: APIToken, for agent: String?) -> Refusal? {
        token.covers(agent) ? nil : .forbidden("the token \(token.id) does not cover the agent \(agent ?? "")")
    }
}

extension Tokens {
    /// The scopes a token has: its own and those it includes.
    public static func scopes(_ token: APIToken) -> [String] {
        TokenScope.allCases.filter { $0 <= token.scope }.map(\.rawValue)
    }

    static func time(_ date: Date?) -> String {
        date.map { Timestamp.rfc3339($0.timeIntervalSince1970) } ?? "-"
    }

    /// `agentry token create -o json`: the only time the token is shown.
    public static func createdJSON(_ token: APIToken, text: String) -> String {
        JSON.object([
            ("formatVersion", .int(1)), ("id", .string(token.id)), ("token", .string(text)),
            ("scopes", .array(scopes(token).map(JSON.string))), ("agents", .array(token.agents.map(JSON.string))),
            ("expiresAt", token.expiresAt.map { .string(time($0)) } ?? .null),
        ]).rendered() + "\n"
    }

    public static func listJSON(_ tokens: [APIToken]) -> String {
        JSON.object([
            ("formatVersion", .int(1)),
            (
                "tokens",
                .array(
                    tokens.map { token in
                        .object([
                            ("id", .string(token.id)), ("scopes", .array(scopes(token).map(JSON.string))),
                            ("agents", .array(token.agents.map(JSON.string))),
                            ("createdAt", .string(time(token.createdAt))), ("createdBy", .string(token.createdBy)),
                            ("expiresAt", token.expiresAt.map { .string(time($0)) } ?? .null),
                            ("revokedAt", token.revokedAt.map { .string(time($0)) } ?? .null),
                        ])
                    })
            ),
        ]).rendered() + "\n"
    }

    public static func table(_ tokens: [APIToken], now: Date) -> String {
        var table = TextTable(["ID", "SCOPE", "AGENTS", "CREATED", "BY", "EXPIRES", "STATE"])
        for token in tokens {
            let state =
                token.revokedAt != nil ? "revoked" : (token.expiresAt.map { $0 <= now } == true ? "expired" : "active")
            table.append([
                token.id, token.scope.rawValue, token.agents.isEmpty ? "all" : token.agents.joined(separator: ","),
                time(token.createdAt), token.createdBy, time(token.expiresAt), state,
            ])
        }
        return table.rendered
    }
}
