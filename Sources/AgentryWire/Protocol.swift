/// The control protocol between agentry (host) and the guest agent in each microVM, spoken over the
/// virtio-serial port `agentry.ctl`.
///
/// A frame is a magic byte `0xA7`, a 4-byte big-endian body length (at most `maxFrame`), then the body:
/// a message type byte and the message's fields (varints and length-prefixed bytes, see
/// `ByteWriter`). Requests carry an id chosen by the host; replies and streamed output carry it back.
/// The guest says `hello` once when it starts; a host that connects later (agentry restarted) sends
/// `ping` and discards frames until the matching `pong`, which resynchronises the stream.
public enum Wire {
    /// Bumped when a message changes incompatibly; the host refuses a guest it does not speak.
    public static let protocolVersion = 1
    public static let magic: UInt8 = 0xA7
    public static let maxFrame = 16 << 20
    /// The virtio-serial port name the guest looks for under /sys/class/virtio-ports.
    public static let portName = "agentry.ctl"
}

public enum ProcessStream: UInt8, Sendable, Equatable {
    case stdout = 1, stderr = 2
}

public enum Message: Sendable, Equatable {
    // Guest to host.
    /// The guest agent is up: its protocol version, its own version, the kernel, milliseconds since
    /// boot, and the state of the environment disk (`mounted`, `formatted`, `none`).
    case hello(protocolVersion: Int, agentVersion: String, kernel: String, uptimeMillis: Int, disk: String)
    case output(id: UInt32, stream: ProcessStream, data: [UInt8])
    /// A process ended: its exit status, or the signal that killed it (`status` is then 128 + signal).
    case exited(id: UInt32, status: Int, signal: Int, timedOut: Bool)
    case fileData(id: UInt32, data: [UInt8])
    case ok(id: UInt32)
    case failure(id: UInt32, message: String)
    case pong(id: UInt32)

    // Host to guest.
    /// Runs `argv` with exactly `environment` (`KEY=VALUE`), in `directory`, feeding `stdin`, killing
    /// its whole process group after `timeoutMillis` (0: no limit).
    case exec(
        id: UInt32, argv: [String], environment: [String], directory: String, stdin: [UInt8], timeoutMillis: Int)
    /// Writes a file (parent folders created) with `mode`; `secret` files go to the tmpfs only.
    case putFile(id: UInt32, path: String, mode: Int, data: [UInt8])
    case getFile(id: UInt32, path: String)
    /// Sends `signal` to the process group of the exec `target`.
    case signal(id: UInt32, target: UInt32, signal: Int)
    case ping(id: UInt32)
    /// Syncs and powers the machine off.
    case shutdown(id: UInt32)
    /// As `exec`, on a new pseudo-terminal of `rows` by `columns` (the command's session and
    /// controlling terminal): its output comes as `stdout`, its input with `input`.
    case execTerminal(
        id: UInt32, argv: [String], environment: [String], directory: String, rows: Int, columns: Int,
        timeoutMillis: Int)
    /// Bytes typed into the terminal of the exec `target` (no reply).
    case input(id: UInt32, target: UInt32, data: [UInt8])
    /// The terminal of the exec `target` is now `rows` by `columns` (no reply).
    case resize(id: UInt32, target: UInt32, rows: Int, columns: Int)

    enum Tag: UInt8 {
        case hello = 1, output, exited, fileData, ok, failure, pong
        case exec = 64, putFile, getFile, signal, ping, shutdown, execTerminal, input, resize
    }

    /// The request id a reply or stream belongs to (hello has none).
    public var id: UInt32? {
        switch self {
        case .hello: return nil
        case .output(let id, _, _), .exited(let id, _, _, _), .fileData(let id, _), .ok(let id), .failure(let id, _),
            .pong(let id), .exec(let id, _, _, _, _, _), .putFile(let id, _, _, _), .getFile(let id, _),
            .signal(let id, _, _), .ping(let id), .shutdown(let id), .execTerminal(let id, _, _, _, _, _, _),
            .input(let id, _, _), .resize(let id, _, _, _):
            return id
        }
    }

