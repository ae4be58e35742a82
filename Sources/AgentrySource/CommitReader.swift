import AgentryCore
import AgentryGit
import AgentryModel
import AgentryPlan
import Foundation
import Logging

/// What a load derived besides the `LoadedCommit`, which the snapshot keeps: every skill folder's
/// digest, and whether the tree has symlinks.
struct Derived {
    var skills: [DerivedSnapshot.SkillState] = []
    var hasSymlinks = false
}

/// Reads an agent repository at commits of one git repository, remembering (in the parse cache)
/// what it derived from the last commit and every file's parse result by blob id, so that a commit a
/// few files away costs only those files.
///
/// The incremental path handles the common change (files edited, added or removed in a repository
/// that was valid) and gives up — falling back to the full path, which is always right — on anything
/// unusual: symlinks, an invalid base, a change that produces an error, many files at once.
public final class CommitReader: RepositoryReader {
    let git: GitRepository
    /// The git repository as given (for reports).
    let repository: String
    let subpath: String
    let cache: (any ParseCache)?
    let logger: Logger
    let clock = ContinuousClock()

    /// More changed files than this and the full path is simpler and as fast.
    static let incrementalLimit = 256
    /// Incremental loads this close to the remembered commit do not move it.
    static let snapshotDistance = 32

    public init(repository: String, path: String, cache: (any ParseCache)?, logger: Logger) throws {
        subpath = path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        if subpath.split(separator: "/").contains("..") {
            throw SourceError(.invalidPath, "--path \(path) must stay inside the repository")
        }
        git = try SourceError.reading { try GitRepository.open(repository) }
        self.repository = repository
        self.cache = cache
        self.logger = logger
    }

    var displayPrefix: String { subpath.isEmpty ? "" : subpath + "/" }

    public var identity: RepositoryIdentity {
        let folder = URL(fileURLWithPath: git.gitDirectory).standardizedFileURL.resolvingSymlinksInPath().path
        return RepositoryIdentity(location: git.originURL ?? folder, path: subpath)
    }

    /// Resolves a ref to a commit id.
    public func commit(for ref: String) throws -> String {
        try SourceError.reading { "\(try git.commit(for: ref))" }
    }
    var snapshotKey: String { git.gitDirectory + "\n" + subpath }

    /// Reads, validates and compiles the agent repository at `ref`. With `remember`, the result
    /// becomes the snapshot the next load starts from.
    public func load(_ ref: String, remember: Bool) throws -> LoadedCommit {
        try SourceError.reading {
            let commit = try git.commit(for: ref)
            if !subpath.isEmpty, try git.entry(commit: commit, path: subpath)?.kind != .directory {
                throw SourceError(.notFound, "commit \(commit) has no folder \(subpath)")
            }
            let started = clock.now
            let snapshot = rememberedSnapshot()
            logger.debug("read snapshot", metadata: ["time": "\(clock.now - started)"])
            if let snapshot, snapshot.commit == "\(commit)" {
                return fromSnapshot(snapshot)
            }
            if let snapshot, snapshot.isValid, let base = ObjectID(hex: snapshot.commit),
                let (loaded, derived, update) = try incremental(from: snapshot, base: base, to: commit)
            {
                logger.debug(
                    "incremental load", metadata: ["parsed": "\(loaded.parsedFiles)", "time": "\(clock.now - started)"])
                // A small step from the remembered commit is cheaper to redo than to save; the snapshot
                // moves on once the distance grows.
                if remember && update.files.count + update.removed.count > Self.snapshotDistance {
                    save(loaded, derived, files: update.files, removed: update.removed, replaceAll: false)
                }
                return loaded
            }
            let (loaded, derived, results) = try full(commit)
            logger.debug("full load", metadata: ["parsed": "\(loaded.parsedFiles)", "time": "\(clock.now - started)"])
            if remember { save(loaded, derived, files: results.files, removed: [], replaceAll: results.replaceAll) }
            return loaded
        }
    }

    // MARK: - Snapshot

