import AgentryGit
import AgentryModel
import AgentryPlan
import AgentryState
import Foundation
import Logging

/// An agent repository read and validated at one commit.
public struct LoadedCommit: Sendable {
    public var commit: String
    public var tree: SourceTree
    public var report: ValidationReport
    /// The agent repository's folder inside the git repository, with a trailing `/` (or empty).
    public var displayPrefix: String
    /// How much was served from the parse cache: files parsed afresh in this load.
    public var parsedFiles: Int
}

/// Reads an agent repository at commits of one git repository, remembering what it parsed (by blob
/// id, in the state database) so that the next commit costs only what git says changed.
public final class CommitReader {
    let git: GitRepository
    let repositoryPath: String
    let subpath: String
    let store: StateStore?
    let logger: Logger

    public init(repository: String, path: String, store: StateStore?, logger: Logger) throws {
        subpath = path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        if subpath.split(separator: "/").contains("..") {
            throw LoadError("--path \(path) must stay inside the repository")
        }
        do {
            git = try GitRepository.open(repository)
        } catch let error as GitError {
            throw LoadError(error.description)
        }
        repositoryPath = repository
        self.store = store
        self.logger = logger
    }

    var displayPrefix: String { subpath.isEmpty ? "" : subpath + "/" }
    var snapshotKey: String { git.gitDirectory + "\n" + subpath }

    /// Resolves a ref to a commit id.
    public func commit(for ref: String) throws -> String {
        do {
            return "\(try git.commit(for: ref))"
        } catch let error as GitError {
            throw LoadError(error.description)
        }
    }

    /// Reads and validates the agent repository at `ref`.
    public func load(_ ref: String) throws -> LoadedCommit {
        do {
            return try loadCommit(try git.commit(for: ref))
        } catch let error as GitError {
            throw LoadError(error.description)
        }
    }

    private func loadCommit(_ commit: ObjectID) throws -> LoadedCommit {
        let clock = ContinuousClock()
        let started = clock.now
        var entries: [String: SourceTree.Entry]
        var cache: FileCache?
        var previous: Snapshot?
        if let store, let stored = try? store.snapshot(key: snapshotKey),
            let snapshot = SnapshotCodec.decode(Array(stored.data))
        {
            previous = snapshot
        }
        if let previous, let base = ObjectID(hex: previous.commit) {
            entries = previous.entries
            cache = FileCache(entries: previous.results)
            if base != commit {
                try apply(try git.changes(from: base, to: commit), to: &entries)
            }
            logger.debug("loaded from snapshot", metadata: ["base": "\(previous.commit)", "time": "\(clock.now - started)"])
        } else {
            entries = try listing(commit)
        }
        try loadContent(&entries, except: cache)
        let tree = SourceTree(entries: entries)
        let loadedAt = clock.now
        let report = RepositoryValidator.validate(tree, displayPrefix: displayPrefix, cache: cache)
        let parsed = report.fileResults.count - (cache.map { cached in
            report.fileResults.keys.filter { cached.entries[$0]?.blobID == tree.blobID($0) }.count
        } ?? 0)
        logger.debug(
            "validated commit",
            metadata: ["commit": "\(commit)", "parsed": "\(parsed)", "load": "\(loadedAt - started)", "validate": "\(clock.now - loadedAt)"])
        let loaded = LoadedCommit(
            commit: "\(commit)", tree: tree, report: report, displayPrefix: displayPrefix, parsedFiles: parsed)
        if previous?.commit != "\(commit)" { remember(loaded) }
        return loaded
    }

    /// Saves the snapshot when the writer lock is free; a busy lock only means no caching this time.
    private func remember(_ loaded: LoadedCommit) {
        guard let store else { return }
        var entries = loaded.tree.entries
        for (path, entry) in entries {
            if case .file(let size, .some, let id) = entry { entries[path] = .file(size: size, content: nil, id: id) }
        }
        var results: [String: (blobID: String, result: FileResult)] = [:]
        for (path, result) in loaded.report.fileResults {
            if let id = loaded.tree.blobID(path) { results[path] = (id, result) }
        }
        let bytes = SnapshotCodec.encode(Snapshot(commit: loaded.commit, entries: entries, results: results))
        do {
            let saved = try store.withWriterLockIfFree {
                try store.saveSnapshot(key: snapshotKey, source: loaded.commit, data: Data(bytes))
            }
            if !saved { logger.debug("another writer holds the state lock: the parse snapshot is not saved this time") }
        } catch {
            logger.debug("could not save the parse snapshot", metadata: ["error": "\(error)"])
        }
    }

