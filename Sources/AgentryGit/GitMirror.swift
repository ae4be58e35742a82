import CGit2
import Foundation

/// A bare copy of one branch of a remote agent repository, kept in the service's state directory:
/// `agentry serve --repo URL` reads its agents from here and records its history here (pushed back
/// to the remote, its `origin`). Made on first use; each fetch follows the branch, force-pushes
/// included, as Flux's source controller does.
public enum GitMirror {
    /// Whether `location` names a remote repository (`scheme://...`, or git's scp-like
    /// `user@host:path`) rather than a folder on this machine.
    public static func isRemote(_ location: String) -> Bool {
        if let scheme = location.range(of: "://") {
            return !location[..<scheme.lowerBound].isEmpty
                && location[..<scheme.lowerBound].allSatisfy { $0.isLetter || $0 == "+" || $0 == "-" || $0 == "." }
        }
        // git's rule: a colon before the first slash makes it `host:path`.
        guard let colon = location.firstIndex(of: ":"), colon != location.startIndex else { return false }
        return !location[..<colon].contains("/")
    }

    /// Why `url` and `branch` cannot be followed, or nil: a password in the URL would be written to
    /// the mirror's configuration on disk (tokens go in `$AGENTRY_GIT_TOKEN`), and the branch must be
    /// a valid branch name.
    public static func problem(url: String, branch: String) -> String? {
        if let scheme = url.range(of: "://") {
            let authority = url[scheme.upperBound...].prefix { $0 != "/" }
            if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") {
                return
                    "\(url.prefix(upTo: scheme.upperBound))…: the URL holds a password, which would be written to disk; give the URL without it and the token in $AGENTRY_GIT_TOKEN (or through git's credential helper)"
            }
        }
        var valid: Int32 = 0
        guard git_reference_name_is_valid(&valid, "refs/heads/" + branch) == 0, valid == 1 else {
            return "--branch \(branch): not a valid branch name"
        }
        return nil
    }

    /// Fetches `branch` of `url` into the bare repository at `path` (made on first use, its HEAD the
    /// branch) and returns the branch's commit. A mirror of another URL is refused, not repointed:
    /// a state directory belongs to one agent repository.
    public static func fetch(url: String, branch: String, into path: String, credentials: GitCredentials) throws
        -> ObjectID
    {
        if let problem = problem(url: url, branch: branch) {
            throw GitError(
                code: .other(-1), operation: "follow \(HistoryBranch.withoutPassword(url))", message: problem)
        }
        let repository = try open(path, url: url, branch: branch)
        var remote: OpaquePointer?
        var result = git_remote_lookup(&remote, repository.handle, "origin")
        guard result == 0, let remote else { throw GitError.last(result, "find the mirror's origin in \(path)") }
        defer { git_remote_free(remote) }
        let following = git_remote_url(remote).map { String(cString: $0) } ?? ""
        guard following == url else {
            throw GitError(
                code: .conflict, operation: "fetch \(branch)",
                message:
                    "the mirror \(path) follows \(HistoryBranch.withoutPassword(following)), not \(HistoryBranch.withoutPassword(url)); a state directory belongs to one repository: give its URL, or another --state-dir"
            )
        }
        let offer = GitCredentials.Offer(credentials.withHelper(url: url, directory: path))
        defer { withExtendedLifetime(offer) {} }
        var status = offer.status()
        let reference = "refs/heads/" + branch
        result = agentry_git_fetch(remote, "+\(reference):\(reference)", &status)
        guard result == 0 else {
            let shown = HistoryBranch.withoutPassword(url)
            var error = GitCredentials.refusal(result, status, url: shown, doing: "fetch \(branch)", needs: "read")
            if status.asked == 0 && result != GIT_EAUTH.rawValue { error.operation = "fetch \(branch) from \(shown)" }
            throw error
        }
        var oid = git_oid()
        result = git_reference_name_to_id(&oid, repository.handle, reference)
        guard result == 0 else {
            if result == GIT_ENOTFOUND.rawValue {
                throw GitError(
                    code: .notFound, operation: "fetch \(branch)",
                    message: "\(HistoryBranch.withoutPassword(url)) has no branch \(branch)")
            }
            throw GitError.last(result, "read \(reference) in \(path)")
        }
        result = git_repository_set_head(repository.handle, reference)
        guard result == 0 else { throw GitError.last(result, "point the mirror's HEAD at \(branch)") }
        return ObjectID(oid)
    }

    /// The mirror at `path`, made when there is none (beside it, then moved into place, so that a
    /// mirror is never half made). A folder there that is not a bare repository is refused.
    static func open(_ path: String, url: String, branch: String) throws -> GitRepository {
        if !FileManager.default.fileExists(atPath: path) {
            let temporary = path + ".new-\(getpid())"
            try? FileManager.default.removeItem(atPath: temporary)
            do {
                let made = try GitRepository.create(at: temporary, initialBranch: branch, bare: true)
                var remote: OpaquePointer?
                let reference = "refs/heads/" + branch
                let result = git_remote_create_with_fetchspec(
                    &remote, made.handle, "origin", url, "+\(reference):\(reference)")
                guard result == 0 else { throw GitError.last(result, "make the mirror's origin \(url)") }
                git_remote_free(remote)
            }
            guard rename(temporary, path) == 0 || FileManager.default.fileExists(atPath: path) else {
                throw GitError(
                    code: .other(-1), operation: "make the mirror \(path)",
                    message: String(cString: strerror(errno)))
            }
            try? FileManager.default.removeItem(atPath: temporary)
        }
        let folder = URL(fileURLWithPath: path).standardizedFileURL.path
        let repository = try? GitRepository.open(path)
        guard let repository, git_repository_is_bare(repository.handle) == 1,
            URL(fileURLWithPath: repository.gitDirectory).standardizedFileURL.path == folder
        else {
            throw GitError(
                code: .conflict, operation: "open the mirror \(path)",
                message: "\(path) is not agentry's mirror (a bare repository); move it away")
        }
        return repository
    }
}
