import AgentryGit
import AgentryModel
import AgentryPlan
import AgentryState
import Foundation
import Logging

/// An agent repository read, validated and compiled at one commit.
public struct LoadedCommit: Sendable {
    public enum Mode: String, Sendable {
        /// Every file listed and validated (parse results reused by blob id where cached).
        case full
        /// Only what git's tree diff from the remembered commit touched was read and re-checked.
        case incremental
        /// The remembered commit itself.
        case snapshot
    }

    public var commit: String
    public var report: ValidationReport
    /// Revisions; meaningful when `report.isValid`.
    public var desired: DesiredState
    /// The agent repository's folder inside the git repository, with a trailing `/` (or empty).
    public var displayPrefix: String
    /// Files parsed afresh in this load.
    public var parsedFiles: Int
    public var mode: Mode
    /// What the snapshot keeps besides: every skill folder's digest, and whether the tree has symlinks.
    var skills: [DerivedSnapshot.SkillState] = []
    var hasSymlinks = false
}

/// Reads an agent repository at commits of one git repository, remembering (in the state database)
/// what it derived from the last commit and every file's parse result by blob id, so that a commit a
/// few files away costs only those files.
///
/// The incremental path handles the common change (files edited, added or removed in a repository
/// that was valid) and gives up — falling back to the full path, which is always right — on anything
/// unusual: symlinks, an invalid base, a change that produces an error, many files at once.
public final class CommitReader {
    let git: GitRepository
    let subpath: String
    let store: StateStore?
    let logger: Logger
    let clock = ContinuousClock()

