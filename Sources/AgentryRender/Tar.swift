/// Writes a POSIX archive that busybox tar and GNU tar both extract: ustar headers, and a pax
/// extended header before a file whose path or link target does not fit in them (so paths have no
/// length limit).
public struct TarWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// The longest path the archive takes (Linux's PATH_MAX).
    public static let pathLimit = 4096

    public mutating func add(_ file: BundleFile) throws {
        let path = Array(file.path.utf8)
        guard !path.isEmpty, path.count < Self.pathLimit, !path.contains(0) else {
            throw RenderError(
                code: .pathTooLong,
                message:
                    "the path \(file.path.prefix(200)) cannot go in the archive (empty, NUL, or \(Self.pathLimit) bytes or more)"
            )
        }
        var name = path
        var prefix: [UInt8] = []
        var extended: [(String, [UInt8])] = []
        if name.count > 100 {
            // Split at a slash: up to 155 bytes of prefix, up to 100 of name; else a pax header.
            if let split = name.indices.last(where: {
                name[$0] == UInt8(ascii: "/") && $0 <= 155 && name.count - $0 - 1 <= 100 && $0 > 0
            }) {
                prefix = Array(name[..<split])
                name = Array(name[(split + 1)...])
            } else {
                extended.append(("path", path))
                name = Array(name.suffix(100))
            }
        }
        if let target = file.linkTarget, target.utf8.count > 100 { extended.append(("linkpath", Array(target.utf8))) }
        if !extended.isEmpty {
            var records: [UInt8] = []
            for (key, value) in extended { records += Self.paxRecord(key, value) }
            bytes += Self.header(
                name: Array("PaxHeaders/".utf8) + Array(name.suffix(89)), prefix: [], mode: 0o644, size: records.count,
                type: UInt8(ascii: "x"), link: [])
            bytes += records
            bytes += [UInt8](repeating: 0, count: (512 - records.count % 512) % 512)
        }
        let isLink = file.linkTarget != nil
        bytes += Self.header(
            name: name, prefix: prefix, mode: file.mode, size: isLink ? 0 : file.bytes.count,
            type: isLink ? UInt8(ascii: "2") : UInt8(ascii: "0"), link: Array((file.linkTarget ?? "").utf8.prefix(100)))
        if !isLink {
            bytes += file.bytes
            bytes += [UInt8](repeating: 0, count: (512 - file.bytes.count % 512) % 512)
        }
    }

    /// `"<length> key=value\n"`, the length counting itself.
    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = Array(" \(key)=".utf8) + value + [0x0A]
        var length = body.count + 1
        while String(length).utf8.count + body.count != length { length = String(length).utf8.count + body.count }
        return Array(String(length).utf8) + body
    }

    static func header(name: [UInt8], prefix: [UInt8], mode: Int, size: Int, type: UInt8, link: [UInt8]) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ value: [UInt8], at offset: Int) {
            for (index, byte) in value.enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: Int, width: Int) -> [UInt8] {
            let text = String(value, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - text.count)) + text).utf8) + [0]
        }
        put(name, at: 0)
        put(octal(mode & 0o7777, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(octal(size, width: 12), at: 124)
        put(octal(0, width: 12), at: 136)
        put(Array("        ".utf8), at: 148)
        header[156] = type
        put(link, at: 157)
        put(Array("ustar".utf8) + [0] + Array("00".utf8), at: 257)
        put(prefix, at: 345)
        let checksum = header.reduce(0) { $0 + Int($1) }
        put(
            Array(
                (String(repeating: "0", count: max(0, 6 - String(checksum, radix: 8).count))
                    + String(checksum, radix: 8)).utf8) + [0, 0x20], at: 148)
        return header
    }

    public mutating func finish() -> [UInt8] {
        bytes += [UInt8](repeating: 0, count: 1024)
        return bytes
    }
}

/// Reads the regular files of a tar archive (ustar, GNU long names and pax headers, as busybox and
/// GNU tar write them). The archive may come from a hostile guest: it never reads out of bounds.
public enum TarReader {
    /// The `path` record of a pax extended header.
    static func paxPath(_ data: [UInt8]) -> String? {
        var index = 0
        var path: String?
        while index < data.count {
            guard let space = data[index...].firstIndex(of: 0x20),
                let length = Int(String(decoding: data[index..<space], as: UTF8.self)), length > space - index,
                index + length <= data.count
            else { break }
            let record = data[(space + 1)..<(index + length)].dropLast()  // the newline
            if let equals = record.firstIndex(of: UInt8(ascii: "=")),
                String(decoding: record[record.startIndex..<equals], as: UTF8.self) == "path"
            {
                path = String(decoding: record[(equals + 1)...], as: UTF8.self)
            }
            index += length
        }
        return path
    }

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
            case UInt8(ascii: "x"):
                if let path = paxPath(data) { longName = path }
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
