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
