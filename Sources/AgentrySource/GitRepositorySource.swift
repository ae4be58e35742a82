import AgentryCore
import AgentryGit
import Logging

/// Agent repositories from git (libgit2: object database reads, no checkout) and plain folders.
public struct GitRepositorySource: RepositorySource {
    let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public func reader(repository: String, path: String, cache: (any ParseCache)?) throws -> any RepositoryReader {
        try CommitReader(repository: repository, path: path, cache: cache, logger: logger)
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
}
