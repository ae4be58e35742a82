import AgentryModel
import AgentryPlan
import AgentryRender

/// Where agent repositories are read from: git commits (through a reader per repository) and
/// plain folders; and where new ones are made.
public protocol RepositorySource: Sendable {
    /// A reader of the agent repository at `path` inside the git repository `repository`,
    /// remembering what it parsed in `cache` when one is given.
    func reader(repository: String, path: String, cache: (any ParseCache)?) throws -> any RepositoryReader
    /// The plain folder at `path`, read as a commit of it would be.
    func folder(_ path: String) throws -> LoadedRepository
    /// Whether `path` is (inside) a git repository.
    func isRepository(_ path: String) -> Bool
    /// Files of the agent repository (`path` inside the git repository at `repository`) that
    /// differ from HEAD in its work tree or index, untracked ones included; empty when there is no
    /// work tree or it cannot be read.
    func uncommittedChanges(_ repository: String, path: String) -> [String]
    /// Creates a git repository at `path` with the starter layout and commits it; returns the commit.
    func scaffold(at path: String, owner: String) throws -> String
    /// Whether `location` names a remote repository (a URL, or `user@host:path`), not a folder.
    func isRemote(_ location: String) -> Bool
    /// Why `upstream` cannot be followed (a user or password in an HTTP URL, a bad branch name, a
    /// branch that clashes with `historyBranch`), or nil.
    func problem(following upstream: Upstream, historyBranch: String) -> String?
    /// Fetches `upstream`'s branch into the bare mirror at `mirror` (made on first use, its HEAD
    /// the branch); returns the branch's commit.
    func fetch(_ upstream: Upstream, into mirror: String) throws -> String
}

/// A remote agent repository the service follows: one branch of it, fetched into a mirror.
public struct Upstream: Sendable, Equatable {
    public var url: String
    public var branch: String

    public init(url: String, branch: String) {
        self.url = url
        self.branch = branch
    }
}

/// Reads one agent repository at its commits. Not thread-safe: one reader per operation.
public protocol RepositoryReader: AnyObject {
    /// Which agent repository this is, wherever it is checked out: its `origin` (else its git
    /// folder) and the folder inside it. A state directory belongs to one.
    var identity: RepositoryIdentity { get }
    /// Resolves a ref to a commit id.
    func commit(for ref: String) throws -> String
    /// Reads, validates and compiles the agent repository at `ref`; with `remember`, the result
    /// becomes what the next load starts from.
    func load(_ ref: String, remember: Bool) throws -> LoadedCommit
    /// The whole tree at `ref`, for validation from scratch.
    func tree(_ ref: String) throws -> LoadedRepository
    /// The resolved fields (for plan reasons) of the named agents.
    func resolvedFields(of names: Set<String>, in loaded: LoadedCommit) throws -> [String: Fields]
    /// The named agent at the loaded commit, read for its machine. The commit must be valid.
    func bundle(_ name: String, in loaded: LoadedCommit) throws -> AgentBundle
}

extension RepositoryReader {
    public func load(_ ref: String) throws -> LoadedCommit { try load(ref, remember: true) }
}

/// Where to read an agent repository from: a git commit or a plain folder.
public enum RepositoryLocation: Sendable {
    case git(repository: String, ref: String, path: String)
    case directory(String)
}

/// An agent repository read into memory, ready to validate.
public struct LoadedRepository: Sendable {
    public var tree: SourceTree
    public var source: SourceDescription
    /// Prefix that makes tree paths relative to the git repository root (`agents/` for `--path agents`).
    public var displayPrefix: String

    public init(tree: SourceTree, source: SourceDescription, displayPrefix: String) {
        self.tree = tree
        self.source = source
        self.displayPrefix = displayPrefix
    }
}

/// An agent repository read, validated and compiled at one commit.
public struct LoadedCommit: Sendable {
    public enum Mode: String, Sendable {
        /// Every file listed and validated (parse results reused by blob id where cached).
        case full
        /// Only what git's tree diff from the remembered commit touched was read and re-checked.
        case incremental
        /// The remembered commit itself.
        case snapshot
    }

    public var commit: String
    public var report: ValidationReport
    /// Revisions; meaningful when `report.isValid`.
    public var desired: DesiredState
    /// The agent repository's folder inside the git repository, with a trailing `/` (or empty).
    public var displayPrefix: String
    /// Files parsed afresh in this load.
    public var parsedFiles: Int
    public var mode: Mode

    public init(
        commit: String, report: ValidationReport, desired: DesiredState, displayPrefix: String, parsedFiles: Int,
        mode: Mode
    ) {
        self.commit = commit
        self.report = report
        self.desired = desired
        self.displayPrefix = displayPrefix
        self.parsedFiles = parsedFiles
        self.mode = mode
    }
}

/// Which agent repository a state directory applied.
public struct RepositoryIdentity: Sendable, Equatable, Codable {
    /// The `origin` remote's URL, else the git folder's absolute path.
    public var location: String
    /// The agent repository's folder inside it (`--path`), empty for the root.
    public var path: String

    public init(location: String, path: String) {
        self.location = location
        self.path = path
    }

    public var description: String { path.isEmpty ? location : "\(location) (--path \(path))" }
}
