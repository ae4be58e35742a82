import AgentryYAML
import Dispatch

/// The outcome of validating an agent repository.
public struct ValidationReport: Sendable {
    /// Sorted by file, then position.
    public var diagnostics: [Diagnostic]
    /// Every resource, summarised: what cross-file checks and revisions use.
    public var index: RepositoryIndex
    /// The full resources of the files parsed in this run; files served from a `FileCache` are only in `index`.
    public var catalog: Catalog
    /// Resource files and skill manifests checked.
    public var filesChecked: Int
    /// Per-file results by path, to cache for the next run.
    public var fileResults: [String: FileResult]

    public init(
        diagnostics: [Diagnostic], index: RepositoryIndex, catalog: Catalog, filesChecked: Int,
        fileResults: [String: FileResult]
    ) {
        self.diagnostics = diagnostics
        self.index = index
        self.catalog = catalog
        self.filesChecked = filesChecked
        self.fileResults = fileResults
    }

    public var errorCount: Int { diagnostics.lazy.filter { $0.severity == .error }.count }
    public var warningCount: Int { diagnostics.lazy.filter { $0.severity == .warning }.count }
    public var isValid: Bool { errorCount == 0 }
}

/// Validates a whole agent repository: every file against its schema, then everything across files.
public enum RepositoryValidator {
    /// Validates `tree`. Diagnostics name files as `displayPrefix + path` (the prefix is the agent
    /// repository's folder inside a larger git repository, so paths are relative to the git root).
    /// Files whose blob id matches an entry of `cache` are not parsed again.
    public static func validate(_ tree: SourceTree, displayPrefix: String = "", cache: FileCache? = nil)
        -> ValidationReport
    {
        let resourcePaths = tree.entries.keys.filter { path in
            guard SourceTree.isResourceFile(path), case .file? = tree.entries[path] else { return false }
            return true
        }.sorted()
        let results = parallelMap(resourcePaths) { path in
            cache?.result(for: path, in: tree)
                ?? DocumentDecoder.decodeResourceFile(
                    path: path, display: displayPrefix + path, entry: tree.entries[path]!)
        }
        var diagnostics: [Diagnostic] = []
        var catalog = Catalog()
        var index = RepositoryIndex()
        var fileResults: [String: FileResult] = [:]
        fileResults.reserveCapacity(resourcePaths.count)
        for (path, result) in zip(resourcePaths, results) {
            diagnostics += result.diagnostics
            index.agents += result.agents
            index.add(result.resources)
            catalog.add(result.decoded)
            fileResults[path] = result
        }
        let skills = SkillReader.readAll(tree, displayPrefix: displayPrefix, cache: cache)
        diagnostics += skills.diagnostics
        catalog.skills = skills.skills
        index.skills = skills.skillNames
        fileResults.merge(skills.manifests) { _, new in new }
        var cross = CrossChecker(
            tree: tree, index: index, skillFolders: skills.folderNames, displayPrefix: displayPrefix)
        cross.run()
        diagnostics += cross.diagnostics
        return ValidationReport(
            diagnostics: diagnostics.sorted(), index: index, catalog: catalog,
            filesChecked: resourcePaths.count + skills.manifests.count, fileResults: fileResults)
    }
}

extension RepositoryValidator {
    /// One resource file's parse result (its content must be loaded in `entry`).
    public static func decodeFile(_ path: String, entry: SourceTree.Entry, displayPrefix: String) -> FileResult {
        DocumentDecoder.decodeResourceFile(path: path, display: displayPrefix + path, entry: entry)
    }

    /// The full resources declared in the given files (whose content must be loaded in `tree`).
    public static func decode(_ paths: [String], in tree: SourceTree, displayPrefix: String) -> Catalog {
        var catalog = Catalog()
        for path in paths.sorted() {
            guard let entry = tree.entries[path] else { continue }
            let result = DocumentDecoder.decodeResourceFile(path: path, display: displayPrefix + path, entry: entry)
            catalog.add(result.decoded)
        }
        return catalog
    }
}