    /// More changed files than this and the full path is simpler and as fast.
    static let incrementalLimit = 256
    /// Incremental loads this close to the remembered commit do not move it.
    static let snapshotDistance = 32

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
        self.store = store
        self.logger = logger
    }

    var displayPrefix: String { subpath.isEmpty ? "" : subpath + "/" }

    /// Resolves a ref to a commit id.
    public func commit(for ref: String) throws -> String {
        do {
            return "\(try git.commit(for: ref))"
        } catch let error as GitError {
            throw LoadError(error.description)
        }
    }
    var snapshotKey: String { git.gitDirectory + "\n" + subpath }

    /// Reads, validates and compiles the agent repository at `ref`. With `remember`, the result
    /// becomes the snapshot the next load starts from.
    public func load(_ ref: String, remember: Bool = true) throws -> LoadedCommit {
        do {
            let commit = try git.commit(for: ref)
            if !subpath.isEmpty, try git.entry(commit: commit, path: subpath)?.kind != .directory {
                throw LoadError("commit \(commit) has no folder \(subpath)")
            }
            let started = clock.now
            let snapshot = rememberedSnapshot()
            logger.debug("read snapshot", metadata: ["time": "\(clock.now - started)"])
            if let snapshot, snapshot.commit == "\(commit)" {
                return fromSnapshot(snapshot)
            }
            if let snapshot, snapshot.isValid, let base = ObjectID(hex: snapshot.commit),
                let (loaded, update) = try incremental(from: snapshot, base: base, to: commit)
            {
                logger.debug("incremental load", metadata: ["parsed": "\(loaded.parsedFiles)", "time": "\(clock.now - started)"])
                // A small step from the remembered commit is cheaper to redo than to save; the snapshot
                // moves on once the distance grows.
                if remember && update.files.count + update.removed.count > Self.snapshotDistance {
                    save(loaded, files: update.files, removed: update.removed, replaceAll: false)
                }
                return loaded
            }
            let (loaded, results) = try full(commit)
            logger.debug("full load", metadata: ["parsed": "\(loaded.parsedFiles)", "time": "\(clock.now - started)"])
            if remember { save(loaded, files: results.files, removed: [], replaceAll: results.replaceAll) }
            return loaded
        } catch let error as GitError {
            throw LoadError(error.description)
        }
    }

    // MARK: - Snapshot

    /// The snapshot as read from the store, once per reader (a diff loads two commits from it).
    private var snapshotRead = false
    private var snapshotCache: DerivedSnapshot?

    private func rememberedSnapshot() -> DerivedSnapshot? {
        if snapshotRead { return snapshotCache }
        snapshotRead = true
        guard let store, let stored = try? store.snapshot(key: snapshotKey) else { return nil }
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
            agents: Dictionary(snapshot.desired.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }),
            commit: snapshot.commit)
        return LoadedCommit(
            commit: snapshot.commit, report: report, desired: desired, displayPrefix: displayPrefix, parsedFiles: 0,
            mode: .snapshot, skills: snapshot.skills, hasSymlinks: snapshot.hasSymlinks)
    }

    private func save(
        _ loaded: LoadedCommit, files: [(path: String, blobID: String, result: FileResult)], removed: [String],
        replaceAll: Bool
    ) {
        guard let store else { return }
        let started = clock.now
        let snapshot = DerivedSnapshot(
            commit: loaded.commit, filesChecked: loaded.report.filesChecked,
            hasSymlinks: loaded.hasSymlinks, diagnostics: loaded.report.diagnostics,
            agents: loaded.report.index.agents, desired: loaded.desired.agents.values.sorted { $0.name < $1.name },
            resources: loaded.report.index.harnesses + loaded.report.index.models + loaded.report.index.environments,
            skills: loaded.skills)
        let rows = files.map { (path: $0.path, blobID: $0.blobID, result: Data(SnapshotCodec.encode($0.result))) }
        do {
            let saved = try store.withWriterLockIfFree {
                try store.saveSnapshot(
                    key: snapshotKey, source: loaded.commit, data: Data(SnapshotCodec.encode(snapshot)), files: rows,
                    removed: removed, replaceAll: replaceAll)
            }
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

    /// The tree of `commit` under the agent repository's folder, with the content the validator reads.
    public func sourceTree(_ commit: String) throws -> SourceTree {
        guard let id = ObjectID(hex: commit) else { throw LoadError("\(commit) is not a commit id") }
        do {
            var entries = try listing(id)
            try loadContent(&entries, except: nil)
            return SourceTree(entries: entries)
        } catch let error as GitError {
            throw LoadError(error.description)
        }
    }

    private func full(_ commit: ObjectID) throws -> (LoadedCommit, (files: [(path: String, blobID: String, result: FileResult)], replaceAll: Bool)) {
        var entries = try listing(commit)
        var cache: FileCache?
        if let store, let rows = try? store.cachedFiles(key: snapshotKey) {
            var cached: [String: (blobID: String, result: FileResult)] = [:]
            cached.reserveCapacity(rows.count)
            for row in rows {
                if let result = SnapshotCodec.decodeFile(row.result) { cached[row.path] = (row.blobID, result) }
            }
            cache = FileCache(entries: cached)
        }
        try loadContent(&entries, except: cache)
        let tree = SourceTree(entries: entries)
        let report = RepositoryValidator.validate(tree, displayPrefix: displayPrefix, cache: cache)
        let desired = DesiredState.compile(report.index, tree: tree, commit: "\(commit)")
        var changedRows: [(path: String, blobID: String, result: FileResult)] = []
        var parsed = 0
        for (path, result) in report.fileResults {
            guard let id = tree.blobID(path) else { continue }
            if cache?.entries[path]?.blobID == id { continue }
            parsed += 1
            changedRows.append((path, id, result))
        }
        let digests = SkillDigests(tree: tree, wanted: nil)
        let usable = Set(report.index.skills)
        let loaded = LoadedCommit(
            commit: "\(commit)", report: report, desired: desired, displayPrefix: displayPrefix, parsedFiles: parsed,
            mode: .full,
            skills: digests.digests.keys.sorted().map {
                DerivedSnapshot.SkillState(name: $0, digest: digests.digest(of: $0), usable: usable.contains($0))
            },
            hasSymlinks: entries.values.contains { if case .symlink = $0 { return true } else { return false } })
        // Rows for files that vanished are dropped by rewriting them all when anything was removed.
        let vanished = cache.map { cached in cached.entries.keys.contains { report.fileResults[$0] == nil } } ?? false
        if vanished || cache == nil {
            let all = report.fileResults.compactMap { path, result in
                tree.blobID(path).map { (path: path, blobID: $0, result: result) }
            }
            return (loaded, (all, true))
        }
        return (loaded, (changedRows, false))
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

    private func sourceEntry(_ kind: TreeEntry.Kind, id: ObjectID) throws -> SourceTree.Entry {
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

    // MARK: - Incremental

    private struct Update {
        var files: [(path: String, blobID: String, result: FileResult)] = []
        var removed: [String] = []
    }

    /// Nil when the change is not one the incremental path handles; the caller then loads in full.
    private func incremental(from snapshot: DerivedSnapshot, base: ObjectID, to commit: ObjectID) throws
        -> (LoadedCommit, Update)?
    {
        guard !snapshot.hasSymlinks else { return nil }
        let changes = try git.changes(from: base, to: commit).compactMap { change -> TreeChange? in
            guard let local = localPath(change.path) else { return nil }
            var copy = change
            copy.path = local
            return copy
        }
        guard changes.count <= Self.incrementalLimit else { return nil }
        if changes.contains(where: { $0.kind == .symlink || $0.oldKind == .symlink || $0.kind == .submodule }) {
            return nil
        }
        let touchedResourceFiles = changes.filter { SourceTree.isResourceFile($0.path) }
        let previousRows = try store?.cachedFiles(key: snapshotKey, paths: touchedResourceFiles.map(\.path)) ?? []
        var previous: [String: (blobID: String, result: FileResult)] = [:]
        for row in previousRows {
            guard let result = SnapshotCodec.decodeFile(row.result) else { return nil }
            previous[row.path] = (row.blobID, result)
        }

        var agents = Dictionary(snapshot.agents.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var desired = Dictionary(snapshot.desired.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var resources = Dictionary(
            snapshot.resources.map { (ResourceTable.key($0.kind, $0.name), $0) }, uniquingKeysWith: { a, _ in a })
        var skills = Dictionary(snapshot.skills.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var changedResources = Set<String>()
        var changedSkills = Set<String>()
        var affected = Set<String>()
        var update = Update()
        var changedFiles = Set<String>()
        var filesChecked = snapshot.filesChecked
        var newDiagnostics: [Diagnostic] = []

        // 1. Resource files: take out what the old versions declared, then put in what the new ones do
        //    (in two passes, so a definition may move from one changed file to another).
        for change in touchedResourceFiles {
            changedFiles.insert(displayPrefix + change.path)
            guard let oldID = change.oldID else { continue }
            guard let old = previous[change.path], old.blobID == "\(oldID)" else { return nil }
            for agent in old.result.agents {
                agents[agent.name] = nil
                desired[agent.name] = nil
            }
            for resource in old.result.resources {
                let key = ResourceTable.key(resource.kind, resource.name)
                resources[key] = nil
                changedResources.insert(key)
            }
            filesChecked -= 1
        }
        for change in touchedResourceFiles {
            if let newID = change.id {
                let content = try git.blobs([newID], limit: SourceTree.maxFileSize)[0]
                let entry = SourceTree.Entry.file(size: content.size, content: content.content, id: "\(newID)")
                let result = RepositoryValidator.decodeFile(change.path, entry: entry, displayPrefix: displayPrefix)
                guard !result.diagnostics.contains(where: { $0.severity == .error }) else { return nil }
                for agent in result.agents {
                    guard agents[agent.name] == nil else { return nil }  // a duplicate: the full path reports it
                    agents[agent.name] = agent
                    affected.insert(agent.name)
                }
                for resource in result.resources {
                    let key = ResourceTable.key(resource.kind, resource.name)
                    guard resources[key] == nil else { return nil }
                    resources[key] = resource
                    changedResources.insert(key)
                }
                newDiagnostics += result.diagnostics
                update.files.append((change.path, "\(newID)", result))
                filesChecked += 1
            } else {
                update.removed.append(change.path)
            }
        }

        // 2. Skill folders: re-read the changed ones from the new tree.
        for change in changes where change.path.hasPrefix("skills/") {
            let parts = change.path.split(separator: "/")
            if parts.count >= 3 { changedSkills.insert(String(parts[1])) } else { return nil }
        }
        for name in changedSkills {
            changedFiles.insert(displayPrefix + "skills/\(name)/SKILL.md")
            let folder = "skills/\(name)"
            let wasUsable = skills[name]?.usable ?? false
            guard try git.entry(commit: commit, path: displayPrefix + folder)?.kind == .directory else {
                if skills[name] != nil { filesChecked -= (wasUsable ? 1 : 0) }
                skills[name] = nil
                update.removed.append(folder + "/SKILL.md")
                continue
            }
            let listing = try git.listTree(commit: commit, subpath: displayPrefix + folder)
            var entries: [String: SourceTree.Entry] = [:]
            for entry in listing {
                if entry.kind == .symlink || entry.kind == .submodule { return nil }
                entries[folder + "/" + entry.path] = try sourceEntry(entry.kind, id: entry.id)
            }
            let manifest = folder + "/SKILL.md"
            guard case .file(_, _, let id?)? = entries[manifest], let object = ObjectID(hex: id) else { return nil }
            let content = try git.blobs([object], limit: SourceTree.maxFileSize)[0]
            entries[manifest] = .file(size: content.size, content: content.content, id: id)
            entries["skills"] = .directory
            entries[folder] = .directory
            let tree = SourceTree(entries: entries)
            let report = RepositoryValidator.validate(tree, displayPrefix: displayPrefix)
            guard report.isValid, report.index.skills == [name], let result = report.fileResults[manifest] else {
                return nil
            }
            newDiagnostics += report.diagnostics
            update.files.append((manifest, id, result))
            if !wasUsable { filesChecked += 1 }
            skills[name] = DerivedSnapshot.SkillState(
                name: name, digest: SkillDigests(tree: tree, wanted: [name]).digest(of: name), usable: true)
        }

        // 3. Every agent that uses something that changed is checked and compiled again.
        let otherPaths = Set(changes.map(\.path))
        var changedNames: [Kind: Set<String>] = [:]
        for key in changedResources {
            let parts = key.split(separator: ":", maxSplits: 1)
            if parts.count == 2, let kind = Kind(rawValue: String(parts[0])) {
                changedNames[kind, default: []].insert(String(parts[1]))
            }
        }
        let harnesses = changedNames[.harness] ?? []
        let models = changedNames[.model] ?? []
        let environments = changedNames[.environment] ?? []
        let checkSkills = !changedSkills.isEmpty
        let checkPaths = otherPaths.contains { !$0.hasPrefix("skills/") && !SourceTree.isResourceFile($0) }
        for agent in agents.values where !affected.contains(agent.name) {
            if (agent.harness.map { harnesses.contains($0.name) } ?? false)
                || (agent.model.map { models.contains($0.name) } ?? false)
                || (agent.environment.map { environments.contains($0.name) } ?? false)
                || (!models.isEmpty && agent.fallbackModels.contains { models.contains($0.name) })
                || (checkSkills && agent.skills.contains { changedSkills.contains($0.name) })
                || (checkPaths && agent.instructionsPath.flatMap { SourceTree.normalize($0) }.map(otherPaths.contains) == true)
            {
                affected.insert(agent.name)
            }
        }
        let table = ResourceTable(byKey: resources)
        for name in affected {
            guard let agent = agents[name] else { continue }
            guard let compiled = try check(agent, table: table, skills: skills, commit: commit) else { return nil }
            desired[name] = compiled
        }
        // A resource that went away must not be used by anyone (the full path names who does).
        for key in changedResources where resources[key] == nil {
            let parts = key.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let kind = Kind(rawValue: String(parts[0])) else { return nil }
            let gone = String(parts[1])
            if agents.values.contains(where: { agent in
                switch kind {
                case .harness: return agent.harness?.name == gone
                case .model: return agent.model?.name == gone || agent.fallbackModels.contains { $0.name == gone }
                case .environment: return agent.environment?.name == gone
                case .agent: return false
                }
            }) {
                return nil
            }
        }

        var diagnostics = snapshot.diagnostics.filter { !changedFiles.contains($0.file) }
        diagnostics += newDiagnostics
        var index = RepositoryIndex()
        index.agents = Array(agents.values)
        index.add(resources.values)
        index.skills = skills.values.filter(\.usable).map(\.name).sorted()
        let report = ValidationReport(
            diagnostics: diagnostics.sorted(), index: index, catalog: Catalog(), filesChecked: filesChecked,
            fileResults: [:])
        let loaded = LoadedCommit(
            commit: "\(commit)", report: report, desired: DesiredState(agents: desired, commit: "\(commit)"),
            displayPrefix: displayPrefix, parsedFiles: update.files.count, mode: .incremental,
            skills: skills.values.sorted { $0.name < $1.name }, hasSymlinks: false)
        return (loaded, update)
    }

    /// Checks one agent's references against the tables and compiles its revision; nil when anything
    /// is wrong (the full path then reports it properly).
    private func check(
        _ agent: AgentSummary, table: ResourceTable, skills: [String: DerivedSnapshot.SkillState], commit: ObjectID
    ) throws -> DesiredAgent? {
        guard let harnessRef = agent.harness, let harness = table[.harness, harnessRef.name] else { return nil }
        guard let environment = agent.environment, table[.environment, environment.name] != nil else { return nil }
        for model in [agent.model].compactMap({ $0 }) + agent.fallbackModels {
            guard let summary = table[.model, model.name] else { return nil }
            if let api = summary.api, !harness.apis.isEmpty, !harness.apis.contains(api) { return nil }
        }
        guard agent.model != nil else { return nil }
        for skill in agent.skills where skills[skill.name]?.usable != true { return nil }
        var instructions: String?
        if let path = agent.instructionsPath {
            guard !path.hasPrefix("/"), let normalized = SourceTree.normalize(path),
                let entry = try git.entry(commit: commit, path: displayPrefix + normalized), case .file = entry.kind
            else { return nil }
            instructions = "\(entry.id)"
        }
        return DesiredAgent.compile(
            agent, resources: table, skillDigest: { skills[$0]?.digest ?? "" }, instructionsBlob: instructions)
    }

    private func localPath(_ path: String) -> String? {
        if subpath.isEmpty { return path }
        guard path.hasPrefix(displayPrefix) else { return nil }
        return String(path.dropFirst(displayPrefix.count))
    }

    // MARK: - Fields for reasons

    /// The resolved fields (for plan reasons) of the named agents, parsing just the files they and
    /// the resources they use are declared in.
    public func resolvedFields(of names: Set<String>, in loaded: LoadedCommit) throws -> [String: Fields] {
        guard let catalog = try catalog(of: names, in: loaded) else { return [:] }
        let harnesses = Dictionary(catalog.harnesses.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let models = Dictionary(catalog.models.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let environments = Dictionary(catalog.environments.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
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
