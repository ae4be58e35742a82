import AgentryBasics
import AgentryWire

#if canImport(Glibc)
    import Glibc
#endif

extension MachineSupervisor {
    /// The control channel shared between clients: one connection to the guest, many to agentry.
    /// Single-threaded: one poll loop over every socket, nothing blocks.
    final class Hub {
        struct Client {
            var decoder = FrameDecoder()
            var outbox = ByteQueue()
        }

        /// Where a reply to a renumbered request goes: the client and its own id (nil client: discard).
        struct Route {
            var client: Int32?
            var id: UInt32
            var exec: Bool
        }

        let upstream: Int32
        let listener: Int32
        var upstreamDecoder = FrameDecoder()
        var upstreamOutbox = ByteQueue()
        var clients: [Int32: Client] = [:]
        var routes: [UInt32: Route] = [:]
        var nextID: UInt32 = 1
        /// The guest's hello, sent to every client that connects after it.
        var hello: Message?
        /// Whether the guest has shown it reads (a hello, or a pong after adoption).
        var guestUp = false
        /// Requests of clients that came before the guest was up.
        var held: [(Int32, Message)] = []
        var upstreamOpen = true
        /// What the guest may still send; `starved`: frames wait in the decoder for more allowance.
        var allowance: GuestAllowance
        var starved = false
        var lastStarvedNote: Duration?

        let console: ConsoleLog

        init(
            upstream: Int32, listener: Int32, adopted: Bool, console: ConsoleLog,
            allowance: GuestAllowance = GuestAllowance()
        ) {
            self.upstream = upstream
            self.listener = listener
            self.console = console
            self.allowance = allowance
            UnixSocket.setNonBlocking(upstream)
            UnixSocket.setNonBlocking(listener)
            if adopted {
                // A guest that is already up does not say hello again: a ping finds out.
                let id = newID()
                routes[id] = Route(client: nil, id: 0, exec: false)
                upstreamOutbox.append(Message.ping(id: id).frame())
            }
        }

        func newID() -> UInt32 {
            repeat { nextID &+= 1 } while nextID == 0 || routes[nextID] != nil
            return nextID
        }

        /// Serves until `ended` reports the machine's process gone; returns how it ended.
        func serve(until ended: () -> (status: Int32?, signal: Int32?)?) -> (status: Int32?, signal: Int32?) {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                if let result = ended() {
                    for fd in Array(clients.keys) { drop(fd, killingCommands: false) }
                    return result
                }
                if starved { drainUpstream() }
                // The guest is read only while it has allowance left (and nothing waits decoded).
                let readUpstream = !starved && allowance.mayRead()
                var descriptors: [pollfd] = []
                var upstreamEvents = readUpstream ? Int16(POLLIN) : 0
                if !upstreamOutbox.isEmpty { upstreamEvents |= Int16(POLLOUT) }
                descriptors.append(pollfd(fd: upstreamOpen ? upstream : -1, events: upstreamEvents, revents: 0))
                descriptors.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
                descriptors.append(pollfd(fd: console.socket, events: Int16(POLLIN), revents: 0))
                // Clients are not read while the guest's side is backed up: the backlog is bounded.
                let readClients = upstreamOutbox.count < MachineSupervisor.upstreamBacklog
                let order = Array(clients.keys)
                for fd in order {
                    var events: Int16 = readClients ? Int16(POLLIN) : 0
                    if !(clients[fd]?.outbox.isEmpty ?? true) { events |= Int16(POLLOUT) }
                    descriptors.append(pollfd(fd: fd, events: events, revents: 0))
                }
                let refill = readUpstream ? 200 : Int(min(200, max(1, allowance.untilRefilled.milliseconds)))
                let ready = poll(&descriptors, nfds_t(descriptors.count), Int32(refill))
                if ready < 0 && errno != EINTR { continue }
                if ready <= 0 { continue }
                if descriptors[0].revents != 0 {
                    serviceUpstream(descriptors[0].revents, reading: readUpstream, &buffer)
                }
                if descriptors[1].revents & Int16(POLLIN) != 0 { accept() }
                if descriptors[2].revents != 0 { console.read(&buffer) }
                for (index, fd) in order.enumerated() {
                    let revents = descriptors[index + 3].revents
                    guard revents != 0, clients[fd] != nil else { continue }
                    if revents & Int16(POLLOUT) != 0 { flush(fd) }
                    if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { receive(fd, &buffer) }
                }
            }
        }

        // MARK: - The guest's side

