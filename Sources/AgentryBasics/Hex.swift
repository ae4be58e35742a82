#if canImport(Glibc)
    import Glibc
#endif

/// Lower-case hexadecimal text of bytes, and short random identifiers made of it.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func string<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var output = [UInt8]()
        output.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// `count` random bytes as hex (from the system's generator): ids and unique file names.
    public static func random(bytes count: Int = 4) -> String {
        var generator = SystemRandomNumberGenerator()
        return string((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }
}

/// Names of temporary files next to their destination that no other process or task can pick:
/// the process id alone is not enough once one process does several things at once.
public enum TemporaryName {
    public static func beside(_ path: String, _ purpose: String = "tmp") -> String {
        "\(path).\(purpose)-\(getpid())-\(Hex.random(bytes: 6))"
    }
}

/// Standard base64 (RFC 4648, with padding).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var output = [UInt8]()
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
            let value =
                Int(chunk[0]) << 16 | Int(chunk.count > 1 ? chunk[1] : 0) << 8 | Int(chunk.count > 2 ? chunk[2] : 0)
            output.append(alphabet[value >> 18 & 63])
            output.append(alphabet[value >> 12 & 63])
            output.append(chunk.count > 1 ? alphabet[value >> 6 & 63] : UInt8(ascii: "="))
            output.append(chunk.count > 2 ? alphabet[value & 63] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }
}
