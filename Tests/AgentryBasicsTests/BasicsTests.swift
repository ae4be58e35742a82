import AgentryBasics
import Foundation
import Synchronization
import Testing

@Suite struct TimestampTests {
    @Test func writesRFC3339InUTCAndReadsItBack() {
        let seconds = 1_800_000_000.25
        #expect(Timestamp.rfc3339(seconds) == "2027-01-15T08:00:00Z")
        #expect(Timestamp.rfc3339(seconds, fractional: true) == "2027-01-15T08:00:00.250Z")
        #expect(Timestamp.compact(seconds) == "20270115-080000")
        #expect(Timestamp.parse("2027-01-15T08:00:00.250Z") == seconds)
        #expect(Timestamp.parse("2027-01-15T09:30:00+01:30") == 1_800_000_000)
        #expect(Timestamp.parse("1970-01-01T00:00:00Z") == 0)
        #expect(Timestamp.parse("2024-02-29T12:00:00Z").map { Timestamp.rfc3339($0) } == "2024-02-29T12:00:00Z")
        for bad in ["", "2027-01-15", "2027-13-01T00:00:00Z", "2027-01-15T08:00:00", "2027-01-15T08:00:00Zjunk"] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
        // The same as Foundation's, over a range of instants.
        let formatter = ISO8601DateFormatter()
        for step in stride(from: -86_400.0 * 400, to: 86_400.0 * 40_000, by: 86_400.0 * 97 + 3_727) {
            #expect(Timestamp.rfc3339(step) == formatter.string(from: Date(timeIntervalSince1970: step)))
        }
    }
}

/// Output is cut into events of whole characters: a character cut short at the end waits.
@Suite struct UTF8TextTests {
    @Test func aCharacterCutShortAtTheEndIsHeldBack() {
        func whole(_ bytes: [UInt8]) -> Int { UTF8Text.wholeCharacters(bytes[...]) }
        let text = Array("a é € 𝄞".utf8)  // 1, 2, 3 and 4 bytes
        #expect(whole(text) == text.count)
        #expect(whole(Array(text.dropLast(1))) == text.count - 4, "𝄞 cut after 3 of its 4 bytes")
        #expect(whole(Array(text.dropLast(3))) == text.count - 4, "𝄞 cut after its first byte")
        #expect(whole(Array("€".utf8).dropLast(1)) == 0)
        #expect(whole(Array("é".utf8)) == 2)
        #expect(whole([]) == 0)
        // Not UTF-8 at all: nothing held back (it is sent as U+FFFD either way).
        #expect(whole([0x80, 0x80, 0x80, 0x80, 0x80]) == 5)
        #expect(whole([0x41, 0xFF]) == 1, "a lone 0xFF may be the start of nothing: held back only up to 3 bytes")
        let slice = Array("xx€".utf8)[2...]
        #expect(UTF8Text.wholeCharacters(slice.dropLast(1)) == 0, "a slice's own indices")
    }
}

@Suite struct DurationTests {
    @Test func parsesAndFormatsGoStyleDurations() {
        #expect(DurationText.parse("1h30m") == 5_400_000)
        #expect(DurationText.parse("500ms") == 500)
        #expect(DurationText.parse("0s") == nil && DurationText.parse("15") == nil && DurationText.parse("") == nil)
        #expect(DurationText.format(milliseconds: 900_000) == "15m")
        #expect(DurationText.format(milliseconds: 1_500) == "1s500ms")
        #expect(
            DurationText.seconds(milliseconds: 1_549) == "1.5s" && DurationText.seconds(milliseconds: 1_550) == "1.6s")
        #expect(Duration.milliseconds(1500).milliseconds == 1500)
        #expect(Duration.nanoseconds(1).millisecondsRoundedUp == 1 && Duration.nanoseconds(1).milliseconds == 0)
        #expect(Duration.milliseconds(saturating: .max) > .seconds(86_400 * 365 * 1000))
    }

    @Test func tablesAlignColumnsWithoutTrailingSpaces() {
        var table = TextTable(["A", "LONGER", "Z"])
        table.append(["value", "x", "last"])
        #expect(table.rendered == "A      LONGER  Z\nvalue  x       last\n")
        #expect(Hex.string([0, 15, 255]) == "000fff" && Hex.random(bytes: 4).count == 8)
    }
}

@Suite struct HostProcessTests {
    let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }

    @Test func collectsBothStreamsFeedsInputAndPassesTheStatus() throws {
        let shell = try #require(HostProcess.locate("sh", path: ProcessInfo.processInfo.environment["PATH"]))
        let result = try HostProcess.run(
            shell, ["-c", "cat; echo err >&2; exit 3"], environment: environment, input: Array("in\n".utf8),
            timeout: .seconds(10))
        #expect(result.status == 3)
        #expect(String(decoding: result.stdout, as: UTF8.self) == "in\n")
        #expect(String(decoding: result.stderr, as: UTF8.self) == "err\n")
        var lines: [String] = []
        let merged = try HostProcess.run(
            shell, ["-c", "echo one; echo two >&2; printf three"], environment: environment, timeout: .seconds(10),
            merge: true, lines: { lines.append($0) })
        #expect(merged.output == "one\ntwo\nthree" && lines == ["one", "two", "three"])
        #expect(
            try HostProcess.run(shell, ["-c", "kill -9 $$"], environment: environment, timeout: .seconds(10)).status
                == 137)
    }

    @Test func aHangingProgramIsKilledAtItsDeadline() throws {
        let shell = try #require(HostProcess.locate("sh", path: ProcessInfo.processInfo.environment["PATH"]))
        #expect {
            try HostProcess.run(shell, ["-c", "sleep 30"], environment: environment, timeout: .milliseconds(300))
        } throws: {
            ($0 as? HostProcess.Failure)?.code == .timedOut
        }
    }

    /// A child that leaves a grandchild holding its output (as QEMU's -daemonize does) does not
    /// keep the caller waiting.
    @Test func aDaemonizingChildDoesNotHoldTheCaller() throws {
        let shell = try #require(HostProcess.locate("sh", path: ProcessInfo.processInfo.environment["PATH"]))
        let started = ContinuousClock.now
        let result = try HostProcess.run(
            shell, ["-c", "echo started; (sleep 20 &) ; exit 0"], environment: environment, timeout: .seconds(15))
        #expect(result.status == 0 && String(decoding: result.stdout, as: UTF8.self) == "started\n")
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(HostProcess.locate("no-such-program-here", path: "/usr/bin") == nil)
    }
}

