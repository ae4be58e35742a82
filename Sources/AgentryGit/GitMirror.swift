import CGit2
import Foundation

/// A bare copy of one branch of a remote agent repository, kept in the service's state directory:
/// `agentry serve --repo URL` reads its agents from here and records its history here (pushed back
/// to the remote, its `origin`). Made by the first fetch that works; each fetch follows the
/// branch, force-pushes included, as Flux's source controller does, and one that fails leaves the
/// mirror as it was.
public enum GitMirror {
    /// Whether `location` names a remote repository rather than a folder on this machine, by git's
    /// own rules: an existing folder is a folder; `scheme://...` (a scheme of letters, digits, `+`,
    /// `-` and `.`, starting with a letter) is a URL; a colon before the first slash makes it
    /// scp-like `host:path`.
    public static func isRemote(_ location: String) -> Bool {
        if FileManager.default.fileExists(atPath: location) { return false }
        if let scheme = location.range(of: "://") {
            let name = location[..<scheme.lowerBound].utf8
            if name.first.map(isASCIILetter) == true
                && name.allSatisfy({ isASCIILetter($0) || (0x30...0x39).contains($0) || "+-.".utf8.contains($0) })
            {
                return true
            }
        }
        guard let colon = location.firstIndex(of: ":"), colon != location.startIndex else { return false }
        return !location[..<colon].contains("/")
    }

