/// Writes a POSIX ustar archive (what busybox tar and GNU tar both extract).
public struct TarWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func add(_ file: BundleFile) throws {
        var header = [UInt8](repeating: 0, count: 512)
        var name = Array(file.path.utf8)
        var prefix: [UInt8] = []
        if name.count > 100 {
            // Split at a slash: up to 155 bytes of prefix, up to 100 of name.
            guard
                let split = name.indices.last(where: {
                    name[$0] == UInt8(ascii: "/") && $0 <= 155 && name.count - $0 - 1 <= 100
                })
            else {
                throw RenderError(
                    code: .pathTooLong, message: "the path \(file.path) is too long for the archive (255 bytes at most)"
                )
            }
            prefix = Array(name[..<split])
            name = Array(name[(split + 1)...])
        }
        func put(_ value: [UInt8], at offset: Int) {
            for (index, byte) in value.enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: Int, width: Int) -> [UInt8] {
            let text = String(value, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - text.count)) + text).utf8) + [0]
        }
        let isLink = file.linkTarget != nil
        put(name, at: 0)
        put(octal(file.mode & 0o7777, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(octal(isLink ? 0 : file.bytes.count, width: 12), at: 124)
        put(octal(0, width: 12), at: 136)
        put(Array("        ".utf8), at: 148)
        header[156] = isLink ? UInt8(ascii: "2") : UInt8(ascii: "0")
        if let target = file.linkTarget { put(Array(target.utf8.prefix(100)), at: 157) }
        put(Array("ustar".utf8) + [0] + Array("00".utf8), at: 257)
        put(prefix, at: 345)
        let checksum = header.reduce(0) { $0 + Int($1) }
        put(
            Array(
                (String(repeating: "0", count: max(0, 6 - String(checksum, radix: 8).count))
                    + String(checksum, radix: 8)).utf8) + [0, 0x20], at: 148)
        bytes += header
        if !isLink {
            bytes += file.bytes
            bytes += [UInt8](repeating: 0, count: (512 - file.bytes.count % 512) % 512)
        }
    }

    public mutating func finish() -> [UInt8] {
        bytes += [UInt8](repeating: 0, count: 1024)
        return bytes
    }
}

/// Reads the regular files of a tar archive (ustar and GNU, as busybox and GNU tar write them).
public enum TarReader {
    public static func files(_ bytes: [UInt8]) -> [(path: String, bytes: [UInt8])] {
        var files: [(String, [UInt8])] = []
        var offset = 0
        var longName: String?
        func field(_ start: Int, _ length: Int) -> [UInt8] {
            Array(bytes[(offset + start)..<(offset + start + length)].prefix { $0 != 0 })
        }
        while offset + 512 <= bytes.count {
            let header = bytes[offset..<(offset + 512)]
            if header.allSatisfy({ $0 == 0 }) { break }
            let sizeText = String(decoding: field(124, 12), as: UTF8.self).trimmingCharacters(in: .whitespaces)
            guard let size = Int(sizeText, radix: 8), size >= 0 else { break }
            let type = bytes[offset + 156]
            var name = String(decoding: field(0, 100), as: UTF8.self)
            let prefix = String(decoding: field(345, 155), as: UTF8.self)
            if !prefix.isEmpty, field(257, 5) == Array("ustar".utf8) { name = prefix + "/" + name }
            let dataStart = offset + 512
            guard dataStart + size <= bytes.count else { break }
            let data = Array(bytes[dataStart..<(dataStart + size)])
            switch type {
            case UInt8(ascii: "L"):
                longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "0"), 0:
                files.append((longName ?? name, data))
                longName = nil
            default:
                longName = nil
            }
            offset = dataStart + (size + 511) / 512 * 512
        }
        return files
    }
}
