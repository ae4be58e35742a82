import AgentryBasics
import CGit2

#if canImport(Glibc)
    import Glibc
#endif

/// A libgit2 failure, with the operation that failed and libgit2's own message.
public struct GitError: AgentryFailure {
    public enum Code: Sendable, Equatable {
        case notFound
        case ambiguous
        case exists
        case conflict
        case other(Int32)
    }

    public var code: Code
    public var operation: String
    public var message: String

    public init(code: Code, operation: String, message: String) {
        self.code = code
        self.operation = operation
        self.message = message
    }

    /// The operation and libgit2's words, as loading errors show them.
    public var description: String { "\(operation): \(message)" }

    public var category: FailureCategory {
        switch code {
        case .notFound: return .notFound
        case .ambiguous: return .invalidInput
        case .exists, .conflict: return .conflict
        case .other: return .unavailable
        }
    }

    /// Builds the error from libgit2's last error; call right after the failing call.
    static func last(_ result: Int32, _ operation: String) -> GitError {
        let detail = git_error_last().map { String(cString: $0.pointee.message) } ?? "libgit2 error \(result)"
        let code: Code
        switch result {
        case GIT_ENOTFOUND.rawValue: code = .notFound
        case GIT_EAMBIGUOUS.rawValue: code = .ambiguous
        case GIT_EEXISTS.rawValue: code = .exists
        case GIT_EMODIFIED.rawValue, GIT_ECONFLICT.rawValue: code = .conflict
        default: code = .other(result)
        }
        return GitError(code: code, operation: operation, message: detail)
    }
}

/// A 20-byte git object id.
public struct ObjectID: Sendable, Hashable, CustomStringConvertible {
    var raw: git_oid

    init(_ raw: git_oid) { self.raw = raw }

    public init?(hex: String) {
        var oid = git_oid()
        guard hex.utf8.count == 40, git_oid_fromstr(&oid, hex) == 0 else { return nil }
        raw = oid
    }

    public var description: String {
        var copy = raw
        var buffer = [CChar](repeating: 0, count: 41)
        git_oid_tostr(&buffer, 41, &copy)
        return String(decoding: buffer.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func == (lhs: ObjectID, rhs: ObjectID) -> Bool {
        var a = lhs.raw
        var b = rhs.raw
        return git_oid_equal(&a, &b) == 1
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: raw) { hasher.combine(bytes: $0) }
    }
}

/// One entry of a recursive tree listing.
public struct TreeEntry: Sendable {
    public enum Kind: Sendable, Equatable {
        case file(executable: Bool)
        case symlink
        case directory
        case submodule
    }

    /// Path relative to the listed tree, `/`-separated.
    public var path: String
    public var kind: Kind
    public var id: ObjectID
}

/// libgit2 is initialised once per process, with the user's global configuration blanked so
/// agentry never picks up a `~/.gitconfig` it was not given.
enum Library {
    static let initialised: Bool = {
        git_libgit2_init()
        _ = agentry_git_blank_config_search_paths()
        _ = agentry_git_cache_large_trees()
        return true
    }()
}

/// A git repository opened through libgit2. Not thread-safe: one instance per task.
public final class GitRepository {
    let handle: OpaquePointer

    private init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        git_repository_free(handle)
    }

    /// Opens the repository at `path` (a work tree, a `.git` folder or a bare repository), also from
    /// a subfolder of a work tree.
    /// `searchingParents` false: only `path` itself.
    public static func open(_ path: String, searchingParents: Bool = true) throws -> GitRepository {
        _ = Library.initialised
        var repository: OpaquePointer?
        let result = git_repository_open_ext(
            &repository, path, searchingParents ? 0 : GIT_REPOSITORY_OPEN_NO_SEARCH.rawValue, nil)
        guard result == 0, let repository else {
            var error = GitError.last(result, "open repository \(path)")
            if error.code == .notFound {
                error.message =
                    "no git repository at \(path) (or any parent folder); if it exists but belongs to another user, git's safe.directory rule refuses it"
            }
            throw error
        }
        return GitRepository(handle: repository)
    }

