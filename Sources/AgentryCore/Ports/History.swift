import AgentryRender
import Foundation

/// The history branch of an agent repository (`agentry/history` by default): run records, apply
/// and event audit records, committed without a work tree and pushed to `origin` when there is one.
/// Written here, never read as desired state. Safe to call from several threads at once.
public protocol HistoryStore: Sendable {
    /// Commits `files` in one commit, then pushes when the repository has an `origin` (a lost race
    /// is replayed). A push that fails leaves the commit local and says so in `pushWarning`.
    func record(_ files: [HistoryFile], message: String, actor: String, at date: Date, in location: HistoryLocation)
        throws
        -> HistoryCommit
    /// The files under `folder` on the branch (paths relative to the branch root); nil when the
    /// folder or the branch does not exist.
    func files(under folder: String, in location: HistoryLocation) throws -> [HistoryFile]?
    /// Only the paths under `folder`, without reading the files.
    func paths(under folder: String, in location: HistoryLocation) throws -> [String]?
    /// One file's bytes; nil when it does not exist.
    func read(_ path: String, in location: HistoryLocation) throws -> [UInt8]?
    /// Makes the repository's packs one when there are too many, as `git gc --auto` would (the
    /// loose objects records leave are packed as they are recorded); slow on a large repository,
    /// so the service does it in the background. Whether anything was done.
    func compact(in location: HistoryLocation) throws -> Bool
}

/// Which repository and branch.
public struct HistoryLocation: Sendable, Equatable {
    public var repository: String
    public var branch: String

    public init(repository: String, branch: String) {
        self.repository = repository
        self.branch = branch
    }
}

public struct HistoryFile: Sendable, Equatable {
    public var path: String
    public var bytes: [UInt8]

    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
    }
}

public struct HistoryCommit: Sendable, Equatable {
    public var commit: String
    public var pushWarning: String?

    public init(commit: String, pushWarning: String?) {
        self.commit = commit
        self.pushWarning = pushWarning
    }
}
