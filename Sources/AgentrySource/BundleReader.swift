import AgentryCore
import AgentryGit
import AgentryModel
import AgentryPlan
import AgentryRender

extension CommitReader {
    /// Decodes the files the named agents and the resources they use are declared in.
    func catalog(of names: Set<String>, in loaded: LoadedCommit) throws -> Catalog? {
        guard !names.isEmpty, let commit = ObjectID(hex: loaded.commit) else { return nil }
        let index = loaded.report.index
        // By index: a filter would copy each of 10,000 summaries to look at its name.
        let agents = index.agents.indices.filter { names.contains(index.agents[$0].name) }.map { index.agents[$0] }
        var files = Set(agents.map(\.origin.file))
        let wantedResources = Set(
            agents.flatMap { agent in
                [agent.harness, agent.model, agent.environment].compactMap { $0?.name }
                    + agent.fallbackModels.map(\.name)
            })
        for resource in index.harnesses + index.models + index.environments
        where wantedResources.contains(resource.name) {
            files.insert(resource.origin.file)
        }
        var entries: [String: SourceTree.Entry] = [:]
        var paths: [String] = []
        try SourceError.reading {
            for file in files {
                guard let entry = try git.entry(commit: commit, path: file), case .file = entry.kind else { continue }
                let blob = try git.blobs([entry.id], limit: SourceTree.maxFileSize)[0]
                let path = String(file.dropFirst(loaded.displayPrefix.count))
                entries[path] = .file(size: blob.size, content: blob.content, id: "\(entry.id)")
                paths.append(path)
            }
        }
        return RepositoryValidator.decode(paths, in: SourceTree(entries: entries), displayPrefix: loaded.displayPrefix)
    }

    /// The named agent at the loaded commit, read for its machine. The commit must be valid.
    public func bundle(_ name: String, in loaded: LoadedCommit) throws -> AgentBundle {
        guard let wanted = loaded.desired.agents[name] else {
            throw SourceError(.notFound, "the repository at \(loaded.commit.prefix(12)) has no agent \(name)")
        }
        guard let catalog = try catalog(of: [name], in: loaded), let commit = ObjectID(hex: loaded.commit),
            let agent = catalog.agents.first(where: { $0.metadata.name == name })
        else { throw SourceError(.notFound, "cannot read the agent \(name) at \(loaded.commit.prefix(12))") }
        guard
            let harness = agent.harness.flatMap({ reference in
                catalog.harnesses.first { $0.metadata.name == reference.name }
            })
        else { throw SourceError(.notFound, "the agent \(name) names no harness that exists") }
        let model = agent.model.flatMap { reference in catalog.models.first { $0.metadata.name == reference.name } }
        let environment = agent.environment.flatMap { reference in
            catalog.environments.first { $0.metadata.name == reference.name }
        }
        let models = Dictionary(catalog.models.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let fields = ResolvedFields.of(
            agent, harness: harness, models: models, environment: environment, parts: wanted.parts)

        func repositoryPath(_ relative: String) -> String { loaded.displayPrefix + relative }
        var instructions: [UInt8]?
        return try SourceError.reading {
            switch agent.instructions {
            case .inline(let text)?:
                instructions = Array(text.utf8)
            case .file(let file, _)?:
                var declaring = agent.origin.file
                if !loaded.displayPrefix.isEmpty, declaring.hasPrefix(loaded.displayPrefix) {
                    declaring = String(declaring.dropFirst(loaded.displayPrefix.count))
                }
                let folder = declaring.split(separator: "/").dropLast().joined(separator: "/")
                guard let path = SourceTree.normalize(folder.isEmpty ? file : folder + "/" + file),
                    let entry = try git.entry(commit: commit, path: repositoryPath(path)), case .file = entry.kind
                else { throw SourceError(.notFound, "the instructions file \(file) of \(name) is missing") }
                instructions = try git.blob(entry.id)
            case nil:
                instructions = nil
            }
            var skills: [(name: String, files: [BundleFile])] = []
            for skill in agent.skills {
                var files: [BundleFile] = []
                for entry in try git.listTree(commit: commit, subpath: repositoryPath("skills/" + skill.name)) {
                    switch entry.kind {
                    case .file(let executable):
                        files.append(
                            BundleFile(
                                path: entry.path, mode: executable ? 0o755 : 0o644, bytes: try git.blob(entry.id)))
                    case .symlink:
                        let target = String(decoding: try git.blob(entry.id), as: UTF8.self)
                        files.append(BundleFile(path: entry.path, mode: 0o777, bytes: [], linkTarget: target))
                    case .directory, .submodule:
                        continue
                    }
                }
                skills.append((skill.name, files))
            }
            var bundle = AgentBundle(
                name: name, commit: loaded.commit, revision: wanted.revision, agent: agent, harness: harness,
                model: model,
                environment: environment, fields: fields, instructions: instructions, skills: skills)
            bundle.fallbackModels = agent.fallbackModels.compactMap { models[$0.name] }
            return bundle
        }
    }
}
