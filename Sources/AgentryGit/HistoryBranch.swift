import AgentryBasics
import CGit2
import Foundation

/// What agentry offers a remote that asks who is pushing: an HTTPS token (sent as the password),
/// else a key from the user's ssh-agent.
public struct GitCredentials: Sendable, Equatable {
    public var token: String?
    public var username: String?

    public init(token: String? = nil, username: String? = nil) {
        self.token = token.flatMap { $0.isEmpty ? nil : $0 }
        self.username = username.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// From `$AGENTRY_GIT_TOKEN` and `$AGENTRY_GIT_USERNAME`.
    public init(environment: [String: String]) {
        self.init(token: environment["AGENTRY_GIT_TOKEN"], username: environment["AGENTRY_GIT_USERNAME"])
        self.environment = environment
    }

    /// The environment git's credential helper runs with (none: the helper is not asked).
    var environment: [String: String]?

    /// These credentials, or, without a token, what git's credential helper has for an HTTPS `url`
    /// (`git credential fill`, run in `directory` so the repository's own configuration counts,
    /// never prompting).
    func withHelper(url: String, directory: String) -> GitCredentials {
        guard token == nil, let environment, let parts = URL(string: url), let scheme = parts.scheme,
            let host = parts.host, scheme == "https" || (scheme == "http" && Self.loopback.contains(host)),
            let git = HostProcess.locate("git", path: environment["PATH"])
        else { return self }
        var variables = environment
        variables["GIT_TERMINAL_PROMPT"] = "0"
        variables["GIT_ASKPASS"] = "true"
        variables["SSH_ASKPASS"] = nil
        let hostAndPort = parts.port.map { "\(host):\($0)" } ?? host
        var request = "protocol=\(scheme)\nhost=\(hostAndPort)\n"
        let path = parts.path.drop { $0 == "/" }
        if !path.isEmpty { request += "path=\(path)\n" }
        if let user = username ?? parts.user { request += "username=\(user)\n" }
        guard
            let answer = try? HostProcess.run(
                git, ["credential", "fill"], environment: variables.map { "\($0.key)=\($0.value)" },
                directory: directory, input: Array((request + "\n").utf8), timeout: .seconds(15)),
            answer.status == 0
        else { return self }
        var fields: [String: String] = [:]
        for line in String(decoding: answer.stdout, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        guard let password = fields["password"], !password.isEmpty else { return self }
        return GitCredentials(token: password, username: fields["username"] ?? username)
    }

    static let loopback: Set<String> = ["127.0.0.1", "localhost", "[::1]", "::1"]

    /// Credentials as libgit2's callbacks take them: C strings, freed with this offer (keep it alive
    /// across the push or fetch).
    final class Offer {
        let token: UnsafeMutablePointer<CChar>?
        let username: UnsafeMutablePointer<CChar>?

        init(_ credentials: GitCredentials) {
            token = credentials.token.map { strdup($0) } ?? nil
            username = credentials.username.map { strdup($0) } ?? nil
        }

        deinit {
            free(token)
            free(username)
        }

        /// Fresh callback state for one push or fetch.
        func status() -> agentry_push_status {
            var status = agentry_push_status()
            status.token = UnsafePointer(token)
            status.username = UnsafePointer(username)
            return status
        }
    }

    /// A failure to push or fetch; when the remote asked for credentials, it says which remote and
    /// what would let `doing` through (`needs`: what the token must be allowed, `push` or `read`).
    static func refusal(_ result: Int32, _ status: agentry_push_status, url: String, doing: String, needs: String)
        -> GitError
    {
        var error = GitError.last(result, doing)
        // Refused: the remote said so, or asked again after the credential was offered (a failure
        // after one offer, such as a redirect, is not the credential's).
        if result == GIT_EAUTH.rawValue || status.attempts > 1 {
            error.message =
                "origin (\(url)) refused agentry's credentials to \(doing) (\(error.message)); give a token that may \(needs) in $AGENTRY_GIT_TOKEN (with $AGENTRY_GIT_USERNAME when the host wants one) or through git's credential helper, or load a key into ssh-agent (SSH_AUTH_SOCK)"
                + (needs == "push" ? "; a CI job needs write permission on the repository's contents" : "")
        }
        return error
    }
}

#if canImport(Glibc)
    import Glibc
#endif

/// A file to record: a path in the history tree and its bytes.
public struct RecordFile: Sendable {
    public var path: String
    public var bytes: [UInt8]

    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
    }
}

/// Appends record commits to a branch of a repository without a work tree (blobs, an updated tree,
/// a commit, a compare-and-swap move of the branch), and pushes the branch to `origin` when the
/// repository has one. A push that loses a race fetches the remote branch, replays the commits it
/// does not have on top (record paths are unique, so replaying never conflicts) and tries again:
/// no record is lost or written twice.
public final class HistoryBranch {
    public let repository: GitRepository
    public let branch: String
    /// When the repository's objects are packed after a record (see `GitRepository.packIfDue`).
    public var packing = GitRepository.PackingLimits()
    var reference: String { "refs/heads/" + branch }
    var remoteTracking: String { "refs/remotes/origin/" + branch }