    private func listing(_ commit: ObjectID) throws -> [String: SourceTree.Entry] {
        var entries: [String: SourceTree.Entry] = [:]
        let listing: [TreeEntry]
        do {
            listing = try git.listTree(commit: commit, subpath: subpath)
        } catch let error as GitError {
            throw LoadError(error.description)
        }
        entries.reserveCapacity(listing.count)
        for entry in listing {
            entries[entry.path] = try sourceEntry(entry.kind, id: entry.id)
        }
        return entries
    }

    private func sourceEntry(_ kind: TreeEntry.Kind, id: ObjectID) throws -> SourceTree.Entry {
        switch kind {
        case .directory: return .directory
        case .submodule: return .other
        case .symlink: return .symlink(target: String(decoding: try git.blob(id), as: UTF8.self))
        case .file: return .file(size: 0, content: nil, id: "\(id)")
        }
    }

    /// Applies a tree diff to a cached listing: files added, changed or removed, with their folders.
    private func apply(_ changes: [TreeChange], to entries: inout [String: SourceTree.Entry]) throws {
        var touchedFolders = Set<String>()
        for change in changes {
            guard let path = localPath(change.path) else { continue }
            var parent = path.split(separator: "/").dropLast()
            if let kind = change.kind, let id = change.id {
                entries[path] = try sourceEntry(kind, id: id)
                while !parent.isEmpty {
                    entries[parent.joined(separator: "/")] = .directory
                    parent = parent.dropLast()
                }
            } else {
                entries[path] = nil
                if !parent.isEmpty { touchedFolders.insert(parent.joined(separator: "/")) }
            }
        }
        // Folders left empty by removals disappear, as they do from git trees.
        for folder in touchedFolders.sorted(by: { $0.count > $1.count }) {
            let prefix = folder + "/"
            if !entries.keys.contains(where: { $0.hasPrefix(prefix) }) { entries[folder] = nil }
        }
    }

    private func localPath(_ path: String) -> String? {
        if subpath.isEmpty { return path }
        guard path.hasPrefix(displayPrefix) else { return nil }
        return String(path.dropFirst(displayPrefix.count))
    }

    /// Reads the content of the files the validator needs, unless the cache already knows them.
    private func loadContent(_ entries: inout [String: SourceTree.Entry], except cache: FileCache?) throws {
        var wanted: [(String, ObjectID)] = []
        for (path, entry) in entries where SourceTree.needsContent(path) {
            guard case .file(_, nil, let id?) = entry, let object = ObjectID(hex: id) else { continue }
            if let cached = cache?.entries[path], cached.blobID == id { continue }
            wanted.append((path, object))
        }
        try read(wanted, into: &entries)
    }

    private func read(_ files: [(String, ObjectID)], into entries: inout [String: SourceTree.Entry]) throws {
        guard !files.isEmpty else { return }
        do {
            let blobs = try git.blobs(files.map(\.1), limit: SourceTree.maxFileSize)
            for ((path, id), blob) in zip(files, blobs) {
                entries[path] = .file(size: blob.size, content: blob.content, id: "\(id)")
            }
        } catch let error as GitError {
            throw LoadError(error.description)
        }
    }

    /// The resolved fields (for plan reasons) of the named agents, parsing just the files they and
    /// the resources they use are declared in.
    public func resolvedFields(of names: Set<String>, in loaded: LoadedCommit, desired: DesiredState) throws
        -> [String: Fields]
    {
        guard !names.isEmpty else { return [:] }
        let index = loaded.report.index
        let agents = index.agents.filter { names.contains($0.name) }
        var files = Set(agents.map(\.origin.file))
        let wantedResources = Set(agents.flatMap { agent in
            [agent.harness, agent.model, agent.environment].compactMap { $0?.name } + agent.fallbackModels.map(\.name)
        })
        for resource in index.harnesses + index.models + index.environments where wantedResources.contains(resource.name) {
            files.insert(resource.origin.file)
        }
        let paths = files.map { String($0.dropFirst(loaded.displayPrefix.count)) }
        var entries = loaded.tree.entries
        let missing = paths.compactMap { path -> (String, ObjectID)? in
            guard case .file(_, nil, let id?)? = entries[path], let object = ObjectID(hex: id) else { return nil }
            return (path, object)
        }
        try read(missing, into: &entries)
        let catalog = RepositoryValidator.decode(paths, in: SourceTree(entries: entries), displayPrefix: loaded.displayPrefix)
        let harnesses = Dictionary(catalog.harnesses.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let models = Dictionary(catalog.models.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let environments = Dictionary(catalog.environments.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        var result: [String: Fields] = [:]
        for agent in catalog.agents where names.contains(agent.metadata.name) {
            guard let wanted = desired.agents[agent.metadata.name] else { continue }
            result[agent.metadata.name] = ResolvedFields.of(
                agent, harness: agent.harness.flatMap { harnesses[$0.name] }, models: models,
                environment: agent.environment.flatMap { environments[$0.name] }, parts: wanted.parts)
        }
        return result
    }
}