    /// The message as one frame.
    public func frame() -> [UInt8] {
        var body = ByteWriter()
        switch self {
        case .hello(let version, let agentVersion, let kernel, let uptime, let disk):
            body.byte(Tag.hello.rawValue)
            body.int(version)
            body.string(agentVersion)
            body.string(kernel)
            body.int(uptime)
            body.string(disk)
        case .output(let id, let stream, let data):
            body.byte(Tag.output.rawValue)
            body.int(Int(id))
            body.byte(stream.rawValue)
            body.data(data)
        case .exited(let id, let status, let signal, let timedOut):
            body.byte(Tag.exited.rawValue)
            body.int(Int(id))
            body.signed(status)
            body.int(signal)
            body.bool(timedOut)
        case .fileData(let id, let data):
            body.byte(Tag.fileData.rawValue)
            body.int(Int(id))
            body.data(data)
        case .ok(let id):
            body.byte(Tag.ok.rawValue)
            body.int(Int(id))
        case .failure(let id, let message):
            body.byte(Tag.failure.rawValue)
            body.int(Int(id))
            body.string(message)
        case .pong(let id):
            body.byte(Tag.pong.rawValue)
            body.int(Int(id))
        case .exec(let id, let argv, let environment, let directory, let stdin, let timeout):
            body.byte(Tag.exec.rawValue)
            body.int(Int(id))
            body.strings(argv)
            body.strings(environment)
            body.string(directory)
            body.data(stdin)
            body.int(timeout)
        case .putFile(let id, let path, let mode, let data):
            body.byte(Tag.putFile.rawValue)
            body.int(Int(id))
            body.string(path)
            body.int(mode)
            body.data(data)
        case .getFile(let id, let path):
            body.byte(Tag.getFile.rawValue)
            body.int(Int(id))
            body.string(path)
        case .signal(let id, let target, let signal):
            body.byte(Tag.signal.rawValue)
            body.int(Int(id))
            body.int(Int(target))
            body.int(signal)
        case .ping(let id):
            body.byte(Tag.ping.rawValue)
            body.int(Int(id))
        case .shutdown(let id):
            body.byte(Tag.shutdown.rawValue)
            body.int(Int(id))
        case .execTerminal(let id, let argv, let environment, let directory, let rows, let columns, let timeout):
            body.byte(Tag.execTerminal.rawValue)
            body.int(Int(id))
            body.strings(argv)
            body.strings(environment)
            body.string(directory)
            body.int(rows)
            body.int(columns)
            body.int(timeout)
        case .input(let id, let target, let data):
            body.byte(Tag.input.rawValue)
            body.int(Int(id))
            body.int(Int(target))
            body.data(data)
        case .resize(let id, let target, let rows, let columns):
            body.byte(Tag.resize.rawValue)
            body.int(Int(id))
            body.int(Int(target))
            body.int(rows)
            body.int(columns)
        }
        let length = UInt32(body.bytes.count)
        return [
            Wire.magic, UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16),
            UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
        ] + body.bytes
    }

    /// Decodes one frame body, or nil when it is malformed.
    public static func decode(body: UnsafeBufferPointer<UInt8>) -> Message? {
        var reader = ByteReader(bytes: body)
        guard let raw = reader.byte(), let tag = Tag(rawValue: raw) else { return nil }
        func id() -> UInt32? { reader.int().flatMap { UInt32(exactly: $0) } }
        let message: Message?
        switch tag {
        case .hello:
            guard let version = reader.int(), let agentVersion = reader.string(), let kernel = reader.string(),
                let uptime = reader.int(), let disk = reader.string()
            else { return nil }
            message = .hello(
                protocolVersion: version, agentVersion: agentVersion, kernel: kernel, uptimeMillis: uptime, disk: disk)
        case .output:
            guard let id = id(), let stream = reader.byte().flatMap(ProcessStream.init(rawValue:)),
                let data = reader.data()
            else { return nil }
            message = .output(id: id, stream: stream, data: data)
        case .exited:
            guard let id = id(), let status = reader.signed(), let signal = reader.int(), let timedOut = reader.bool()
            else { return nil }
            message = .exited(id: id, status: status, signal: signal, timedOut: timedOut)
        case .fileData:
            guard let id = id(), let data = reader.data() else { return nil }
            message = .fileData(id: id, data: data)
        case .ok:
            message = id().map { .ok(id: $0) }
        case .failure:
            guard let id = id(), let text = reader.string() else { return nil }
            message = .failure(id: id, message: text)
        case .pong:
            message = id().map { .pong(id: $0) }
        case .exec:
            guard let id = id(), let argv = reader.strings(), let environment = reader.strings(),
                let directory = reader.string(), let stdin = reader.data(), let timeout = reader.int()
            else { return nil }
            message = .exec(
                id: id, argv: argv, environment: environment, directory: directory, stdin: stdin, timeoutMillis: timeout
            )
        case .putFile:
            guard let id = id(), let path = reader.string(), let mode = reader.int(), let data = reader.data() else {
                return nil
            }
            message = .putFile(id: id, path: path, mode: mode, data: data)
        case .getFile:
            guard let id = id(), let path = reader.string() else { return nil }
            message = .getFile(id: id, path: path)
        case .signal:
            guard let id = id(), let target = reader.int().flatMap({ UInt32(exactly: $0) }), let signal = reader.int()
            else { return nil }
            message = .signal(id: id, target: target, signal: signal)
        case .ping:
            message = id().map { .ping(id: $0) }
        case .shutdown:
            message = id().map { .shutdown(id: $0) }
        case .execTerminal:
            guard let id = id(), let argv = reader.strings(), let environment = reader.strings(),
                let directory = reader.string(), let rows = reader.int(), let columns = reader.int(),
                let timeout = reader.int()
            else { return nil }
            message = .execTerminal(
                id: id, argv: argv, environment: environment, directory: directory, rows: rows, columns: columns,
                timeoutMillis: timeout)
        case .input:
            guard let id = id(), let target = reader.int().flatMap({ UInt32(exactly: $0) }), let data = reader.data()
            else { return nil }
            message = .input(id: id, target: target, data: data)
        case .resize:
            guard let id = id(), let target = reader.int().flatMap({ UInt32(exactly: $0) }), let rows = reader.int(),
                let columns = reader.int()
            else { return nil }
            message = .resize(id: id, target: target, rows: rows, columns: columns)
        }
        return reader.atEnd ? message : nil
    }
}

/// Reassembles frames from a byte stream, however it was split.
public struct FrameDecoder: Sendable {
    public enum Failure: Error, Equatable {
        case badMagic
        case tooLarge(Int)
        case malformed
    }

    var buffer = ByteQueue()

    public init() {}

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        buffer.append(bytes)
    }

    /// Bytes received but not yet decoded.
    public var pending: Int { buffer.count }

    /// The next complete message, nil when more bytes are needed.
    public mutating func next() throws -> Message? {
        guard buffer.count >= 5 else { return nil }
        guard buffer[0] == Wire.magic else { throw Failure.badMagic }
        let length = Int(buffer[1]) << 24 | Int(buffer[2]) << 16 | Int(buffer[3]) << 8 | Int(buffer[4])
        guard length <= Wire.maxFrame else { throw Failure.tooLarge(length) }
        guard buffer.count >= 5 + length else { return nil }
        let message = buffer.withUnsafeBytes { pointer in
            Message.decode(body: UnsafeBufferPointer(rebasing: pointer[5..<(5 + length)]))
        }
        buffer.consume(5 + length)
        guard let message else { throw Failure.malformed }
        return message
    }
}