    public init(repository: GitRepository, branch: String = "agentry/history") {
        self.repository = repository
        self.branch = branch
    }

    var handle: OpaquePointer { repository.handle }

    /// The branch's tip, if it exists.
    public func tip() throws -> ObjectID? {
        try referenceTarget(reference)
    }

    func referenceTarget(_ name: String) throws -> ObjectID? {
        var oid = git_oid()
        let result = git_reference_name_to_id(&oid, handle, name)
        if result == GIT_ENOTFOUND.rawValue { return nil }
        guard result == 0 else { throw GitError.last(result, "read \(name)") }
        return ObjectID(oid)
    }

    /// Commits `files` on top of the branch (creating it) and returns the new commit. Retries when
    /// another writer on this host moved the branch in between.
    @discardableResult
    public func append(_ files: [RecordFile], message: String, author: Signature, at date: Date = Date()) throws
        -> ObjectID
    {
        var blobs: [(String, git_oid)] = []
        for file in files {
            var oid = git_oid()
            let result = file.bytes.withUnsafeBytes {
                git_blob_create_from_buffer(&oid, handle, $0.baseAddress, $0.count)
            }
            guard result == 0 else { throw GitError.last(result, "write \(file.path)") }
            blobs.append((file.path, oid))
        }
        let recorded = try whileWriting {
            for _ in 0..<50 {
                let parent = try tip()
                let commit = try makeCommit(blobs, parent: parent, message: message, author: author, date: date)
                if try moveBranch(reference, to: commit, from: parent) { return commit }
            }
            throw GitError(
                code: .conflict, operation: "record", message: "\(branch) kept moving under 50 attempts to record")
        }
        // Loose objects packed as `git gc --auto` would, outside the writer lock (quick: packs are
        // made one elsewhere, in the background); a failure costs files, never the record.
        _ = try? repository.packIfDue(packing)
        return recorded
    }

