import AgentryCore
import AgentryGit
import Logging

/// Agent repositories from git (libgit2: object database reads, no checkout) and plain folders.
public struct GitRepositorySource: RepositorySource {
    let logger: Logger
    /// What a fetch offers a remote that asks (never written anywhere).
    let credentials: GitCredentials

    public init(logger: Logger, credentials: GitCredentials = GitCredentials()) {
        self.logger = logger
        self.credentials = credentials
    }

    public func reader(repository: String, path: String, cache: (any ParseCache)?) throws -> any RepositoryReader {
        if GitMirror.isRemote(repository) && !isRepository(repository) {
            throw GitError(
                code: .notFound, operation: "open repository \(repository)",
                message:
                    "\(repository) is a remote repository: only agentry serve follows a URL (through a mirror in its state directory); give this command a clone of it"
            )
        }
        return try CommitReader(repository: repository, path: path, cache: cache, logger: logger)
    }

    public func folder(_ path: String) throws -> LoadedRepository {
        try FolderReader.read(path, logger: logger)
    }

    public func isRepository(_ path: String) -> Bool {
        (try? GitRepository.open(path)) != nil
    }

    public func uncommittedChanges(_ repository: String, path: String) -> [String] {
        (try? GitRepository.open(repository).changedPaths(under: path)) ?? []
    }

    public func scaffold(at path: String, owner: String) throws -> String {
        try Scaffold.create(at: path, owner: owner)
    }

    public func isRemote(_ location: String) -> Bool { GitMirror.isRemote(location) }

    public func problem(following upstream: Upstream) -> String? {
        GitMirror.problem(url: upstream.url, branch: upstream.branch)
    }

    public func fetch(_ upstream: Upstream, into mirror: String) throws -> String {
        "\(try GitMirror.fetch(url: upstream.url, branch: upstream.branch, into: mirror, credentials: credentials))"
    }
}