    /// Creates a new repository at `path` (with a work tree unless `bare`), whose first branch is
    /// `initialBranch`.
    public static func create(at path: String, initialBranch: String = "main", bare: Bool = false) throws
        -> GitRepository
    {
        _ = Library.initialised
        var options = git_repository_init_options()
        git_repository_init_options_init(&options, UInt32(GIT_REPOSITORY_INIT_OPTIONS_VERSION))
        options.flags = GIT_REPOSITORY_INIT_MKPATH.rawValue | (bare ? GIT_REPOSITORY_INIT_BARE.rawValue : 0)
        var repository: OpaquePointer?
        let result = initialBranch.withCString { branch in
            options.initial_head = branch
            return git_repository_init_ext(&repository, path, &options)
        }
        guard result == 0, let repository else { throw GitError.last(result, "create repository \(path)") }
        return GitRepository(handle: repository)
    }

    /// The work tree folder, or nil for a bare repository.
    public var workdir: String? {
        git_repository_workdir(handle).map { String(cString: $0) }
    }

    /// The `.git` folder (or the bare repository itself).
    public var gitDirectory: String {
        String(cString: git_repository_path(handle))
    }

    /// Files under `subpath` (relative to the work tree's root; empty for all) that differ from
    /// HEAD in the index or the work tree, untracked ones included, sorted; empty for a bare
    /// repository.
    public func changedPaths(under subpath: String) throws -> [String] {
        guard workdir != nil else { return [] }
        var options = git_status_options()
        git_status_options_init(&options, UInt32(GIT_STATUS_OPTIONS_VERSION))
        options.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR
        options.flags =
            GIT_STATUS_OPT_INCLUDE_UNTRACKED.rawValue | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS.rawValue
            | GIT_STATUS_OPT_EXCLUDE_SUBMODULES.rawValue
        var list: OpaquePointer?
        let pattern = strdup(subpath.isEmpty ? "*" : subpath + "/*")
        defer { free(pattern) }
        var patterns: [UnsafeMutablePointer<CChar>?] = [pattern]
        let result = patterns.withUnsafeMutableBufferPointer { buffer in
            options.pathspec = git_strarray(strings: buffer.baseAddress, count: 1)
            return git_status_list_new(&list, handle, &options)
        }
        guard result == 0, let list else { throw GitError.last(result, "read the work tree's status") }
        defer { git_status_list_free(list) }
        var paths: Set<String> = []
        for index in 0..<git_status_list_entrycount(list) {
            guard let entry = git_status_byindex(list, index)?.pointee else { continue }
            for delta in [entry.head_to_index, entry.index_to_workdir] {
                if let path = delta?.pointee.new_file.path ?? delta?.pointee.old_file.path {
                    paths.insert(String(cString: path))
                }
            }
        }
        return paths.sorted()
    }

    /// The URL of the `origin` remote, when there is one.
    public var originURL: String? {
        var remote: OpaquePointer?
        guard git_remote_lookup(&remote, handle, "origin") == 0, let remote else { return nil }
        defer { git_remote_free(remote) }
        return git_remote_url(remote).map { String(cString: $0) }
    }

    /// Resolves a revision (`HEAD`, a branch, a tag, a commit id or any rev-parse expression) to a commit.
    public func commit(for revision: String) throws -> ObjectID {
        var object: OpaquePointer?
        var result = git_revparse_single(&object, handle, revision)
        guard result == 0, let object else {
            var error = GitError.last(result, "resolve \(revision)")
            if error.code == .notFound { error.message = "no commit, branch or tag named \"\(revision)\"" }
            throw error
        }
        defer { git_object_free(object) }
        var peeled: OpaquePointer?
        result = git_object_peel(&peeled, object, GIT_OBJECT_COMMIT)
        guard result == 0, let peeled else {
            throw GitError(
                code: .notFound, operation: "resolve \(revision)", message: "\"\(revision)\" does not name a commit")
        }
        defer { git_object_free(peeled) }
        return ObjectID(git_object_id(peeled).pointee)
    }

    /// Lists the tree of `commit` under `subpath` (empty for the root), recursively, in tree order.
    public func listTree(commit: ObjectID, subpath: String = "") throws -> [TreeEntry] {
        var tree = try rootTree(commit)
        var result: Int32 = 0
        let trimmed = subpath.split(separator: "/").joined(separator: "/")
        if !trimmed.isEmpty {
            var entry: OpaquePointer?
            result = git_tree_entry_bypath(&entry, tree, trimmed)
            guard result == 0, let entry else {
                git_tree_free(tree)
                throw GitError(
                    code: .notFound, operation: "read \(trimmed)", message: "commit \(commit) has no folder \(trimmed)")
            }
            defer { git_tree_entry_free(entry) }
            guard git_tree_entry_type(entry) == GIT_OBJECT_TREE else {
                git_tree_free(tree)
                throw GitError(
                    code: .notFound, operation: "read \(trimmed)",
                    message: "\(trimmed) is not a folder in commit \(commit)")
            }
            var subtree: OpaquePointer?
            result = git_tree_lookup(&subtree, handle, git_tree_entry_id(entry))
            git_tree_free(tree)
            guard result == 0, let subtree else { throw GitError.last(result, "read tree \(trimmed)") }
            tree = subtree
        }
        defer { git_tree_free(tree) }
        var entries: [TreeEntry] = []
        try walk(tree, prefix: "", into: &entries)
        return entries
    }