    /// The snapshot as read from the cache, once per reader (a diff loads two commits from it).
    private var snapshotRead = false
    private var snapshotCache: DerivedSnapshot?

    private func rememberedSnapshot() -> DerivedSnapshot? {
        if snapshotRead { return snapshotCache }
        snapshotRead = true
        guard let cache, let stored = try? cache.snapshot(key: snapshotKey) else { return nil }
        snapshotCache = SnapshotCodec.decodeSnapshot(stored.data)
        return snapshotCache
    }

    private func fromSnapshot(_ snapshot: DerivedSnapshot) -> LoadedCommit {
        var index = RepositoryIndex()
        index.agents = snapshot.agents
        index.add(snapshot.resources)
        index.skills = snapshot.skills.filter(\.usable).map(\.name)
        let report = ValidationReport(
            diagnostics: snapshot.diagnostics, index: index, catalog: Catalog(), filesChecked: snapshot.filesChecked,
            fileResults: [:])
        let desired = DesiredState(
            agents: Self.byName(snapshot.desired) { $0.name },
            commit: snapshot.commit)
        return LoadedCommit(
            commit: snapshot.commit, report: report, desired: desired, displayPrefix: displayPrefix, parsedFiles: 0,
            mode: .snapshot)
    }

    private func save(
        _ loaded: LoadedCommit, _ derived: Derived, files: [(path: String, blobID: String, result: FileResult)],
        removed: [String], replaceAll: Bool
    ) {
        guard let cache else { return }
        let started = clock.now
        let snapshot = DerivedSnapshot(
            commit: loaded.commit, filesChecked: loaded.report.filesChecked,
            hasSymlinks: derived.hasSymlinks, diagnostics: loaded.report.diagnostics,
            agents: loaded.report.index.agents, desired: loaded.desired.agents.values.sorted { $0.name < $1.name },
            resources: loaded.report.index.harnesses + loaded.report.index.models + loaded.report.index.environments,
            skills: derived.skills)
        let rows = files.map {
            CachedParse(path: $0.path, blobID: $0.blobID, result: Data(SnapshotCodec.encode($0.result)))
        }
        do {
            let saved = try cache.saveSnapshot(
                key: snapshotKey, source: loaded.commit, data: Data(SnapshotCodec.encode(snapshot)), files: rows,
                removed: removed, replaceAll: replaceAll)
            if saved {
                snapshotCache = snapshot
            } else {
                logger.debug("another writer holds the state lock: the snapshot is not saved this time")
            }
        } catch {
            logger.debug("could not save the snapshot", metadata: ["error": "\(error)"])
        }
        logger.debug("saved snapshot", metadata: ["rows": "\(rows.count)", "time": "\(clock.now - started)"])
    }

    // MARK: - Full

    /// The whole tree at `ref` under the agent repository's folder, with the content the validator reads.
    public func tree(_ ref: String) throws -> LoadedRepository {
        try SourceError.reading {
            let commit = try git.commit(for: ref)
            var entries = try listing(commit)
            try loadContent(&entries, except: nil)
            return LoadedRepository(
                tree: SourceTree(entries: entries),
                source: .git(repository: repository, ref: ref, commit: "\(commit)", path: subpath),
                displayPrefix: displayPrefix)
        }
    }

