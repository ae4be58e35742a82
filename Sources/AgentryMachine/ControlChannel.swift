import AgentryBasics
import AgentryCore
import AgentryWire
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The host end of a guest's control port: a unix socket QEMU serves for the virtio-serial port.
/// Not thread-safe: one channel per operation.
public final class ControlChannel {
    let descriptor: Int32
    var decoder = FrameDecoder()
    var nextID: UInt32 = 1
    /// Frames read ahead of the one a caller waited for.
    var pending: [Message] = []

    /// What the guest said when it came up (or nil when the channel resynchronised with a guest
    /// that was already running).
    public private(set) var hello: Message?

    init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }

    /// Connects to the socket at `path`, retrying until `deadline` (QEMU creates it as it starts).
    public static func connect(_ path: String, deadline: ContinuousClock.Instant) throws -> ControlChannel {
        guard path.utf8.count < 108 else {
            throw MachineError(
                .invalidInput,
                "the socket path \(path) is longer than the 107 bytes unix sockets allow; use a shorter --state-dir")
        }
        while true {
            let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard descriptor >= 0 else {
                throw MachineError(.guestFailed, "socket: \(String(cString: strerror(errno)))")
            }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in
                for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if connected == 0 { return ControlChannel(descriptor: descriptor) }
            close(descriptor)
            if ContinuousClock.now >= deadline {
                throw MachineError(.guestFailed, "cannot connect to \(path): \(String(cString: strerror(errno)))")
            }
            usleep(10_000)
        }
    }

    /// Sends without blocking; false when the socket would block (the guest is not reading).
    func trySend(_ message: Message) -> Bool {
        let frame = message.frame()
        return frame.withUnsafeBufferPointer { buffer in
            Glibc.send(descriptor, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                == buffer.count
        }
    }

    func send(_ message: Message) throws {
        let frame = message.frame()
        // The guest refuses (and resynchronises past) a frame over the limit: never sent.
        guard frame.count - 5 <= Wire.maxFrame else {
            throw MachineError(
                .invalidInput,
                "a request of \(frame.count) bytes is over the control channel's limit (\(Wire.maxFrame))")
        }
        try frame.withUnsafeBufferPointer { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.send(
                    descriptor, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 {
                    if errno == EINTR { continue }
                    throw MachineError(.guestFailed, "the control channel closed: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
    }

    /// The next message, or nil when `deadline` passes first.
    func receive(until deadline: ContinuousClock.Instant) throws -> Message? {
        if !pending.isEmpty { return pending.removeFirst() }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            do {
                if let message = try decoder.next() { return message }
            } catch let failure as FrameDecoder.Failure {
                // What comes from the guest is untrusted: a frame that breaks the protocol ends this
                // session with a clear error, never a raw decoder error.
                let what: String
                switch failure {
                case .tooLarge(let length): what = "a frame of \(length) bytes (at most \(Wire.maxFrame))"
                default: what = "a malformed frame"
                }
                throw MachineError(
                    .guestFailed, "the machine sent \(what) on its control channel; the session was ended")
            }
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero { return nil }
            var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
            let milliseconds = Int32(min(1000, max(1, remaining.milliseconds)))
            let ready = poll(&descriptors, 1, milliseconds)
            if ready < 0 && errno != EINTR {
                throw MachineError(.guestFailed, "poll: \(String(cString: strerror(errno)))")
            }
            if ready <= 0 { continue }
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count == 0 {
                throw MachineError(.guestFailed, "the machine closed the control channel (it stopped or crashed)")
            }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw MachineError(.guestFailed, "the control channel failed: \(String(cString: strerror(errno)))")
            }
            decoder.append(buffer[0..<count])
        }
    }

    func newID() -> UInt32 {
        defer { nextID &+= 1 }
        return nextID
    }

    /// Waits until the guest agent answers. A machine that was just started (`booting`) is waited
    /// for passively until it says hello: bytes queued for a port the guest has not opened yet make
    /// QEMU spin and starve the boot. A machine that was already running is pinged (once a second,
    /// never blocking) and answers with a pong.
    public func waitUntilReady(deadline: ContinuousClock.Instant, booting: Bool = false) throws -> Message? {
        var pinged: Set<UInt32> = []
        var lastPing = ContinuousClock.now - .seconds(2)
        while ContinuousClock.now < deadline {
            if !booting && ContinuousClock.now - lastPing >= .seconds(1) {
                let id = newID()
                if trySend(.ping(id: id)) { pinged.insert(id) }
                lastPing = .now
            }
            guard let message = try receive(until: min(deadline, .now + .milliseconds(250))) else { continue }
            switch message {
            case .hello(let version, _, _, _, _):
                guard version == Wire.protocolVersion else {
                    throw MachineError(
                        .guestRefused,
                        "the guest agent speaks protocol \(version), this agentry \(Wire.protocolVersion); rebuild the image"
                    )
                }
                hello = message
                // Drain the pongs of our pings so they do not surprise the next request.
                return message
            case .pong(let id) where pinged.contains(id):
                return message
            default:
                continue  // output of commands from before a reconnect
            }
        }
        return nil
    }

    /// Sends a request and returns its one reply (ok, failure or file data).
    func request(_ make: (UInt32) -> Message, timeout: Duration = .seconds(30)) throws -> Message {
        let id = newID()
        try send(make(id))
        let deadline = ContinuousClock.now + timeout
        while let message = try receive(until: deadline) {
            if message.id == id { return message }
        }
        throw MachineError(.guestFailed, "the guest agent did not answer within \(timeout.goStyle)")
    }

    /// Runs a command in the guest, streaming its output to `output`; returns its exit status.
    func run(
        _ argv: [String], environment: [String], directory: String, stdin: [UInt8], timeout: Duration?,
        interruption: Interruption?, output: (ProcessStream, [UInt8]) -> Void
    ) throws -> GuestExit {
        let id = newID()
        // Rounded up: a timeout under a millisecond is still a timeout (0 would mean none).
        let milliseconds = timeout.map { max(1, Int($0.millisecondsRoundedUp)) } ?? 0
        try send(
            .exec(
                id: id, argv: argv, environment: environment, directory: directory, stdin: stdin,
                timeoutMillis: milliseconds))
        // The guest enforces the timeout; the host allows a margin before it gives up on the guest.
        var hostDeadline = ContinuousClock.now + (timeout.map { $0 + .seconds(30) } ?? .seconds(86_400 * 365))
        var interrupted = false
        while true {
            if !interrupted, interruption?.isInterrupted == true {
                // The whole process tree goes; its exit comes back as usual.
                interrupted = true
                try send(.signal(id: newID(), target: id, signal: Int(SIGKILL)))
                hostDeadline = min(hostDeadline, ContinuousClock.now + .seconds(10))
            }
            guard let message = try receive(until: min(hostDeadline, .now + .milliseconds(250))) else {
                if ContinuousClock.now >= hostDeadline { break }
                continue
            }
            switch message {
            case .output(id, let stream, let data): output(stream, data)
            case .exited(id, let status, _, let timedOut):
                return GuestExit(status: status, timedOut: timedOut, interrupted: interrupted)
            case .failure(id, let text): throw MachineError(.guestRefused, text)
            default: continue
            }
        }
        throw MachineError(.guestFailed, "the guest agent stopped answering while running \(argv.first ?? "")")
    }

    /// Runs a command on a pseudo-terminal in the guest, typing what `terminal.input` gives into it
    /// and following the window's size; returns its exit status.
    func runTerminal(
        _ argv: [String], environment: [String], directory: String, terminal: TerminalSession, timeout: Duration?,
        output: ([UInt8]) -> Void
    ) throws -> GuestExit {
        let id = newID()
        let milliseconds = timeout.map { max(1, Int($0.millisecondsRoundedUp)) } ?? 0
        var size = terminal.size()
        try send(
            .execTerminal(
                id: id, argv: argv, environment: environment, directory: directory, rows: size.rows,
                columns: size.columns, timeoutMillis: milliseconds))
        let hostDeadline = ContinuousClock.now + (timeout.map { $0 + .seconds(30) } ?? .seconds(86_400 * 365))
        var input = terminal.input
        var buffer = [UInt8](repeating: 0, count: 16384)
        while ContinuousClock.now < hostDeadline {
            // Frames already read ahead first; then whichever comes: the guest's, or typing.
            var message = try receive(until: .now)
            if message == nil {
                var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
                if let input { descriptors.append(pollfd(fd: input, events: Int16(POLLIN), revents: 0)) }
                _ = poll(&descriptors, nfds_t(descriptors.count), 100)
                if let source = input, descriptors[1].revents != 0 {
                    let count = read(source, &buffer, buffer.count)
                    if count > 0 {
                        try send(.input(id: newID(), target: id, data: Array(buffer[0..<count])))
                    } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                        input = nil  // the terminal went away; the command goes on until it ends
                    }
                }
                let now = terminal.size()
                if now != size {
                    size = now
                    try send(.resize(id: newID(), target: id, rows: now.rows, columns: now.columns))
                }
                if descriptors[0].revents != 0 { message = try receive(until: .now + .milliseconds(1)) }
            }
            switch message {
            case .output(id, _, let data)?: output(data)
            case .exited(id, let status, _, let timedOut)?:
                return GuestExit(status: status, timedOut: timedOut, interrupted: false)
            case .failure(id, let text)?: throw MachineError(.guestRefused, text)
            default: continue
            }
        }
        throw MachineError(.guestFailed, "the guest agent stopped answering while running \(argv.first ?? "")")
    }

    public func putFile(_ path: String, _ data: [UInt8], mode: Int) throws {
        let reply = try request { .putFile(id: $0, path: path, mode: mode, data: data) }
        if case .failure(_, let text) = reply { throw MachineError(.guestRefused, text) }
    }

    public func getFile(_ path: String) throws -> [UInt8] {
        switch try request({ .getFile(id: $0, path: path) }) {
        case .fileData(_, let data): return data
        case .failure(_, let text): throw MachineError(.guestRefused, text)
        default: throw MachineError(.guestRefused, "unexpected reply to a file read")
        }
    }

    /// Asks the guest to sync its disks and power off.
    public func shutdown() throws {
        _ = try request({ .shutdown(id: $0) }, timeout: .seconds(10))
    }
}

extension ControlChannel: GuestChannel {
    public func waitUntilReady(timeout: Duration, booting: Bool) throws -> GuestHello? {
        guard let message = try waitUntilReady(deadline: .now + timeout, booting: booting) else { return nil }
        if case .hello(_, let agentVersion, let kernel, let uptime, let disk) = message {
            return GuestHello(agentVersion: agentVersion, kernel: kernel, uptimeMilliseconds: Int(uptime), disk: disk)
        }
        // A guest that was already running answers a ping: it said hello to an earlier host.
        return GuestHello(agentVersion: "", kernel: "", uptimeMilliseconds: 0, disk: "")
    }

    public func exec(
        _ argv: [String], environment: [String], directory: String, stdin: [UInt8], timeout: Duration?,
        interruption: Interruption?, output: (ProcessStream, [UInt8]) -> Void
    ) throws -> GuestExit {
        try run(
            argv, environment: environment, directory: directory, stdin: stdin, timeout: timeout,
            interruption: interruption, output: output)
    }

    public func execTerminal(
        _ argv: [String], environment: [String], directory: String, terminal: TerminalSession, timeout: Duration?,
        output: ([UInt8]) -> Void
    ) throws -> GuestExit {
        try runTerminal(
            argv, environment: environment, directory: directory, terminal: terminal, timeout: timeout, output: output)
    }
}