    static func isASCIILetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }

    /// Why `url` and `branch` cannot be followed, or nil. An HTTP(S) URL carries no user or
    /// password (`https://TOKEN@host` works on some hosts): the mirror's configuration, the logs and
    /// the API would show it; tokens go in `$AGENTRY_GIT_TOKEN`. The branch must be a valid branch
    /// name that does not clash with `historyBranch` in git's ref folders.
    public static func problem(url: String, branch: String, historyBranch: String) -> String? {
        _ = Library.initialised
        if let scheme = url.range(of: "://"), ["http", "https"].contains(url[..<scheme.lowerBound].lowercased()) {
            let authority = url[scheme.upperBound...].prefix { $0 != "/" }
            if authority.contains("@") {
                return
                    "\(url[..<scheme.upperBound])…: the URL holds a user or a password, which would be written to disk and shown; give the URL without it and the token in $AGENTRY_GIT_TOKEN ($AGENTRY_GIT_USERNAME for the user), or through git's credential helper"
            }
        }
        var valid: Int32 = 0
        guard git_reference_name_is_valid(&valid, "refs/heads/" + branch) == 0, valid == 1 else {
            return "--branch \(branch): not a valid branch name"
        }
        if branch == historyBranch || branch.hasPrefix(historyBranch + "/") || historyBranch.hasPrefix(branch + "/") {
            return
                "--branch \(branch) cannot be beside the history branch \(historyBranch) (git keeps branches as folders); give the branch the agents are on"
        }
        return nil
    }

    /// Where a fetch lands before it is checked: the branch moves only to a commit.
    static let staging = "refs/agentry/fetched"

    /// Fetches `branch` of `url` into the bare repository at `path` and returns the branch's
    /// commit. The first fetch makes the mirror beside `path` and moves it into place once it
    /// worked, so a mistyped URL leaves nothing behind. A mirror of another URL is refused, not
    /// repointed: a state directory belongs to one agent repository. Not for two fetchers at once
    /// (the service fetches one at a time).
    public static func fetch(url: String, branch: String, into path: String, credentials: GitCredentials) throws
        -> ObjectID
    {
        _ = Library.initialised
        let shown = HistoryBranch.withoutPassword(url)
        if let problem = problem(url: url, branch: branch, historyBranch: "") {
            throw GitError(code: .other(-1), operation: "follow \(shown)", message: problem)
        }
        if FileManager.default.fileExists(atPath: path) {
            return try fetch(url: url, branch: branch, into: try open(path), at: path, credentials: credentials)
        }
        let temporary = path + ".new-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        let commit: ObjectID
        do {
            let made = try GitRepository.create(at: temporary, initialBranch: branch, bare: true)
            var remote: OpaquePointer?
            // Fetched into the staging ref, as the fetch itself does (libgit2 also updates a
            // configured refspec's ref on every fetch: it must not be the branch).
            let result = git_remote_create_with_fetchspec(
                &remote, made.handle, "origin", url, "+refs/heads/\(branch):\(staging)")
            guard result == 0 else { throw GitError.last(result, "make the mirror's origin \(shown)") }
            git_remote_free(remote)
            commit = try fetch(url: url, branch: branch, into: made, at: temporary, credentials: credentials)
        }
        guard rename(temporary, path) == 0 else {
            throw GitError(
                code: .other(-1), operation: "make the mirror \(path)", message: String(cString: strerror(errno)))
        }
        return commit
    }

    static func fetch(
        url: String, branch: String, into repository: GitRepository, at path: String, credentials: GitCredentials
    ) throws -> ObjectID {
        let shown = HistoryBranch.withoutPassword(url)
        var remote: OpaquePointer?
        var result = git_remote_lookup(&remote, repository.handle, "origin")
        guard result == 0, let remote else { throw GitError.last(result, "find the mirror's origin in \(path)") }
        defer { git_remote_free(remote) }
        let following = git_remote_url(remote).map { String(cString: $0) } ?? ""
        guard following == url else {
            throw GitError(
                code: .conflict, operation: "fetch \(branch)",
                message:
                    "the mirror \(path) follows \(HistoryBranch.withoutPassword(following)), not \(shown); a state directory belongs to one repository. If the repository moved, point the mirror at it: git --git-dir \(path) remote set-url origin NEW-URL"
            )
        }
        // A fetch killed at its deadline may leave its locks: with one fetcher, any left are stale.
        let reference = "refs/heads/" + branch
        for stale in [staging, reference] { unlink(path + "/" + stale + ".lock") }
        _ = git_reference_remove(repository.handle, staging)
        let offer = GitCredentials.Offer(credentials.withHelper(url: url, directory: path))
        defer { withExtendedLifetime(offer) {} }
        var status = offer.status()
        result = agentry_git_fetch(remote, "+\(reference):\(staging)", &status)
        guard result == 0 else {
            var error = GitCredentials.refusal(result, status, url: shown, doing: "fetch \(branch)", needs: "read")
            if !(result == GIT_EAUTH.rawValue || status.attempts > 1) {
                error.operation = "fetch \(branch) from \(shown)"
            }
            throw error
        }
        // Only a commit moves the branch: a branch deleted upstream or pointing at a tree or a tag
        // leaves the mirror as it was.
        var fetched: OpaquePointer?
        result = git_reference_lookup(&fetched, repository.handle, staging)
        guard result == 0, let fetched else {
            throw GitError(
                code: .notFound, operation: "fetch \(branch)",
                message: "\(shown) has no branch \(branch)")
        }
        defer { git_reference_free(fetched) }
        var object: OpaquePointer?
        result = git_reference_peel(&object, fetched, GIT_OBJECT_COMMIT)
        guard result == 0, let object else {
            throw GitError(
                code: .other(-1), operation: "fetch \(branch)",
                message: "\(branch) of \(shown) does not point at a commit")
        }
        defer { git_object_free(object) }
        let commit = ObjectID(git_object_id(object).pointee)
        var moved: OpaquePointer?
        var raw = commit.raw
        result = git_reference_create(&moved, repository.handle, reference, &raw, 1, "agentry: fetched \(shown)")
        guard result == 0 else { throw GitError.last(result, "move \(reference) in \(path)") }
        git_reference_free(moved)
        _ = git_reference_remove(repository.handle, staging)
        result = git_repository_set_head(repository.handle, reference)
        guard result == 0 else { throw GitError.last(result, "point the mirror's HEAD at \(branch)") }
        return commit
    }

    /// The mirror at `path`, opened as it is (no search of parent folders: a state directory
    /// inside a work tree must not find that). A folder there that is not a bare repository is
    /// refused.
    static func open(_ path: String) throws -> GitRepository {
        guard let repository = try? GitRepository.open(path, searchingParents: false),
            git_repository_is_bare(repository.handle) == 1
        else {
            throw GitError(
                code: .conflict, operation: "open the mirror \(path)",
                message: "\(path) is not agentry's mirror (a bare repository); move it away")
        }
        return repository
    }
}