    private func walk(_ tree: OpaquePointer, prefix: String, into entries: inout [TreeEntry]) throws {
        let count = git_tree_entrycount(tree)
        for index in 0..<count {
            guard let entry = git_tree_entry_byindex(tree, index) else { continue }
            let name = String(cString: git_tree_entry_name(entry))
            let path = prefix.isEmpty ? name : prefix + "/" + name
            let id = ObjectID(git_tree_entry_id(entry).pointee)
            switch git_tree_entry_filemode(entry) {
            case GIT_FILEMODE_TREE:
                entries.append(TreeEntry(path: path, kind: .directory, id: id))
                var subtree: OpaquePointer?
                let result = git_tree_lookup(&subtree, handle, git_tree_entry_id(entry))
                guard result == 0, let subtree else { throw GitError.last(result, "read tree \(path)") }
                defer { git_tree_free(subtree) }
                try walk(subtree, prefix: path, into: &entries)
            case GIT_FILEMODE_LINK:
                entries.append(TreeEntry(path: path, kind: .symlink, id: id))
            case GIT_FILEMODE_COMMIT:
                entries.append(TreeEntry(path: path, kind: .submodule, id: id))
            case GIT_FILEMODE_BLOB_EXECUTABLE:
                entries.append(TreeEntry(path: path, kind: .file(executable: true), id: id))
            default:
                entries.append(TreeEntry(path: path, kind: .file(executable: false), id: id))
            }
        }
    }

    static func kind(_ mode: UInt32) -> TreeEntry.Kind? {
        switch mode {
        case GIT_FILEMODE_LINK.rawValue: return .symlink
        case GIT_FILEMODE_COMMIT.rawValue: return .submodule
        case GIT_FILEMODE_BLOB_EXECUTABLE.rawValue: return .file(executable: true)
        case GIT_FILEMODE_BLOB.rawValue: return .file(executable: false)
        case GIT_FILEMODE_TREE.rawValue: return .directory
        default: return nil
        }
    }

    /// The entry at `path` in a commit's tree, or nil when there is none.
    public func entry(commit: ObjectID, path: String) throws -> (kind: TreeEntry.Kind, id: ObjectID)? {
        let tree = try rootTree(commit)
        defer { git_tree_free(tree) }
        var entry: OpaquePointer?
        let result = git_tree_entry_bypath(&entry, tree, path)
        if result == GIT_ENOTFOUND.rawValue { return nil }
        guard result == 0, let entry else { throw GitError.last(result, "read \(path)") }
        defer { git_tree_entry_free(entry) }
        guard let kind = Self.kind(git_tree_entry_filemode(entry).rawValue) else { return nil }
        return (kind, ObjectID(git_tree_entry_id(entry).pointee))
    }

    /// A blob's bytes.
    public func blob(_ id: ObjectID) throws -> [UInt8] {
        var oid = id.raw
        var blob: OpaquePointer?
        let result = git_blob_lookup(&blob, handle, &oid)
        guard result == 0, let blob else { throw GitError.last(result, "read blob \(id)") }
        defer { git_blob_free(blob) }
        let size = Int(git_blob_rawsize(blob))
        guard size > 0, let content = git_blob_rawcontent(blob) else { return [] }
        return Array(UnsafeRawBufferPointer(start: content, count: size))
    }

