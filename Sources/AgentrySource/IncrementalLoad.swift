import AgentryCore
import AgentryGit
import AgentryModel
import AgentryPlan

extension CommitReader {
    // MARK: - Incremental

    struct Update {
        var files: [(path: String, blobID: String, result: FileResult)] = []
        var removed: [String] = []
    }

    /// Nil when the change is not one the incremental path handles; the caller then loads in full.
    func incremental(from snapshot: DerivedSnapshot, base: ObjectID, to commit: ObjectID) throws
        -> (LoadedCommit, Derived, Update)?
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
        let previousRows = (try? cache?.cachedFiles(key: snapshotKey, paths: touchedResourceFiles.map(\.path))) ?? []
        var previous: [String: (blobID: String, result: FileResult)] = [:]
        for row in previousRows {
            guard let result = SnapshotCodec.decodeFile(row.result) else { return nil }
            previous[row.path] = (row.blobID, result)
        }

        var agents = Self.byName(snapshot.agents) { $0.name }
        var desired = Self.byName(snapshot.desired) { $0.name }
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
                || (checkPaths
                    && agent.instructionsPath.flatMap { SourceTree.normalize($0) }.map(otherPaths.contains) == true)
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

        // Cross-file warnings of the agents checked again are worked out again.
        let recheckedFiles = Set(affected.compactMap { agents[$0]?.origin.file })
        var diagnostics = snapshot.diagnostics.filter {
            !changedFiles.contains($0.file) && !($0.code == .fallbackAPIMismatch && recheckedFiles.contains($0.file))
        }
        diagnostics += newDiagnostics.filter { $0.code != .fallbackAPIMismatch }
        for name in affected {
            guard let agent = agents[name] else { continue }
            diagnostics += RepositoryValidator.fallbackMismatches(agent) { table[.model, $0] }
        }
        var index = RepositoryIndex()
        index.agents = Array(agents.values)
        index.add(resources.values)
        index.skills = skills.values.filter(\.usable).map(\.name).sorted()
        let report = ValidationReport(
            diagnostics: diagnostics.sorted(), index: index, catalog: Catalog(), filesChecked: filesChecked,
            fileResults: [:])
        let loaded = LoadedCommit(
            commit: "\(commit)", report: report, desired: DesiredState(agents: desired, commit: "\(commit)"),
            displayPrefix: displayPrefix, parsedFiles: update.files.count, mode: .incremental)
        return (loaded, Derived(skills: skills.values.sorted { $0.name < $1.name }, hasSymlinks: false), update)
    }

    /// Checks one agent's references against the tables and compiles its revision; nil when anything
    /// is wrong (the full path then reports it properly).
    func check(
        _ agent: AgentSummary, table: ResourceTable, skills: [String: DerivedSnapshot.SkillState], commit: ObjectID
    ) throws -> DesiredAgent? {
        guard let harnessRef = agent.harness, let harness = table[.harness, harnessRef.name] else { return nil }
        // What the harness cannot express is an error the full path reports.
        if !RepositoryValidator.toolMismatches(agent, harness: harness).isEmpty { return nil }
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

    /// Keyed by name, the first of a name kept (built in place: these are 10,000 agents).
    static func byName<T>(_ items: [T], _ name: (T) -> String) -> [String: T] {
        var table: [String: T] = [:]
        table.reserveCapacity(items.count)
        for item in items where table[name(item)] == nil { table[name(item)] = item }
        return table
    }

    func localPath(_ path: String) -> String? {
        if subpath.isEmpty { return path }
        guard path.hasPrefix(displayPrefix) else { return nil }
        return String(path.dropFirst(displayPrefix.count))
    }
}
