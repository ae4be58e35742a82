import AgentryWire
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import AgentryMachine

/// The supervisor's hub against a guest played by the test over a socket pair, with the hub's clock
/// in the test's hands.
@Suite struct SupervisorHubTests {
    final class Shared: Sendable {
        let now = Mutex(Duration.zero)
        let stop = Atomic(false)
    }

    /// One end of a stream of frames, read with a deadline.
    struct Peer {
        let descriptor: Int32
        var decoder = FrameDecoder()

        init(_ descriptor: Int32) { self.descriptor = descriptor }

        func send(_ message: Message) {
            let bytes = message.frame()
            #expect(bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) } == bytes.count)
        }

        /// Every message that arrives within `wait`, or until `enough` says stop.
        mutating func receive(within wait: Duration, until enough: ([Message]) -> Bool = { _ in false }) -> [Message] {
            var messages: [Message] = []
            let deadline = ContinuousClock.now + wait
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while !enough(messages) {
                while let message = try? decoder.next() { messages.append(message) }
                if enough(messages) { break }
                let left = deadline - ContinuousClock.now
                guard left > .zero else { break }
                var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
                guard poll(&descriptors, 1, Int32(max(1, left.milliseconds))) > 0 else { continue }
                let count = recv(descriptor, &buffer, buffer.count, 0)
                guard count > 0 else { break }
                decoder.append(buffer[0..<count])
            }
            return messages
        }
    }

    /// A guest that floods its control channel with tiny frames is read no faster than its
    /// allowance: while the clock stands still exactly a second's worth reaches the client, and the
    /// rest waits (nothing is dropped) until time moves on. Meanwhile the client is still served.
    @Test func aFloodingGuestIsReadNoFasterThanItsAllowance() throws {
        let folder = try TemporaryDirectory("agentry-hub")
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        var guest = Peer(pair[0])
        let upstream = pair[1]
        let socketPath = folder.path + "/guest.sock"
        let listener = try #require(UnixSocket.listen(socketPath))
        let shared = Shared()
        let serving = Thread {
            let hub = MachineSupervisor.Hub(
                upstream: upstream, listener: listener, adopted: false,
                console: MachineSupervisor.ConsoleLog(socket: nil, file: folder.path + "/serial.log", booted: true),
                allowance: GuestAllowance(
                    framesPerSecond: 100, bytesPerSecond: 1 << 20, elapsed: { shared.now.withLock { $0 } }))
            _ = hub.serve(until: { shared.stop.load(ordering: .relaxed) ? (0, nil) : nil })
        }
        serving.start()
        defer {
            shared.stop.store(true, ordering: .relaxed)
            close(pair[0])
        }

        guest.send(.hello(protocolVersion: 1, agentVersion: "test", kernel: "test", uptimeMillis: 1, disk: "mounted"))
        var client = Peer(try #require(UnixSocket.connect(socketPath)))
        defer { close(client.descriptor) }
        let hello = client.receive(within: .seconds(20)) { !$0.isEmpty }
        guard case .hello = try #require(hello.first) else { Issue.record("no hello: \(hello)"); return }

        client.send(.exec(id: 7, argv: ["flood"], environment: [], directory: "/", stdin: [], timeoutMillis: 0))
        let forwarded = guest.receive(within: .seconds(20)) { !$0.isEmpty }
        guard case .exec(let id, _, _, _, _, _) = try #require(forwarded.first) else {
            Issue.record("the exec was not forwarded: \(forwarded)")
            return
        }
        // 250 one-byte frames in one write, then the end of the command.
        var flood: [UInt8] = []
        for _ in 0..<250 { flood += Message.output(id: id, stream: .stdout, data: [0x78]).frame() }
        flood += Message.exited(id: id, status: 0, signal: 0, timedOut: false).frame()
        #expect(flood.withUnsafeBytes { send(pair[0], $0.baseAddress, $0.count, 0) } == flood.count)

        // The hello took one frame of the second's hundred: 99 outputs, and no more while the clock
        // stands still.
        var received = client.receive(within: .seconds(20)) { $0.count >= 99 }
        received += client.receive(within: .milliseconds(300))
        #expect(received.count == 99, "a second's worth of frames, not \(received.count)")
        #expect(received.allSatisfy { if case .output(7, .stdout, [0x78]) = $0 { true } else { false } })

        // The client is still served while the guest waits: a ping reaches the guest.
        client.send(.ping(id: 8))
        let ping = guest.receive(within: .seconds(20)) { !$0.isEmpty }
        guard case .ping = try #require(ping.first) else { Issue.record("no ping: \(ping)"); return }

        // A second later: the next hundred; half a second more: the rest and the end.
        shared.now.withLock { $0 += .seconds(1) }
        received = client.receive(within: .seconds(20)) { $0.count >= 100 }
        received += client.receive(within: .milliseconds(300))
        #expect(received.count == 100, "\(received.count)")
        shared.now.withLock { $0 += .seconds(1) }
        received = client.receive(within: .seconds(20)) { $0.contains { if case .exited = $0 { true } else { false } } }
        #expect(received.count == 52, "the last 51 outputs and the exit: \(received.count)")
        guard case .exited(7, 0, 0, false) = try #require(received.last) else {
            Issue.record("the command's end did not come last: \(String(describing: received.last))")
            return
        }
    }

    /// The allowance refills with time, up to a second's worth, and says how long until it has one
    /// frame again.
    @Test func theAllowanceRefillsWithTime() {
        let now = Mutex(Duration.zero)
        var allowance = GuestAllowance(framesPerSecond: 10, bytesPerSecond: 1000, elapsed: { now.withLock { $0 } })
        var taken = 0
        while allowance.hasFrame() && taken < 100 {
            allowance.tookFrame()
            taken += 1
        }
        #expect(taken == 10)
        #expect(allowance.untilRefilled == .milliseconds(100))
        now.withLock { $0 = .milliseconds(250) }
        allowance.refill()
        #expect(allowance.frames == 2.5)
        now.withLock { $0 = .seconds(60) }
        allowance.refill()
        #expect(allowance.frames == 10, "never more than a second's worth")
        allowance.spend(bytes: 1500)
        let mayRead = allowance.mayRead()
        #expect(!mayRead)
        #expect(allowance.untilRefilled == .microseconds(501_000))
        now.withLock { $0 += .seconds(1) }
        let mayReadLater = allowance.mayRead()
        #expect(mayReadLater)
    }
}
