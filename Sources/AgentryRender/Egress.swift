import AgentryModel
import Foundation

/// Which hosts a machine may reach, for `egress: [hosts]` and `egress: model-only`. Entries are
/// `host`, `host:port` or `*.domain` (any subdomain of it, not the domain itself). Without a port,
/// an entry allows 443 (HTTPS through CONNECT) and 80 (plain HTTP).
public struct EgressAllowlist: Sendable, Equatable {
    public var entries: [String]

    public init(_ entries: [String]) {
        self.entries = entries.map { $0.lowercased() }
    }

    public func allows(host: String, port: Int) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        for entry in entries {
            var name = entry
            var ports = [443, 80]
            if let colon = entry.lastIndex(of: ":"), let explicit = Int(entry[entry.index(after: colon)...]) {
                name = String(entry[..<colon])
                ports = [explicit]
            }
            guard ports.contains(port) else { continue }
            if name.hasPrefix("*.") {
                if host.hasSuffix(String(name.dropFirst(1))) { return true }
            } else if host == name {
                return true
            }
        }
        return false
    }

    /// One entry per line, as the proxy reads its allowlist file.
    public var text: String { entries.joined(separator: "\n") + "\n" }

    public init(text: String) {
        self.init(text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
    }
}

/// What an Environment's `egress` means for its machine, from the agent's resolved fields (as the
/// state database keeps them, so exec and status read the same answer as apply).
public enum EgressPolicy: Sendable, Equatable {
    /// No network device at all.
    case none
    /// User-mode networking, unrestricted.
    case unrestricted
    /// Only these hosts, through the egress proxy.
    case allowlist(EgressAllowlist)

    public init(fields: Fields) {
        let egress = fields.first { $0.0 == "environment.network.egress" }?.1 ?? "none"
        switch egress {
        case "none":
            self = .none
        case "all":
            self = .unrestricted
        case "model-only":
            // The model gateway only (its own route, which every machine with a model has); the
            // proxy with nothing on its list, which a harness installation widens while it runs.
            self = .allowlist(EgressAllowlist([]))
        default:
            self = .allowlist(EgressAllowlist(Self.listValue(egress)))
        }
    }

    /// The allowlist, when traffic goes through the proxy.
    public var allowlist: EgressAllowlist? {
        if case .allowlist(let list) = self { return list }
        return nil
    }

    public var hasNetwork: Bool { self != .none }

    /// A list field's value (`["git", "curl"]`, as `Canonical.list` writes it).
    public static func listValue(_ text: String) -> [String] {
        guard let data = text.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String]
        else { return [] }
        return list
    }
}

/// Where a guest finds the model gateway: QEMU's user network hands each connection to this address
/// to the gateway socket of the machine's agent.
public enum GatewayAddress {
    public static let guestAddress = "10.0.2.101"
    public static let guestPort = 80
    public static var url: String { "http://\(guestAddress)" }

    /// The path part of a model's base URL, without a trailing slash (`/v1`, or empty): the
    /// gateway serves each model at the same path as its upstream.
    public static func path(of url: String) -> String {
        guard let parts = URLComponents(string: url) else { return "" }
        var path = parts.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        return path
    }
}

/// Where a guest finds its egress proxy: QEMU's user network hands connections to this address to
/// `agentry egress-proxy`.
public enum EgressProxyAddress {
    public static let guestAddress = "10.0.2.100"
    public static let guestPort = 3128
    public static var url: String { "http://\(guestAddress):\(guestPort)" }

    /// The proxy variables a command's environment gets behind an allowlist.
    public static var environment: [String: String] {
        [
            "HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
            // The gateway is reached directly, not through the proxy.
            "NO_PROXY": "localhost,127.0.0.1,\(GatewayAddress.guestAddress)",
            "no_proxy": "localhost,127.0.0.1,\(GatewayAddress.guestAddress)",
        ]
    }
}
