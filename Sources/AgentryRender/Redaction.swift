import AgentryBasics

/// Replaces every secret value in `bytes` with `***`.
public struct Redactor: Sendable {
    let secrets: [[UInt8]]

    /// Redacts `values` and, with `encodings`, their common encodings where they appear whole:
    /// base64 (standard and URL-safe, with and without padding), hex (either case) and URL
    /// percent-encoding.
    public init(_ values: [[UInt8]], encodings: Bool = true) {
        var all = Set(values.filter { !$0.isEmpty })
        if encodings {
            for value in all { all.formUnion(Self.encodings(of: value)) }
        }
        // Longest first, so a value containing another is replaced whole.
        secrets = all.sorted { $0.count != $1.count ? $0.count > $1.count : $0.lexicographicallyPrecedes($1) }
    }

    static func encodings(of value: [UInt8]) -> [[UInt8]] {
        let standard = Array(Base64.encode(value).utf8)
        let unpadded = Array(standard.prefix { $0 != UInt8(ascii: "=") })
        let urlSafe = unpadded.map {
            $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0
        }
        let lowerHex = Array(Hex.string(value).utf8)
        let upperHex = Array(Hex.string(value).uppercased().utf8)
        var percent: [UInt8] = []
        for byte in value {
            let unreserved =
                (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "~")
            if unreserved {
                percent.append(byte)
            } else {
                percent += Array(("%" + Hex.string([byte]).uppercased()).utf8)
            }
        }
        return [
            standard, unpadded, urlSafe, urlSafe + standard.suffix(standard.count - unpadded.count), lowerHex, upperHex,
            percent,
        ]
        .filter { $0 != value && !$0.isEmpty }
    }

    public func redact(_ bytes: [UInt8]) -> [UInt8] {
        guard !secrets.isEmpty else { return bytes }
        return scan(bytes, before: bytes.count).output
    }

    /// Redacts `bytes` from the start, deciding every position before `end` (a secret starting
    /// there may run past it); returns the output and where it stopped.
    func scan(_ bytes: [UInt8], before end: Int) -> (output: [UInt8], stoppedAt: Int) {
        var output: [UInt8] = []
        output.reserveCapacity(max(0, end))
        var index = 0
        let mask = Array("***".utf8)
        outer: while index < end {
            for secret in secrets where bytes[index] == secret[0] && index + secret.count <= bytes.count {
                if bytes[index..<(index + secret.count)].elementsEqual(secret) {
                    output += mask
                    index += secret.count
                    continue outer
                }
            }
            output.append(bytes[index])
            index += 1
        }
        return (output, index)
    }
}

extension Redactor {
    public func text(_ text: String) -> String { String(decoding: redact(Array(text.utf8)), as: UTF8.self) }

    /// The longest secret, in bytes.
    var longest: Int { secrets.first?.count ?? 0 }
}

/// Redacts a stream that arrives in chunks: a secret split across two chunks is still caught, by
/// holding back the bytes that could be the start of one until the next chunk (or the end) says.
public struct StreamRedactor {
    let redactor: Redactor
    var held: [UInt8] = []

    public init(_ redactor: Redactor) {
        self.redactor = redactor
    }

    /// The redacted bytes that are safe to pass on now. Positions from which the longest secret
    /// would still fit in what has arrived are decided; after them, bytes that cannot begin a
    /// secret pass on too, and only a tail that could be the start of one waits for the next chunk
    /// (so output shows as it comes, unless it might be a secret).
    public mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        let longest = redactor.longest
        guard longest > 0 else { return bytes }
        let text = held + bytes
        var (output, index) = redactor.scan(text, before: text.count - (longest - 1))
        let mask = Array("***".utf8)
        undecided: while index < text.count {
            // Longest first, as `scan` decides: a longer secret that may still arrive holds the rest.
            for secret in redactor.secrets where text[index] == secret[0] {
                if index + secret.count <= text.count {
                    if text[index..<(index + secret.count)].elementsEqual(secret) {
                        output += mask
                        index += secret.count
                        continue undecided
                    }
                } else if secret.starts(with: text[index...]) {
                    break undecided
                }
            }
            output.append(text[index])
            index += 1
        }
        held = index < text.count ? Array(text[index...]) : []
        return output
    }

    /// What is still held back, redacted (at the end of the stream).
    public mutating func finish() -> [UInt8] {
        defer { held = [] }
        return redactor.redact(held)
    }
}
