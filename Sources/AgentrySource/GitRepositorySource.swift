import AgentryCore
import AgentryGit
import Logging

/// Agent repositories from git (libgit2: object database reads, no checkout) and plain folders.
public struct GitRepositorySource: RepositorySource {
    let logger: Logger
    /// What a fetch offers a remote that asks (never written anywhere).
    let credentials: GitCredentials
    /// Fetches into a mirror run as `executable mirror-fetch ...` with `environment`, killed after
    /// `limit` (libgit2 1.5 has no network timeout: a remote that stops answering would hold an
    /// in-process fetch for ever). Nil: in this process.
    let fetcher: Fetcher?

    public struct Fetcher: Sendable {
        public var executable: String
        public var environment: [String]
        public var limit: Duration

        public init(executable: String, environment: [String], limit: Duration = .seconds(600)) {
            self.executable = executable
            self.environment = environment
            self.limit = limit
        }
    }

    public init(logger: Logger, credentials: GitCredentials = GitCredentials(), fetcher: Fetcher? = nil) {
        self.logger = logger
        self.credentials = credentials
        self.fetcher = fetcher
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

    public func problem(following upstream: Upstream, historyBranch: String) -> String? {
        GitMirror.problem(url: upstream.url, branch: upstream.branch, historyBranch: historyBranch)
    }

    public func fetch(_ upstream: Upstream, into mirror: String) throws -> String {
        guard let fetcher else {
            return
                "\(try GitMirror.fetch(url: upstream.url, branch: upstream.branch, into: mirror, credentials: credentials))"
        }
        let done: HostProcess.Result
        do {
            done = try HostProcess.run(
                fetcher.executable,
                ["mirror-fetch", "--url", upstream.url, "--branch", upstream.branch, "--into", mirror],
                environment: fetcher.environment, timeout: fetcher.limit)
        } catch let failure as HostProcess.Failure where failure.code == .timedOut {
            throw GitError(
                code: .other(-1), operation: "fetch \(upstream.branch)",
                message:
                    "the fetch took longer than \(DurationText.format(milliseconds: UInt64(fetcher.limit / .milliseconds(1)))) and was stopped"
            )
        }
        let said = { (bytes: [UInt8]) in
            String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let commit = said(done.stdout)
        guard done.status == 0, commit.utf8.count == 40 else {
            let message = said(done.stderr)
            throw GitError(
                code: .other(-1), operation: "fetch \(upstream.branch)",
                message: message.isEmpty ? "the fetch ended with status \(done.status)" : String(message.prefix(2000)))
        }
        return commit
    }
}