extension RepositoryValidator {
    /// Warnings for an agent's fallback models that speak another API than its model: the gateway
    /// retries a request on a fallback as it is, so it skips them (the incremental loader asks too).
    public static func fallbackMismatches(_ agent: AgentSummary, models: (String) -> ResourceSummary?)
        -> [Diagnostic]
    {
        guard let primary = agent.model.flatMap({ models($0.name) }), let api = primary.api else { return [] }
        return agent.fallbackModels.enumerated().compactMap { index, reference in
            guard let fallback = models(reference.name), let other = fallback.api, other != api else { return nil }
            return Diagnostic(
                .warning, .fallbackAPIMismatch, file: agent.origin.file, at: reference.mark,
                "spec.fallbackModels[\(index)]: model \"\(fallback.name)\" speaks the \(other.rawValue) API and \"\(primary.name)\" the \(api.rawValue) API; the model gateway does not translate between them and skips this fallback"
            )
        }
    }
}

extension RepositoryValidator {
    /// Errors for an agent's tools and MCP servers that its harness cannot express.
    public static func toolMismatches(_ agent: AgentSummary, harness: ResourceSummary) -> [Diagnostic] {
        guard let type = harness.harnessType else { return [] }
        return agent.toolProblems(for: type).map { problem in
            Diagnostic(
                .error, .unsupportedTool, file: agent.origin.file, at: problem.mark,
                problem.message + " (harness \"\(harness.name)\", type \(type.rawValue))")
        }
    }
}

extension Catalog {
    mutating func add(_ resources: [DecodedResource]) {
        for resource in resources {
            switch resource {
            case .agent(let agent): agents.append(agent)
            case .harness(let harness): harnesses.append(harness)
            case .model(let model): models.append(model)
            case .environment(let environment): environments.append(environment)
            }
        }
    }
}

/// Maps in parallel over all cores, keeping order.
func parallelMap<T: Sendable, R: Sendable>(_ items: [T], _ transform: @Sendable (T) -> R) -> [R] {
    if items.count < 64 { return items.map(transform) }
    let results = UnsafeMutableBufferPointer<R?>.allocate(capacity: items.count)
    results.initialize(repeating: nil)
    defer { results.deallocate() }
    nonisolated(unsafe) let output = results
    let chunk = 32
    let chunks = (items.count + chunk - 1) / chunk
    items.withUnsafeBufferPointer { input in
        nonisolated(unsafe) let input = input
        DispatchQueue.concurrentPerform(iterations: chunks) { index in
            for position in (index * chunk)..<min(items.count, (index + 1) * chunk) {
                output[position] = transform(input[position])
            }
        }
    }
    return results.map { $0! }
}

/// Checks that need the whole repository: names, references, files, skills, symlinks.
struct CrossChecker {
    let tree: SourceTree
    let index: RepositoryIndex
    let skillFolders: Set<String>
    let displayPrefix: String
    var diagnostics: [Diagnostic] = []

    init(tree: SourceTree, index: RepositoryIndex, skillFolders: Set<String>, displayPrefix: String) {
        self.tree = tree
        self.index = index
        self.skillFolders = skillFolders
        self.displayPrefix = displayPrefix
    }

    mutating func report(_ code: Diagnostic.Code, _ origin: Origin, _ message: String) {
        diagnostics.append(Diagnostic(.error, code, file: origin.file, at: origin.mark, message))
    }

