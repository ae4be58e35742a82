/// A compact binary writer: varint integers and length-prefixed bytes. Imports no Foundation, so
/// the in-VM guest agent (a static executable) and the host share one implementation.
public struct ByteWriter: Sendable {
    public var bytes: [UInt8] = []

    public init() {}

    public mutating func byte(_ value: UInt8) { bytes.append(value) }

    public mutating func int(_ value: Int) {
        var rest = UInt64(max(0, value))
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    /// A signed integer (zig-zag), for exit statuses and the like.
    public mutating func signed(_ value: Int) {
        int(value >= 0 ? value << 1 : (~value << 1) | 1)
    }

    public mutating func string(_ value: String) {
        int(value.utf8.count)
        bytes += value.utf8
    }

    public mutating func data(_ value: [UInt8]) {
        int(value.count)
        bytes += value
    }

    public mutating func strings(_ values: [String]) {
        int(values.count)
        for value in values { string(value) }
    }

    public mutating func bool(_ value: Bool) { byte(value ? 1 : 0) }
}

/// Reads what `ByteWriter` wrote. Every read is bounds-checked: nil means malformed input.
public struct ByteReader {
    public let bytes: UnsafeBufferPointer<UInt8>
    public var offset = 0

    public init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    public var atEnd: Bool { offset == bytes.count }

    public mutating func expect(_ prefix: [UInt8]) -> Bool {
        guard bytes.count >= prefix.count, bytes.prefix(prefix.count).elementsEqual(prefix) else { return false }
        offset = prefix.count
        return true
    }

    public mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func int() -> Int? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while let next = byte() {
            value |= UInt64(next & 0x7F) << shift
            if next & 0x80 == 0 { return value <= UInt64(Int.max) ? Int(value) : nil }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    public mutating func signed() -> Int? {
        guard let raw = int() else { return nil }
        return raw & 1 == 0 ? raw >> 1 : ~(raw >> 1)
    }

    public mutating func string() -> String? {
        guard let count = int(), count <= bytes.count - offset else { return nil }
        defer { offset += count }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[offset..<(offset + count)]), as: UTF8.self)
    }

    public mutating func data() -> [UInt8]? {
        guard let count = int(), count <= bytes.count - offset else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    public mutating func strings() -> [String]? {
        guard let count = int(), count <= bytes.count - offset else { return nil }
        var values: [String] = []
        values.reserveCapacity(count)
        for _ in 0..<count {
            guard let value = string() else { return nil }
            values.append(value)
        }
        return values
    }

    public mutating func bool() -> Bool? {
        byte().map { $0 != 0 }
    }
}

/// Bytes waiting to be written or parsed: appended at the end, consumed from the front, in
/// amortised constant time (the consumed prefix is dropped only once it is half the storage).
public struct ByteQueue: Sendable {
    var storage: [UInt8] = []
    var head = 0

    public init() {}

    public var count: Int { storage.count - head }
    public var isEmpty: Bool { count == 0 }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        storage.append(contentsOf: bytes)
    }

    public mutating func consume(_ count: Int) {
        head += min(count, self.count)
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 65536 && head * 2 > storage.count {
            storage.removeFirst(head)
            head = 0
        }
    }

    /// The bytes at `offset` from the front.
    public subscript(offset: Int) -> UInt8 { storage[head + offset] }

    /// Calls `body` with the waiting bytes (for a write, a parse).
    public func withUnsafeBytes<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) rethrows -> T {
        try storage.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[head...])) }
    }
}