    /// Blobs with sizes, skipping those larger than `limit` (returned as nil with their size).
    public func blobs(_ ids: [ObjectID], limit: Int) throws -> [(size: Int, content: [UInt8]?)] {
        var odb: OpaquePointer?
        let opened = git_repository_odb(&odb, handle)
        guard opened == 0, let odb else { throw GitError.last(opened, "open object database") }
        defer { git_odb_free(odb) }
        return try ids.map { id in
            var oid = id.raw
            var object: OpaquePointer?
            var size = 0
            var type = GIT_OBJECT_ANY
            var result = git_odb_read_header(&size, &type, odb, &oid)
            guard result == 0 else { throw GitError.last(result, "read object \(id)") }
            if size > limit { return (size, nil) }
            result = git_odb_read(&object, odb, &oid)
            guard result == 0, let object else { throw GitError.last(result, "read object \(id)") }
            defer { git_odb_object_free(object) }
            let length = git_odb_object_size(object)
            guard length > 0, let data = git_odb_object_data(object) else { return (0, []) }
            return (length, Array(UnsafeRawBufferPointer(start: data, count: length)))
        }
    }

    /// Stages every file of the work tree and commits it on HEAD, like `git add -A && git commit`.
    @discardableResult
    public func commitWorkTree(message: String, author: Signature) throws -> ObjectID {
        var index: OpaquePointer?
        var result = git_repository_index(&index, handle)
        guard result == 0, let index else { throw GitError.last(result, "open index") }
        defer { git_index_free(index) }
        var everything = git_strarray()
        result = git_index_add_all(index, &everything, 0, nil, nil)
        guard result == 0 else { throw GitError.last(result, "stage files") }
        result = git_index_write(index)
        guard result == 0 else { throw GitError.last(result, "write index") }
        var treeOID = git_oid()
        result = git_index_write_tree(&treeOID, index)
        guard result == 0 else { throw GitError.last(result, "write tree") }
        var tree: OpaquePointer?
        result = git_tree_lookup(&tree, handle, &treeOID)
        guard result == 0, let tree else { throw GitError.last(result, "read tree") }
        defer { git_tree_free(tree) }

        var parents: [OpaquePointer?] = []
        var headOID = git_oid()
        if git_reference_name_to_id(&headOID, handle, "HEAD") == 0 {
            var parent: OpaquePointer?
            if git_commit_lookup(&parent, handle, &headOID) == 0 { parents.append(parent) }
        }
        defer { parents.forEach { git_commit_free($0) } }

        var signature: UnsafeMutablePointer<git_signature>?
        result = git_signature_now(&signature, author.name, author.email)
        guard result == 0, let signature else { throw GitError.last(result, "make signature") }
        defer { git_signature_free(signature) }
        var commitOID = git_oid()
        result = parents.withUnsafeMutableBufferPointer { buffer in
            git_commit_create(
                &commitOID, handle, "HEAD", signature, signature, "UTF-8", message, tree, buffer.count,
                buffer.baseAddress)
        }
        guard result == 0 else { throw GitError.last(result, "commit") }
        return ObjectID(commitOID)
    }
}

/// Who a commit is by.
public struct Signature: Sendable {
    public var name: String
    public var email: String

    public init(name: String, email: String) {
        self.name = name
        self.email = email
    }

    /// The user's own git identity, as git finds it: `$GIT_AUTHOR_NAME`/`$GIT_AUTHOR_EMAIL`, else
    /// `user.name`/`user.email` in `~/.gitconfig` or `$XDG_CONFIG_HOME/git/config` (read on purpose:
    /// agentry otherwise ignores the user's git configuration); nil for a part that is nowhere.
    public static func user(environment: [String: String]) -> (name: String?, email: String?) {
        _ = Library.initialised
        let home = environment["HOME"] ?? ""
        let xdg = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.config"
        // Later files win, as in git: the XDG file, then ~/.gitconfig.
        var found: [String: String] = [:]
        for file in [xdg + "/git/config", home + "/.gitconfig"] where !home.isEmpty || file.hasPrefix("/") {
            var config: OpaquePointer?
            guard access(file, F_OK) == 0, git_config_open_ondisk(&config, file) == 0,
                let config
            else { continue }
            defer { git_config_free(config) }
            for key in ["user.name", "user.email"] {
                var buffer = git_buf()
                if git_config_get_string_buf(&buffer, config, key) == 0, let pointer = buffer.ptr {
                    found[key] = String(cString: pointer)
                }
                git_buf_dispose(&buffer)
            }
        }
        func nonEmpty(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        return (
            nonEmpty(environment["GIT_AUTHOR_NAME"]) ?? nonEmpty(found["user.name"]),
            nonEmpty(environment["GIT_AUTHOR_EMAIL"]) ?? nonEmpty(environment["EMAIL"]) ?? nonEmpty(found["user.email"])
        )
    }
}