    mutating func run() {
        let harnesses = names(index.harnesses.map { ($0.name, $0.origin) }, kind: .harness)
        let models = names(index.models.map { ($0.name, $0.origin) }, kind: .model)
        let environments = names(index.environments.map { ($0.name, $0.origin) }, kind: .environment)
        _ = names(index.agents.map { ($0.name, $0.origin) }, kind: .agent)
        let harnessByName = Dictionary(index.harnesses.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let modelByName = Dictionary(index.models.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let skillNames = skillFolders
        let sortedSkillNames = skillNames.sorted()

        for agent in index.agents {
            let file = agent.origin.file
            if let harness = agent.harness {
                resolve(harness, in: harnesses, kind: .harness, field: "spec.harness", file: file)
            }
            if let model = agent.model { resolve(model, in: models, kind: .model, field: "spec.model", file: file) }
            for (index, fallback) in agent.fallbackModels.enumerated() {
                resolve(fallback, in: models, kind: .model, field: "spec.fallbackModels[\(index)]", file: file)
            }
            if let environment = agent.environment {
                resolve(environment, in: environments, kind: .environment, field: "spec.environment", file: file)
            }
            for (index, skill) in agent.skills.enumerated() where !skillNames.contains(skill.name) {
                let hint = Suggest.hint(skill.name, sortedSkillNames)
                report(
                    .unresolvedReference, Origin(file: file, mark: skill.mark),
                    "spec.skills[\(index)]: no skill named \"\(skill.name)\" (expected a folder skills/\(skill.name)/ with a SKILL.md)"
                        + hint)
            }
            // The harness must speak every model's API.
            if let harnessRef = agent.harness, let harness = harnessByName[harnessRef.name], !harness.apis.isEmpty {
                let candidates =
                    [agent.model].compactMap { $0 }.map { ("spec.model", $0) }
                    + agent.fallbackModels.enumerated().map { ("spec.fallbackModels[\($0.offset)]", $0.element) }
                for (field, reference) in candidates {
                    guard let model = modelByName[reference.name], let api = model.api,
                        !harness.apis.contains(api)
                    else { continue }
                    report(
                        .unsupportedAPI, Origin(file: file, mark: reference.mark),
                        "\(field): model \"\(model.name)\" speaks the \(api.rawValue) API, which harness \"\(harness.name)\" does not support (it supports \(harness.apis.map(\.rawValue).joined(separator: ", ")))"
                    )
                }
            }
            diagnostics += RepositoryValidator.fallbackMismatches(agent) { modelByName[$0] }
            if let harnessRef = agent.harness, let harness = harnessByName[harnessRef.name] {
                diagnostics += RepositoryValidator.toolMismatches(agent, harness: harness)
            }
            if let instructions = agent.instructionsFile {
                checkInstructions(instructions.name, mark: instructions.mark, agentFile: file)
            }
        }
        checkSymlinks()
    }

    /// Records names per kind, reporting duplicates; returns the known names.
    mutating func names(_ named: [(String, Origin)], kind: Kind) -> [String: Origin] {
        var seen: [String: Origin] = [:]
        for (name, origin) in named where !name.isEmpty {
            if let first = seen[name] {
                report(
                    .duplicateName, origin,
                    "\(kind.rawValue) \"\(name)\" is already defined at \(first.file):\(first.mark.line):\(first.mark.column); names must be unique per kind"
                )
            } else {
                seen[name] = origin
            }
        }
        return seen
    }

    mutating func resolve(_ reference: Reference, in names: [String: Origin], kind: Kind, field: String, file: String) {
        guard names[reference.name] == nil else { return }
        let known = names.keys.sorted()
        var message = "\(field): no \(kind.rawValue) named \"\(reference.name)\""
        if let suggestion = Suggest.closest(reference.name, known) {
            message += "; did you mean \"\(suggestion)\"?"
        } else if known.isEmpty {
            message += "; the repository defines no \(kind.rawValue)"
        } else if known.count <= 8 {
            message += "; defined: " + known.joined(separator: ", ")
        }
        report(.unresolvedReference, Origin(file: file, mark: reference.mark), message)
    }

    func localPath(_ display: String) -> String {
        String(display.dropFirst(displayPrefix.count))
    }

    mutating func checkInstructions(_ path: String, mark: SourceMark, agentFile: String) {
        let origin = Origin(file: agentFile, mark: mark)
        if path.hasPrefix("/") {
            report(
                .pathEscape, origin,
                "spec.instructions.file: \"\(path)\" is absolute; expected a path relative to \(agentFile)")
            return
        }
        let directory = localPath(agentFile).split(separator: "/").dropLast().joined(separator: "/")
        let joined = directory.isEmpty ? path : directory + "/" + path
        switch tree.resolve(joined) {
        case .file:
            return
        case .escapes:
            report(.pathEscape, origin, "spec.instructions.file: \"\(path)\" leads outside the repository")
        case .loop:
            report(.pathEscape, origin, "spec.instructions.file: \"\(path)\" goes through a symlink loop")
        case .directory(let resolved):
            report(
                .instructionsMissing, origin,
                "spec.instructions.file: \(displayPrefix + resolved) is a folder; expected a file")
        case .missing:
            let shown = SourceTree.normalize(joined).map { displayPrefix + $0 } ?? joined
            report(
                .instructionsMissing, origin,
                "spec.instructions.file: \(shown) does not exist (paths are relative to the agent's YAML file)")
        }
    }

    mutating func checkSymlinks() {
        for (path, entry) in tree.entries {
            guard case .symlink(let target) = entry else { continue }
            switch tree.resolve(path) {
            case .escapes:
                report(
                    .pathEscape, Origin(file: displayPrefix + path, mark: .start),
                    "symlink to \"\(target)\" leads outside the repository; agentry never follows it")
            case .loop:
                report(
                    .pathEscape, Origin(file: displayPrefix + path, mark: .start), "symlink loop through \"\(target)\"")
            default:
                continue
            }
        }
    }
}