        func serviceUpstream(_ revents: Int16, reading: Bool, _ buffer: inout [UInt8]) {
            if revents & Int16(POLLOUT) != 0, !upstreamOutbox.isEmpty {
                let written = upstreamOutbox.withUnsafeBytes {
                    send(upstream, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                }
                if written > 0 { upstreamOutbox.consume(written) }
            }
            guard reading, revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 else { return }
            let count = recv(upstream, &buffer, buffer.count, 0)
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) {
                // QEMU closed the socket: it is exiting; `ended` will say so.
                upstreamOpen = false
                return
            }
            guard count > 0 else { return }
            allowance.spend(bytes: count)
            upstreamDecoder.append(buffer[0..<count])
            drainUpstream()
        }

        /// Hands on the guest's complete frames, as many as its allowance covers; the rest wait
        /// (and the guest is not read) until it refills.
        func drainUpstream() {
            do {
                while true {
                    guard allowance.hasFrame() else {
                        if !starved { noteStarved() }
                        starved = true
                        return
                    }
                    guard let message = try upstreamDecoder.next() else { break }
                    allowance.tookFrame()
                    fromGuest(message)
                }
            } catch {
                // A guest that breaks the framing is resynchronised by forgetting what it sent.
                upstreamDecoder = FrameDecoder()
            }
            starved = false
        }

        /// Said in the supervisor's log, at most once a minute.
        func noteStarved() {
            let now = allowance.elapsed()
            if let last = lastStarvedNote, now - last < .seconds(60) { return }
            lastStarvedNote = now
            let line =
                "the guest sent more than \(Int(allowance.framesPerSecond)) frames or \(Int(allowance.bytesPerSecond) >> 20) MiB in a second; it is read no faster than that\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }

        func fromGuest(_ message: Message) {
            if case .hello = message { console.booted() }
            if case .hello = message {
                // A (re)started guest agent: whatever was in flight is gone.
                for (id, route) in routes {
                    if let client = route.client {
                        toClient(client, .failure(id: route.id, message: "the guest agent restarted"))
                    }
                    routes[id] = nil
                }
                hello = message
                becameUp()
                for fd in clients.keys { toClient(fd, message) }
                return
            }
            guard let id = message.id, let route = routes[id] else { return }
            if case .pong = message, route.client == nil { becameUp() }
            switch message {
            case .output: break
            default: routes[id] = nil
            }
            guard let client = route.client else { return }
            toClient(client, message.withID(route.id))
        }

        func becameUp() {
            guard !guestUp else { return }
            guestUp = true
            let waiting = held
            held = []
            for (fd, message) in waiting where clients[fd] != nil { forward(message, from: fd) }
        }

        // MARK: - Clients

        func accept() {
            let fd = Glibc.accept(listener, nil, nil)
            guard fd >= 0 else { return }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            UnixSocket.setNonBlocking(fd)
            clients[fd] = Client()
            if let hello { toClient(fd, hello) }
        }

        func receive(_ fd: Int32, _ buffer: inout [UInt8]) {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) {
                drop(fd, killingCommands: true)
                return
            }
            guard count > 0 else { return }
            clients[fd]?.decoder.append(buffer[0..<count])
            while clients[fd] != nil {
                let message: Message?
                do {
                    message = try clients[fd]?.decoder.next()
                } catch {
                    drop(fd, killingCommands: true)
                    return
                }
                guard let message else { return }
                if guestUp {
                    forward(message, from: fd)
                } else if held.count < MachineSupervisor.heldMessages {
                    held.append((fd, message))
                } else {
                    drop(fd, killingCommands: true)
                }
            }
        }

        /// A client's request to the guest, renumbered.
        func forward(_ message: Message, from fd: Int32) {
            guard let own = message.id else { return }
            let id = newID()
            var outgoing = message.withID(id)
            /// The guest's id of a command this client started (the target is the client's own id).
            func command(_ target: UInt32) -> UInt32? {
                routes.first(where: { $0.value.client == fd && $0.value.exec && $0.value.id == target })?.key
            }
            switch message {
            case .exec, .execTerminal:
                routes[id] = Route(client: fd, id: own, exec: true)
            case .signal(_, let target, let signal):
                guard let guestTarget = command(target) else {
                    toClient(fd, .failure(id: own, message: "no running command \(target)"))
                    return
                }
                outgoing = .signal(id: id, target: guestTarget, signal: signal)
                routes[id] = Route(client: fd, id: own, exec: false)
            case .input(_, let target, let data):
                // No reply: input for a command that has ended is dropped.
                guard let guestTarget = command(target) else { return }
                outgoing = .input(id: id, target: guestTarget, data: data)
            case .resize(_, let target, let rows, let columns):
                guard let guestTarget = command(target) else { return }
                outgoing = .resize(id: id, target: guestTarget, rows: rows, columns: columns)
            case .putFile, .getFile, .ping, .shutdown:
                routes[id] = Route(client: fd, id: own, exec: false)
            default:
                return  // a client has no business sending guest messages
            }
            upstreamOutbox.append(outgoing.frame())
        }

