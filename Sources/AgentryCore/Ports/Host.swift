import Foundation
import Synchronization

/// The time, handed in so that tests can set it.
public protocol WallClock: Sendable {
    func now() -> Date
    /// Waits (a fake clock just moves on).
    func sleep(for duration: Duration) async
    /// Waits on the calling thread (blocking work; a fake clock just moves on).
    func pause(for duration: Duration)
}

/// The host agentry runs on, as the core sees it: its environment variables, its name, the folder
/// agentry was started in. Handed in, never read from the process by the core.
public struct HostEnvironment: Sendable {
    public var variables: [String: String]
    public var hostName: String
    public var currentDirectory: String
    /// The login name, for "who" when nobody says.
    public var userName: String
    /// This process, for journals that name who wrote them.
    public var processID: Int32 = getpid()

    public init(variables: [String: String], hostName: String, currentDirectory: String, userName: String) {
        self.variables = variables
        self.hostName = hostName
        self.currentDirectory = currentDirectory
        self.userName = userName
    }

    public subscript(_ name: String) -> String? {
        variables[name].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Who is acting, for records: the given name, else `$AGENTRY_ACTOR`, else the login name.
    public func actor(_ explicit: String?) -> String {
        explicit ?? self["AGENTRY_ACTOR"] ?? userName
    }

    /// The history branch: `$AGENTRY_HISTORY_BRANCH`, else `agentry/history`.
    public var historyBranch: String { self["AGENTRY_HISTORY_BRANCH"] ?? "agentry/history" }

    /// `path` made absolute against the current folder, with `.` and `..` resolved.
    public func absolute(_ path: String) -> String {
        let full = path.hasPrefix("/") ? path : currentDirectory + "/" + path
        var parts: [Substring] = []
        for part in full.split(separator: "/") {
            if part == "." || part.isEmpty { continue }
            if part == ".." {
                _ = parts.popLast()
            } else {
                parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}

/// A request to stop what is running (Ctrl-C, SIGTERM), shared between whoever receives it and the
/// operation that must notice: checked between steps and while waiting on a guest.
public final class Interruption: Sendable {
    private let received = Mutex<Int32?>(nil)

    public init() {}

    /// Asks for the stop; `signal` is what asked (SIGINT, SIGTERM).
    public func interrupt(_ signal: Int32) {
        received.withLock { if $0 == nil { $0 = signal } }
    }

    /// The signal that asked, once one did.
    public var signal: Int32? { received.withLock { $0 } }
    public var isInterrupted: Bool { signal != nil }
}