    /// Runs `body` holding this host's history writer lock on the repository (an flock on
    /// `agentry-history.lock` in its git folder, released if the writer dies). Under it, a ref lock
    /// file left behind is a writer that died mid-update, never one at work.
    func whileWriting<T>(_ body: () throws -> T) throws -> T {
        let path = repository.gitDirectory + "/agentry-history.lock"
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return try body() }  // a read-only repository fails at the write
        defer { close(descriptor) }
        let deadline = Date().addingTimeInterval(60)
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            guard Date() < deadline else {
                throw GitError(
                    code: .conflict, operation: "record", message: "another agentry kept \(path) locked for a minute")
            }
            usleep(10_000)
        }
        defer { flock(descriptor, LOCK_UN) }
        return try body()
    }

    /// A ref lock file (`<ref>.lock`) older than this, found under the writer lock, is stale.
    static let staleLockAge: TimeInterval = 5
    /// How long a fresh ref lock (another git at work) is waited for.
    static let lockPatience: TimeInterval = 10

    func makeCommit(_ blobs: [(String, git_oid)], parent: ObjectID?, message: String, author: Signature, date: Date)
        throws
        -> ObjectID
    {
        var baseTree: OpaquePointer?
        var parentCommit: OpaquePointer?
        defer {
            if let baseTree { git_tree_free(baseTree) }
            if let parentCommit { git_commit_free(parentCommit) }
        }
        if let parent {
            var oid = parent.raw
            var result = git_commit_lookup(&parentCommit, handle, &oid)
            guard result == 0 else { throw GitError.last(result, "read \(parent)") }
            result = git_commit_tree(&baseTree, parentCommit)
            guard result == 0 else { throw GitError.last(result, "read the tree of \(parent)") }
        }
        // No baseline for the first record: libgit2 builds the tree from the updates alone.
        var updates = blobs.map { path, oid -> git_tree_update in
            var update = git_tree_update()
            update.action = GIT_TREE_UPDATE_UPSERT
            update.id = oid
            update.filemode = GIT_FILEMODE_BLOB
            update.path = UnsafePointer(strdup(path))
            return update
        }
        defer { updates.forEach { free(UnsafeMutablePointer(mutating: $0.path)) } }
        var treeOID = git_oid()
        var result = git_tree_create_updated(&treeOID, handle, baseTree, updates.count, &updates)
        guard result == 0 else { throw GitError.last(result, "build the record tree") }
        var tree: OpaquePointer?
        result = git_tree_lookup(&tree, handle, &treeOID)
        guard result == 0, let tree else { throw GitError.last(result, "read the record tree") }
        defer { git_tree_free(tree) }
        var signature: UnsafeMutablePointer<git_signature>?
        result = git_signature_new(&signature, author.name, author.email, git_time_t(date.timeIntervalSince1970), 0)
        guard result == 0, let signature else { throw GitError.last(result, "make signature") }
        defer { git_signature_free(signature) }
        var commitOID = git_oid()
        var parents: [OpaquePointer?] = parentCommit.map { [$0] } ?? []
        result = parents.withUnsafeMutableBufferPointer { buffer in
            git_commit_create(
                &commitOID, handle, nil, signature, signature, "UTF-8", message, tree, buffer.count, buffer.baseAddress)
        }
        guard result == 0 else { throw GitError.last(result, "commit the record") }
        return ObjectID(commitOID)
    }

    /// Moves `name` from `old` (nil: it must not exist) to `new`; false when someone else moved it
    /// first (a lost race). A ref that is locked is not a lost race: a lock its writer left behind
    /// (older than `staleLockAge`) is removed; another git's fresh lock is waited for.
    func moveBranch(_ name: String, to new: ObjectID, from old: ObjectID?) throws -> Bool {
        let started = Date()
        while true {
            var target = new.raw
            var created: OpaquePointer?
            let result: Int32
            if var current = old?.raw {
                result = git_reference_create_matching(&created, handle, name, &target, 1, &current, "agentry: record")
            } else {
                result = git_reference_create(&created, handle, name, &target, 0, "agentry: record")
            }
            if let created { git_reference_free(created) }
            if result == GIT_EMODIFIED.rawValue || result == GIT_EEXISTS.rawValue { return false }
            guard result == GIT_ELOCKED.rawValue else {
                guard result == 0 else { throw GitError.last(result, "move \(name)") }
                return true
            }
            let lock = repository.gitDirectory + "/" + name + ".lock"
            let age = (try? FileManager.default.attributesOfItem(atPath: lock)[.modificationDate] as? Date)
                .map { Date().timeIntervalSince($0) }
            if let age, age > Self.staleLockAge {
                unlink(lock)  // its writer is gone: nothing holds the lock while we hold ours
                continue
            }
            guard Date().timeIntervalSince(started) < Self.lockPatience else {
                throw GitError(
                    code: .conflict, operation: "move \(name)",
                    message:
                        "\(lock) is held by another git process; try again once it is done (or remove the file if none runs)"
                )
            }
            usleep(50_000)
        }
    }

    // MARK: - Remote

    /// Whether the repository has an `origin` remote.
    public var hasOrigin: Bool {
        var remote: OpaquePointer?
        let result = git_remote_lookup(&remote, handle, "origin")
        if let remote { git_remote_free(remote) }
        return result == 0
    }

    /// Pushes the branch to `origin`. When the remote moved on (another host recorded), fetches it,
    /// replays the local records it lacks on top, and pushes again. Returns the number of attempts.
    @discardableResult
    public func push(maxAttempts: Int = 20, credentials: GitCredentials = GitCredentials()) throws -> Int {
        var remote: OpaquePointer?
        var result = git_remote_lookup(&remote, handle, "origin")
        guard result == 0, let remote else { throw GitError.last(result, "find the remote origin") }
        defer { git_remote_free(remote) }
        let rawURL = git_remote_url(remote).map { String(cString: $0) } ?? "origin"
        let url = Self.withoutPassword(rawURL)
        let offer = GitCredentials.Offer(credentials.withHelper(url: rawURL, directory: repository.gitDirectory))
        defer { withExtendedLifetime(offer) {} }
        func refused(_ result: Int32, _ status: agentry_push_status, _ doing: String) -> GitError {
            GitCredentials.refusal(result, status, url: url, doing: doing, needs: "push")
        }
        var lastError = ""
        for attempt in 1...maxAttempts {
            guard let local = try tip() else { return attempt }
            var status = offer.status()
            result = agentry_git_push(remote, "\(reference):\(reference)", &status)
            if result != 0 && (result == GIT_EAUTH.rawValue || status.attempts > 1) {
                throw refused(result, status, "push \(branch)")
            }
            let rejection = withUnsafeBytes(of: status.rejection) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if result == 0, rejection.isEmpty {
                // Remember what the remote has, so the next replay starts from there.
                _ = try? moveBranch(remoteTracking, to: local, from: try referenceTarget(remoteTracking))
                return attempt
            }
            // Only a lost race (a rejection, a non-fast-forward) is worth a fetch and replay; any other
            // failure (a token that may not write, the network) is said at once.
            guard !rejection.isEmpty || result == GIT_ENONFASTFORWARD.rawValue else {
                throw status.asked != 0
                    ? refused(result, status, "push \(branch)") : GitError.last(result, "push \(branch) to origin")
            }
            lastError = rejection.isEmpty ? GitError.last(result, "push").message : rejection
            // Lost a race (or the remote refused a non-fast-forward): fetch and replay.
            var fetching = offer.status()
            result = agentry_git_fetch(remote, "+\(reference):\(remoteTracking)", &fetching)
            guard result == 0 else {
                throw fetching.asked != 0
                    ? refused(result, fetching, "fetch \(branch)")
                    : GitError.last(result, "fetch \(branch) from origin")
            }
            guard let remoteTip = try referenceTarget(remoteTracking) else { continue }
            try whileWriting { try replay(onto: remoteTip, local: local) }
            usleep(UInt32.random(in: 5_000...(20_000 * UInt32(min(attempt, 10)))))
        }
        throw GitError(
            code: .conflict, operation: "push \(branch)",
            message:
                "origin kept refusing \(branch) after \(maxAttempts) attempts (last: \(lastError)); the records are kept locally and go with the next push"
        )
    }

    /// A remote URL as it may be shown: any `user:password@` part dropped (up to the last `@` of the
    /// authority, as URL parsers read it).
    static func withoutPassword(_ url: String) -> String {
        guard let scheme = url.range(of: "://") else { return url }
        let authority = url[scheme.upperBound...].prefix { $0 != "/" }
        guard let at = authority.lastIndex(of: "@") else { return url }
        return String(url[..<scheme.upperBound]) + url[url.index(after: at)...]
    }

    /// Rewrites the local commits that `remoteTip` lacks as children of it, each with the files it
    /// added, its message and author, and moves the local branch there.
    func replay(onto remoteTip: ObjectID, local: ObjectID) throws {
        var base = git_oid()
        var one = local.raw
        var two = remoteTip.raw
        let found = git_merge_base(&base, handle, &one, &two)
        let mergeBase: ObjectID? = found == 0 ? ObjectID(base) : nil
        if mergeBase == local {
            // Nothing of ours is missing there: take the remote's tip.
            _ = try moveBranch(reference, to: remoteTip, from: local)
            return
        }
        // Our commits since the merge base, oldest first (history is a single line per host).
        var ours: [ObjectID] = []
        var cursor: ObjectID? = local
        while let current = cursor, current != mergeBase {
            ours.append(current)
            cursor = try parent(of: current)
        }
        var newTip = remoteTip
        for commit in ours.reversed() {
            let added = try changes(from: try parent(of: commit), to: commit)
            let (message, author, date) = try details(commit)
            newTip = try makeCommit(added, parent: newTip, message: message, author: author, date: date)
        }
        guard try moveBranch(reference, to: newTip, from: local) else {
            throw GitError(code: .conflict, operation: "replay", message: "\(branch) moved while replaying; try again")
        }
    }

    func parent(of commit: ObjectID) throws -> ObjectID? {
        var pointer: OpaquePointer?
        var oid = commit.raw
        let result = git_commit_lookup(&pointer, handle, &oid)
        guard result == 0, let pointer else { throw GitError.last(result, "read \(commit)") }
        defer { git_commit_free(pointer) }
        guard git_commit_parentcount(pointer) > 0, let id = git_commit_parent_id(pointer, 0) else { return nil }
        return ObjectID(id.pointee)
    }

    func details(_ commit: ObjectID) throws -> (String, Signature, Date) {
        var pointer: OpaquePointer?
        var oid = commit.raw
        let result = git_commit_lookup(&pointer, handle, &oid)
        guard result == 0, let pointer else { throw GitError.last(result, "read \(commit)") }
        defer { git_commit_free(pointer) }
        let message = String(cString: git_commit_message(pointer))
        let author = git_commit_author(pointer)!.pointee
        return (
            message, Signature(name: String(cString: author.name), email: String(cString: author.email)),
            Date(timeIntervalSince1970: TimeInterval(author.when.time))
        )
    }

    /// The blobs a commit added or changed relative to `parent` (records only ever add files).
    /// Unchanged folders are skipped without being read, so this stays fast on a long history.
    func changes(from parent: ObjectID?, to commit: ObjectID) throws -> [(String, git_oid)] {
        guard let parent else {
            return try repository.listTree(commit: commit).compactMap { entry in
                guard case .file = entry.kind else { return nil }
                return (entry.path, entry.id.raw)
            }
        }
        return try repository.changes(from: parent, to: commit).compactMap { change in
            guard case .file? = change.kind, let id = change.id else { return nil }
            return (change.path, id.raw)
        }
    }

    // MARK: - Reading

    /// The files under `folder` at the branch tip (paths relative to the tree root), or nil without a branch.
    public func files(under folder: String) throws -> [TreeEntry]? {
        guard let tip = try tip() else { return nil }
        do {
            return try repository.listTree(commit: tip, subpath: folder).map {
                TreeEntry(path: folder + "/" + $0.path, kind: $0.kind, id: $0.id)
            }
        } catch let error as GitError where error.code == .notFound {
            return []
        }
    }

    public func read(_ path: String) throws -> [UInt8]? {
        guard let tip = try tip(), let entry = try repository.entry(commit: tip, path: path) else { return nil }
        return try repository.blob(entry.id)
    }
}