        func toClient(_ fd: Int32, _ message: Message) {
            guard clients[fd] != nil else { return }
            clients[fd]!.outbox.append(message.frame())
            if clients[fd]!.outbox.count > MachineSupervisor.clientBacklog {
                drop(fd, killingCommands: true)
                return
            }
            flush(fd)
        }

        func flush(_ fd: Int32) {
            guard let outbox = clients[fd]?.outbox, !outbox.isEmpty else { return }
            let written = outbox.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written > 0 {
                clients[fd]!.outbox.consume(written)
            } else if written < 0 && errno != EAGAIN && errno != EINTR {
                drop(fd, killingCommands: true)
            }
        }

        /// A client is gone: the commands it started are killed in the guest (a run interrupted,
        /// agentry killed), and replies to it are discarded.
        func drop(_ fd: Int32, killingCommands: Bool) {
            guard clients.removeValue(forKey: fd) != nil else { return }
            close(fd)
            held.removeAll { $0.0 == fd }
            for (id, route) in routes where route.client == fd {
                routes[id]?.client = nil
                if route.exec && killingCommands {
                    let kill = newID()
                    routes[kill] = Route(client: nil, id: 0, exec: false)
                    upstreamOutbox.append(Message.signal(id: kill, target: id, signal: Int(SIGKILL)).frame())
                }
            }
        }
    }
}

extension Message {
    /// The same message under another request id (hello has none and is returned as it is).
    func withID(_ id: UInt32) -> Message {
        switch self {
        case .hello: return self
        case .output(_, let stream, let data): return .output(id: id, stream: stream, data: data)
        case .exited(_, let status, let signal, let timedOut):
            return .exited(id: id, status: status, signal: signal, timedOut: timedOut)
        case .fileData(_, let data): return .fileData(id: id, data: data)
        case .ok: return .ok(id: id)
        case .failure(_, let message): return .failure(id: id, message: message)
        case .pong: return .pong(id: id)
        case .exec(_, let argv, let environment, let directory, let stdin, let timeout):
            return .exec(
                id: id, argv: argv, environment: environment, directory: directory, stdin: stdin, timeoutMillis: timeout
            )
        case .putFile(_, let path, let mode, let data): return .putFile(id: id, path: path, mode: mode, data: data)
        case .getFile(_, let path): return .getFile(id: id, path: path)
        case .signal(_, let target, let signal): return .signal(id: id, target: target, signal: signal)
        case .ping: return .ping(id: id)
        case .shutdown: return .shutdown(id: id)
        case .execTerminal(_, let argv, let environment, let directory, let rows, let columns, let timeout):
            return .execTerminal(
                id: id, argv: argv, environment: environment, directory: directory, rows: rows, columns: columns,
                timeoutMillis: timeout)
        case .input(_, let target, let data): return .input(id: id, target: target, data: data)
        case .resize(_, let target, let rows, let columns):
            return .resize(id: id, target: target, rows: rows, columns: columns)
        }
    }
}

extension MachineSupervisor {
    /// The guest's console, kept in `serial.log` for the boot only: what the kernel and the guest
    /// agent print until the guest reports in (boot failures quote it), at most `limit` bytes.
    /// After that the console is read and dropped: whatever runs in the machine may write to it
    /// (a secret among it), and nothing a run writes should reach the host's disk unredacted.
    final class ConsoleLog {
        static let limit = 1 << 20

        /// -1 when there is no console socket (an older machine, or QEMU closed it): poll ignores it.
        private(set) var socket: Int32
        let file: Int32
        var written = 0
        var kept: Bool

        init(socket: Int32?, file path: String, booted: Bool) {
            self.socket = socket ?? -1
            file = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            kept = !booted
            if self.socket >= 0 { UnixSocket.setNonBlocking(self.socket) }
        }

        deinit {
            if socket >= 0 { close(socket) }
            if file >= 0 { close(file) }
        }

        func read(_ buffer: inout [UInt8]) {
            guard socket >= 0 else { return }
            let count = recv(socket, &buffer, buffer.count, 0)
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) {
                close(socket)
                socket = -1
                return
            }
            guard count > 0, kept, file >= 0 else { return }
            let room = Self.limit - written
            if room <= 0 { return }
            let take = min(count, room)
            _ = buffer.withUnsafeBufferPointer { write(file, $0.baseAddress, take) }
            written += take
            if written >= Self.limit {
                note("[agentry: the console printed more than 1 MiB during boot; the rest is not kept]")
            }
        }

        /// The guest reported in: from here on the console is not kept.
        func booted() {
            guard kept else { return }
            note("[agentry: the guest reported in; its console is not kept from here on]")
            kept = false
        }

        func note(_ line: String) {
            guard file >= 0 else { return }
            let bytes = Array(("\n" + line + "\n").utf8)
            _ = bytes.withUnsafeBufferPointer { write(file, $0.baseAddress, $0.count) }
        }
    }
}