@Suite struct BlockingWorkTests {
    /// Forty pieces of work that each block until all forty have started: they all run at once (a
    /// pool that ran only some would never let any finish, and the wait would give up).
    @Test func blockedWorkNeverStarvesOtherWork() async throws {
        final class Started: Sendable { let count = Atomic(0) }
        let count = 40
        let started = Started()
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<count {
                group.addTask {
                    await BlockingWork.run {
                        started.count.add(1, ordering: .relaxed)
                        let deadline = ContinuousClock.now + .seconds(60)
                        while started.count.load(ordering: .relaxed) < count {
                            guard ContinuousClock.now < deadline else { return false }
                            usleep(1000)
                        }
                        return true
                    }
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == count && results.allSatisfy { $0 }, "every piece of work ran beside the others")
        #expect(BlockingWork.threadCount >= count)
        // Errors come back to the caller.
        struct Refused: Error {}
        await #expect(throws: Refused.self) { try await BlockingWork.run { () throws -> Int in throw Refused() } }
    }

    /// A task marked background has its blocking work run on threads that give way to the others:
    /// named apart, at a nice 5 more than the ordinary ones'.
    @Test func backgroundWorkGivesWayToTheRest() async throws {
        @Sendable func thread() -> (name: String, nice: Int) {
            let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
            let stat = (try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8)) ?? ""
            // Fields after the command's closing parenthesis: state is the first, nice the 17th.
            let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
            return (
                name.trimmingCharacters(in: .whitespacesAndNewlines), fields.count > 16 ? Int(fields[16]) ?? -99 : -99
            )
        }
        let ordinary = await BlockingWork.run { thread() }
        let background = await BlockingWork.$inBackground.withValue(true) { await BlockingWork.run { thread() } }
        #expect(ordinary.name == "blocking-work")
        #expect(background.name == "background-work")
        #expect(ordinary.nice != -99)
        #expect(background.nice == min(19, ordinary.nice + 5))
        // Work that the background work starts from its thread is ordinary again; a thread it had
        // to start for that (with its own nice, which only privileges can lower) serves no more.
        let started = await BlockingWork.$inBackground.withValue(true) {
            await BlockingWork.run { (0..<3).map { _ in BlockingWork.start { thread() } }.map { $0.wait() } }
        }
        #expect(started.allSatisfy { $0.name == "blocking-work" })
        let after = await withTaskGroup(of: (name: String, nice: Int).self) { group in
            for _ in 0..<8 { group.addTask { await BlockingWork.run { thread() } } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(after.allSatisfy { $0.name == "blocking-work" && $0.nice == ordinary.nice })
    }

    /// Work started from blocking work runs beside it: each side waits for the other to begin, which
    /// only finishes if both run at once; the result is handed back, to any number of waits.
    @Test func startedWorkRunsBesideItsCaller() async {
        final class Flags: Sendable {
            let caller = Atomic(false)
            let started = Atomic(false)
        }
        let flags = Flags()
        @Sendable func waitFor(_ flag: borrowing Atomic<Bool>) -> Bool {
            let deadline = ContinuousClock.now + .seconds(60)
            while !flag.load(ordering: .acquiring) {
                guard ContinuousClock.now < deadline else { return false }
                usleep(1000)
            }
            return true
        }
        let (mine, theirs, again) = await BlockingWork.run {
            let pending = BlockingWork.start { () -> Bool in
                flags.started.store(true, ordering: .releasing)
                return waitFor(flags.caller)
            }
            flags.caller.store(true, ordering: .releasing)
            let mine = waitFor(flags.started)
            return (mine, pending.wait(), pending.wait())
        }
        #expect(mine && theirs && again)
    }

    /// A discarded value is freed on another thread, without the caller waiting for it.
    @Test func discardedValuesAreFreedElsewhere() async {
        final class Witness: Sendable {
            let freedOn = Mutex<pthread_t?>(nil)
        }
        final class Tracked: Sendable {
            let witness: Witness
            init(_ witness: Witness) { self.witness = witness }
            deinit { witness.freedOn.withLock { $0 = pthread_self() } }
        }
        let witness = Witness()
        let caller = await BlockingWork.run { () -> pthread_t in
            BlockingWork.discard([Tracked(witness)])
            return pthread_self()
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while witness.freedOn.withLock({ $0 }) == nil && ContinuousClock.now < deadline { usleep(1000) }
        let freedOn = witness.freedOn.withLock { $0 }
        #expect(freedOn != nil, "the value was freed")
        #expect(freedOn.map { pthread_equal($0, caller) == 0 } == true, "on another thread than the caller's")
    }
}