    private func full(_ commit: ObjectID) throws
        -> (LoadedCommit, Derived, (files: [(path: String, blobID: String, result: FileResult)], replaceAll: Bool))
    {
        var entries = try listing(commit)
        var fileCache: FileCache?
        if let cache, let rows = try? cache.cachedFiles(key: snapshotKey, paths: nil) {
            var cached: [String: (blobID: String, result: FileResult)] = [:]
            cached.reserveCapacity(rows.count)
            for row in rows {
                if let result = SnapshotCodec.decodeFile(row.result) { cached[row.path] = (row.blobID, result) }
            }
            fileCache = FileCache(entries: cached)
        }
        try loadContent(&entries, except: fileCache)
        let tree = SourceTree(entries: entries)
        let report = RepositoryValidator.validate(tree, displayPrefix: displayPrefix, cache: fileCache)
        let desired = DesiredState.compile(report.index, tree: tree, commit: "\(commit)")
        var changedRows: [(path: String, blobID: String, result: FileResult)] = []
        var parsed = 0
        for (path, result) in report.fileResults {
            guard let id = tree.blobID(path) else { continue }
            if fileCache?.entries[path]?.blobID == id { continue }
            parsed += 1
            changedRows.append((path, id, result))
        }
        let digests = SkillDigests(tree: tree, wanted: nil)
        let usable = Set(report.index.skills)
        let loaded = LoadedCommit(
            commit: "\(commit)", report: report, desired: desired, displayPrefix: displayPrefix, parsedFiles: parsed,
            mode: .full)
        let derived = Derived(
            skills: digests.digests.keys.sorted().map {
                DerivedSnapshot.SkillState(name: $0, digest: digests.digest(of: $0), usable: usable.contains($0))
            },
            hasSymlinks: entries.values.contains { if case .symlink = $0 { return true } else { return false } })
        // Rows for files that vanished are dropped by rewriting them all when anything was removed.
        let vanished =
            fileCache.map { cached in cached.entries.keys.contains { report.fileResults[$0] == nil } } ?? false
        if vanished || fileCache == nil {
            let all = report.fileResults.compactMap { path, result in
                tree.blobID(path).map { (path: path, blobID: $0, result: result) }
            }
            return (loaded, derived, (all, true))
        }
        return (loaded, derived, (changedRows, false))
    }

    private func listing(_ commit: ObjectID) throws -> [String: SourceTree.Entry] {
        let listing = try git.listTree(commit: commit, subpath: subpath)
        var entries: [String: SourceTree.Entry] = [:]
        entries.reserveCapacity(listing.count)
        for entry in listing {
            entries[entry.path] = try sourceEntry(entry.kind, id: entry.id)
        }
        return entries
    }

    func sourceEntry(_ kind: TreeEntry.Kind, id: ObjectID) throws -> SourceTree.Entry {
        switch kind {
        case .directory: return .directory
        case .submodule: return .other
        case .symlink: return .symlink(target: String(decoding: try git.blob(id), as: UTF8.self))
        case .file: return .file(size: 0, content: nil, id: "\(id)")
        }
    }

    /// Reads the content of the files the validator needs, unless the cache already knows them.
    private func loadContent(_ entries: inout [String: SourceTree.Entry], except cache: FileCache?) throws {
        var wanted: [(String, ObjectID)] = []
        for (path, entry) in entries {
            guard case .file(_, nil, let id?) = entry, SourceTree.needsContent(path), let object = ObjectID(hex: id)
            else { continue }
            if let cached = cache?.entries[path], cached.blobID == id { continue }
            wanted.append((path, object))
        }
        let blobs = try git.blobs(wanted.map(\.1), limit: SourceTree.maxFileSize)
        for ((path, id), blob) in zip(wanted, blobs) {
            entries[path] = .file(size: blob.size, content: blob.content, id: "\(id)")
        }
    }

    // MARK: - Fields for reasons

    /// The resolved fields (for plan reasons) of the named agents, parsing just the files they and
    /// the resources they use are declared in.
    public func resolvedFields(of names: Set<String>, in loaded: LoadedCommit) throws -> [String: Fields] {
        guard let catalog = try catalog(of: names, in: loaded) else { return [:] }
        let harnesses = Dictionary(catalog.harnesses.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let models = Dictionary(catalog.models.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let environments = Dictionary(
            catalog.environments.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        var result: [String: Fields] = [:]
        for agent in catalog.agents where names.contains(agent.metadata.name) {
            guard let wanted = loaded.desired.agents[agent.metadata.name] else { continue }
            result[agent.metadata.name] = ResolvedFields.of(
                agent, harness: agent.harness.flatMap { harnesses[$0.name] }, models: models,
                environment: agent.environment.flatMap { environments[$0.name] }, parts: wanted.parts)
        }
        return result
    }
}
