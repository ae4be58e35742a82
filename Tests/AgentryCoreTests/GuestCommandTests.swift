import AgentryCore
import AgentryTesting
import AgentryWire
import Foundation
import Testing

@testable import AgentryCore

/// agentry's own commands in a guest, against a guest that answers with a flood.
@Suite struct GuestCommandTests {
    /// A channel whose every command prints without end (a binary planted on the PATH, or a
    /// compromised guest agent), in 64 KiB pieces, until it is told to stop.
    final class FloodingGuest: GuestChannel {
        var sent = 0

        func waitUntilReady(timeout: Duration, booting: Bool) throws -> GuestHello? { nil }
        func putFile(_ path: String, _ data: [UInt8], mode: Int) throws {}
        func getFile(_ path: String) throws -> [UInt8] { [] }
        func shutdown() throws {}

        func exec(
            _ argv: [String], environment: [String], directory: String, stdin: [UInt8], timeout: Duration?,
            interruption: Interruption?, output: (ProcessStream, [UInt8]) -> Void
        ) throws -> GuestExit {
            let piece = [UInt8](repeating: UInt8(ascii: "f"), count: 65536)
            while sent < 1 << 30 {
                if interruption?.isInterrupted == true {
                    return GuestExit(status: 137, timedOut: false, interrupted: true)
                }
                output(sent % 2 == 0 ? .stdout : .stderr, piece)
                sent += piece.count
            }
            return GuestExit(status: 0, timedOut: false)
        }
    }

    @Test func aFloodIsCutShortAndSaidToBeOne() throws {
        let guest = FloodingGuest()
        #expect {
            try GuestCommand.shell("mkdir -p /agent/out", over: guest, what: "preparing the run")
        } throws: { error in
            "\(error)".contains("preparing the run") && "\(error)".contains("more than 64 KiB")
        }
        #expect(guest.sent < 1 << 20, "the command was stopped after \(guest.sent) bytes")
    }
}
