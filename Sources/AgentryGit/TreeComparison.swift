import CGit2

/// A file that differs between two trees: its old and new kind and id (nil where it is absent).
public struct TreeChange: Sendable {
    public var path: String
    public var kind: TreeEntry.Kind?
    public var id: ObjectID?
    public var oldKind: TreeEntry.Kind?
    public var oldID: ObjectID?
}

extension GitRepository {
    /// The files that differ between two commits' trees. Trees are walked side by side and a
    /// folder whose tree id is the same on both sides is skipped without being read.
    public func changes(from old: ObjectID, to new: ObjectID) throws -> [TreeChange] {
        let oldTree = try rootTree(old)
        defer { git_tree_free(oldTree) }
        let newTree = try rootTree(new)
        defer { git_tree_free(newTree) }
        var changes: [TreeChange] = []
        try compare(oldTree, newTree, prefix: "", into: &changes)
        return changes
    }

    func rootTree(_ commit: ObjectID) throws -> OpaquePointer {
        var oid = commit.raw
        var commitObject: OpaquePointer?
        var result = git_commit_lookup(&commitObject, handle, &oid)
        guard result == 0, let commitObject else { throw GitError.last(result, "read commit \(commit)") }
        defer { git_commit_free(commitObject) }
        var tree: OpaquePointer?
        result = git_commit_tree(&tree, commitObject)
        guard result == 0, let tree else { throw GitError.last(result, "read tree of \(commit)") }
        return tree
    }

    func subtree(_ entry: OpaquePointer) throws -> OpaquePointer {
        var tree: OpaquePointer?
        let result = git_tree_lookup(&tree, handle, git_tree_entry_id(entry))
        guard result == 0, let tree else { throw GitError.last(result, "read tree") }
        return tree
    }

    /// Merge-walks two sorted trees (either may be absent), recording every blob-level difference.
    func compare(_ old: OpaquePointer?, _ new: OpaquePointer?, prefix: String, into changes: inout [TreeChange])
        throws
    {
        let oldCount = old.map { git_tree_entrycount($0) } ?? 0
        let newCount = new.map { git_tree_entrycount($0) } ?? 0
        var i = 0
        var j = 0
        while i < oldCount || j < newCount {
            let a = i < oldCount ? git_tree_entry_byindex(old, i) : nil
            let b = j < newCount ? git_tree_entry_byindex(new, j) : nil
            let order: Int32
            if let a, let b {
                order = git_tree_entry_cmp(a, b)
            } else {
                order = a == nil ? 1 : -1
            }
            if order == 0, let a, let b {
                i += 1
                j += 1
                if git_oid_equal(git_tree_entry_id(a), git_tree_entry_id(b)) == 1
                    && git_tree_entry_filemode(a) == git_tree_entry_filemode(b)
                {
                    continue
                }
                let path = prefix + String(cString: git_tree_entry_name(b))
                let aIsTree = git_tree_entry_type(a) == GIT_OBJECT_TREE
                let bIsTree = git_tree_entry_type(b) == GIT_OBJECT_TREE
                if aIsTree && bIsTree {
                    let left = try subtree(a)
                    defer { git_tree_free(left) }
                    let right = try subtree(b)
                    defer { git_tree_free(right) }
                    try compare(left, right, prefix: path + "/", into: &changes)
                } else if aIsTree || bIsTree {
                    try removed(a, path: path, into: &changes)
                    try added(b, path: path, into: &changes)
                } else {
                    changes.append(
                        TreeChange(
                            path: path, kind: Self.kind(git_tree_entry_filemode(b).rawValue),
                            id: ObjectID(git_tree_entry_id(b).pointee),
                            oldKind: Self.kind(git_tree_entry_filemode(a).rawValue),
                            oldID: ObjectID(git_tree_entry_id(a).pointee)))
                }
            } else if order < 0, let a {
                i += 1
                try removed(a, path: prefix + String(cString: git_tree_entry_name(a)), into: &changes)
            } else if let b {
                j += 1
                try added(b, path: prefix + String(cString: git_tree_entry_name(b)), into: &changes)
            }
        }
    }

    func removed(_ entry: OpaquePointer, path: String, into changes: inout [TreeChange]) throws {
        if git_tree_entry_type(entry) == GIT_OBJECT_TREE {
            let tree = try subtree(entry)
            defer { git_tree_free(tree) }
            try compare(tree, nil, prefix: path + "/", into: &changes)
        } else {
            changes.append(
                TreeChange(
                    path: path, kind: nil, id: nil, oldKind: Self.kind(git_tree_entry_filemode(entry).rawValue),
                    oldID: ObjectID(git_tree_entry_id(entry).pointee)))
        }
    }

    func added(_ entry: OpaquePointer, path: String, into changes: inout [TreeChange]) throws {
        if git_tree_entry_type(entry) == GIT_OBJECT_TREE {
            let tree = try subtree(entry)
            defer { git_tree_free(tree) }
            try compare(nil, tree, prefix: path + "/", into: &changes)
        } else {
            changes.append(
                TreeChange(
                    path: path, kind: Self.kind(git_tree_entry_filemode(entry).rawValue),
                    id: ObjectID(git_tree_entry_id(entry).pointee), oldKind: nil, oldID: nil))
        }
    }
}
