/// Recognises strings shaped like credentials: provider API keys, access tokens, private keys,
/// and URLs with a password in them. Secrets are references in agentry, never values, so any such
/// string in a resource is refused.
public enum CredentialScanner {
    struct Shape: Sendable {
        let prefix: [UInt8]
        /// Characters after the prefix needed to call it a credential.
        let minimumBody: Int
        let name: String
        /// Characters allowed in the body.
        let body: @Sendable (UInt8) -> Bool
    }

    static func tokenByte(_ byte: UInt8) -> Bool {
        Formats.isAlnum(byte) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    static func alnum(_ byte: UInt8) -> Bool { Formats.isAlnum(byte) }

    static func upperAlnum(_ byte: UInt8) -> Bool {
        (byte >= 65 && byte <= 90) || (byte >= 48 && byte <= 57)
    }

    static func base64URL(_ byte: UInt8) -> Bool {
        tokenByte(byte) || byte == UInt8(ascii: "=")
    }

    static let shapes: [Shape] = [
        Shape(prefix: Array("sk-ant-".utf8), minimumBody: 20, name: "an Anthropic API key", body: tokenByte),
        Shape(prefix: Array("sk-proj-".utf8), minimumBody: 20, name: "an OpenAI project key", body: tokenByte),
        Shape(prefix: Array("sk-".utf8), minimumBody: 20, name: "an OpenAI-style API key", body: tokenByte),
        Shape(prefix: Array("github_pat_".utf8), minimumBody: 22, name: "a GitHub token", body: tokenByte),
        Shape(prefix: Array("ghp_".utf8), minimumBody: 30, name: "a GitHub token", body: alnum),
        Shape(prefix: Array("gho_".utf8), minimumBody: 30, name: "a GitHub token", body: alnum),
        Shape(prefix: Array("ghu_".utf8), minimumBody: 30, name: "a GitHub token", body: alnum),
        Shape(prefix: Array("ghs_".utf8), minimumBody: 30, name: "a GitHub token", body: alnum),
        Shape(prefix: Array("ghr_".utf8), minimumBody: 30, name: "a GitHub token", body: alnum),
        Shape(prefix: Array("glpat-".utf8), minimumBody: 20, name: "a GitLab token", body: tokenByte),
        Shape(prefix: Array("AKIA".utf8), minimumBody: 16, name: "an AWS access key id", body: upperAlnum),
        Shape(prefix: Array("ASIA".utf8), minimumBody: 16, name: "an AWS access key id", body: upperAlnum),
        Shape(prefix: Array("AIza".utf8), minimumBody: 35, name: "a Google API key", body: tokenByte),
        Shape(prefix: Array("xoxb-".utf8), minimumBody: 20, name: "a Slack token", body: tokenByte),
        Shape(prefix: Array("xoxp-".utf8), minimumBody: 20, name: "a Slack token", body: tokenByte),
        Shape(prefix: Array("xoxa-".utf8), minimumBody: 20, name: "a Slack token", body: tokenByte),
        Shape(prefix: Array("xapp-".utf8), minimumBody: 20, name: "a Slack token", body: tokenByte),
        Shape(prefix: Array("hf_".utf8), minimumBody: 30, name: "a Hugging Face token", body: alnum),
        Shape(prefix: Array("sk_live_".utf8), minimumBody: 20, name: "a Stripe key", body: alnum),
        Shape(prefix: Array("rk_live_".utf8), minimumBody: 20, name: "a Stripe key", body: alnum),
        Shape(prefix: Array("npm_".utf8), minimumBody: 36, name: "an npm token", body: alnum),
        Shape(prefix: Array("pypi-".utf8), minimumBody: 50, name: "a PyPI token", body: tokenByte),
        Shape(
            prefix: Array("eyJ".utf8), minimumBody: 30, name: "a JSON Web Token",
            body: { base64URL($0) || $0 == UInt8(ascii: ".") }),
        Shape(prefix: Array("-----BEGIN ".utf8), minimumBody: 0, name: "a private key", body: { _ in true }),
    ]

    /// Shapes indexed by first byte, so the scan looks at each byte once.
    static let byFirstByte: [UInt8: [Shape]] = Dictionary(grouping: shapes, by: { $0.prefix[0] })

    /// What `text` looks like, if it looks like a credential.
    public static func match(_ text: String) -> String? {
        // Every shape needs at least 11 characters; short strings are the common case.
        guard text.utf8.count >= 11 else { return nil }
        var bytes = Array(text.utf8)
        return bytes.withUnsafeMutableBufferPointer { match(UnsafeBufferPointer($0)) }
    }

    static func match(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        let count = bytes.count
        var index = 0
        while index < count {
            let byte = bytes[index]
            // A token starts at the beginning or after a non-token character.
            let atBoundary = index == 0 || !tokenByte(bytes[index - 1])
            if atBoundary, let candidates = byFirstByte[byte] {
                for shape in candidates where hasPrefix(bytes, shape.prefix, at: index) {
                    if shape.name == "a private key" {
                        if containsPrivateKeyHeader(bytes, from: index) { return shape.name }
                        continue
                    }
                    var end = index + shape.prefix.count
                    while end < count, shape.body(bytes[end]) { end += 1 }
                    let body = end - index - shape.prefix.count
                    if body >= shape.minimumBody, looksRandom(bytes, from: index + shape.prefix.count, to: end) {
                        if shape.prefix == Array("eyJ".utf8) && !isJWT(bytes, from: index, to: count) { continue }
                        return shape.name
                    }
                }
            }
            if byte == UInt8(ascii: ":"), hasPrefix(bytes, Array("://".utf8), at: index),
                urlHasPassword(bytes, from: index + 3)
            {
                return "a URL with a password in it"
            }
            index += 1
        }
        return nil
    }

    static func hasPrefix(_ bytes: UnsafeBufferPointer<UInt8>, _ prefix: [UInt8], at index: Int) -> Bool {
        guard index + prefix.count <= bytes.count else { return false }
        for offset in 0..<prefix.count where bytes[index + offset] != prefix[offset] { return false }
        return true
    }

    /// Real keys mix digits and letters; this keeps `sk-my-very-long-descriptive-name` from matching.
    static func looksRandom(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Bool {
        if end == start { return true }
        var digits = 0
        var letters = 0
        for index in start..<end {
            let byte = bytes[index]
            if byte >= 48 && byte <= 57 { digits += 1 } else if Formats.isAlnum(byte) { letters += 1 }
        }
        return digits >= 2 && letters >= 2
    }

    static func isJWT(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Bool {
        var dots = 0
        var index = start
        while index < end, base64URL(bytes[index]) || bytes[index] == UInt8(ascii: ".") {
            if bytes[index] == UInt8(ascii: ".") { dots += 1 }
            index += 1
        }
        return dots == 2
    }

    static func containsPrivateKeyHeader(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Bool {
        var index = start + "-----BEGIN ".utf8.count
        let lineEnd = min(bytes.count, index + 40)
        let marker = Array("PRIVATE KEY-----".utf8)
        while index + marker.count <= lineEnd {
            if hasPrefix(bytes, marker, at: index) { return true }
            index += 1
        }
        return false
    }

    /// `scheme://user:password@host`, where the password is not a `{{placeholder}}` or `${VAR}`.
    static func urlHasPassword(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Bool {
        var index = start
        var colon: Int?
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "/") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "?")
                || byte == UInt8(ascii: "#")
            {
                return false
            }
            if byte == UInt8(ascii: ":") && colon == nil { colon = index }
            if byte == UInt8(ascii: "@") {
                guard let colon, index - colon > 1 else { return false }
                let password = bytes[(colon + 1)..<index]
                let placeholder =
                    password.first == UInt8(ascii: "{") || password.first == UInt8(ascii: "$")
                    || password.first == UInt8(ascii: "<")
                return !placeholder
            }
            index += 1
        }
        return false
    }
}
