import AgentryYAML

/// Reads `skills/<name>/SKILL.md` (Agent Skills format): YAML front matter between `---` lines,
/// then Markdown. Where the specification and real-world skills disagree (longer descriptions,
/// extra keys), the skill is accepted with a `skill-spec` warning.
enum SkillReader {
    struct Result {
        var skills: [Skill] = []
        var skillNames: [String] = []
        var diagnostics: [Diagnostic] = []
        var manifests: [String: FileResult] = [:]
        /// Every skill folder, valid or not: a broken skill is reported once, not again by each agent using it.
        var folderNames: Set<String> = []
    }

    static let specDescriptionLimit = 1024
    static let specCompatibilityLimit = 500

    static func readAll(_ tree: SourceTree, displayPrefix: String, cache: FileCache?) -> Result {
        var result = Result()
        let folders = tree.entries.keys.filter { path in
            guard path.hasPrefix("skills/") else { return false }
            let name = path.dropFirst("skills/".count)
            return !name.isEmpty && !name.contains("/") && !name.hasPrefix(".")
        }.sorted()
        // Skill files are placed in the machine through an archive and the file system, whose
        // paths end at 4096 bytes, the home and the skills folder in front. Found in one pass over
        // the tree (not one per skill), by the skill folder they are in.
        var tooLong: [String: [String]] = [:]
        for (path, entry) in tree.entries where path.utf8.count > maximumPath && path.hasPrefix("skills/") {
            if case .directory = entry { continue }
            let folder = path.split(separator: "/", maxSplits: 2).prefix(2).joined(separator: "/")
            tooLong[folder, default: []].append(path)
        }
        for folder in folders {
            let name = String(folder.dropFirst("skills/".count))
            let manifest = folder + "/SKILL.md"
            let display = displayPrefix + manifest
            switch tree.entries[folder] {
            case .directory?:
                result.folderNames.insert(name)
            case .symlink?:
                if case .directory = tree.resolve(folder) {
                    result.diagnostics.append(
                        Diagnostic(
                            .error, .skillFrontMatter, file: displayPrefix + folder, at: .start,
                            "skill folder \(folder) is a symlink; agentry reads skills from real folders only"))
                }
                continue  // links leading outside are reported by the symlink check
            default:
                continue  // a stray file under skills/ is not a skill
            }
            for path in (tooLong[folder] ?? []).sorted() {
                result.diagnostics.append(
                    Diagnostic(
                        .error, .skillSpec, file: displayPrefix + path, at: .start,
                        "the path of this skill file is \(path.utf8.count) bytes; files placed in a machine take at most \(maximumPath)"
                    ))
            }
            guard let entry = tree.entries[manifest], case .file = entry else {
                result.diagnostics.append(
                    Diagnostic(
                        .error, .skillFrontMatter, file: displayPrefix + folder, at: .start,
                        "skill folder \(folder) has no SKILL.md; expected \(manifest) with YAML front matter (name, description)"
                    ))
                continue
            }
            var manifestResult: FileResult
            if let cached = cache?.result(for: manifest, in: tree) {
                manifestResult = cached
            } else {
                manifestResult = FileResult()
                if let skill = read(
                    name: name, folder: folder, display: display, entry: entry, into: &manifestResult.diagnostics)
                {
                    manifestResult.skill = skill
                    manifestResult.skillName = skill.name
                }
            }
            result.diagnostics += manifestResult.diagnostics
            if let skill = manifestResult.skill { result.skills.append(skill) }
            if let skillName = manifestResult.skillName { result.skillNames.append(skillName) }
            result.manifests[manifest] = manifestResult
        }
        return result
    }

    /// The longest path of a skill file in the repository (the guest's limit is 4096 bytes, with
    /// the agent's home and the harness's skills folder in front).
    static let maximumPath = 3800

    static func read(
        name: String, folder: String, display: String, entry: SourceTree.Entry, into diagnostics: inout [Diagnostic]
    )
        -> Skill?
    {
        guard let bytes = DocumentDecoder.readableText(display: display, entry: entry, into: &diagnostics) else {
            return nil
        }
        guard let frontMatter = extractFrontMatter(bytes) else {
            diagnostics.append(
                Diagnostic(
                    .error, .skillFrontMatter, file: display, at: .start,
                    "SKILL.md has no YAML front matter; expected the file to start with a line `---`, the fields name and description, and a closing `---`"
                ))
            return nil
        }
        var root: YAMLNode?
        let composed = frontMatter.withUnsafeBufferPointer { YAMLComposer.compose($0) }
        switch composed {
        case .failure(var error):
            error.mark.line += 1
            diagnostics.append(DocumentDecoder.syntaxDiagnostic(error, display: display, bytes: bytes))
            return nil
        case .success(let documents):
            root = documents.first?.root.map { shifted($0) }
        }
        guard let root, root.pairs != nil else {
            let got = root.map(ShapeChecker.describe) ?? "nothing"
            diagnostics.append(
                Diagnostic(
                    .error, .notAMapping, file: display, at: root?.mark ?? SourceMark(line: 2, column: 1),
                    "front matter: expected a mapping with name and description, got \(got)"))
            return nil
        }
        var checker = ShapeChecker(file: display)
        checker.unknownField = (.warning, .skillSpec)
        checker.check(root, .object(ObjectShape.skillFrontMatter), path: "front matter")
        DocumentDecoder.scanForCredentials(root, path: "front matter", checker: &checker)
        diagnostics += checker.diagnostics
        if let declared = root["name"]?.stringValue, declared != name {
            diagnostics.append(
                Diagnostic(
                    .error, .skillNameMismatch, file: display, at: root["name"]!.mark,
                    "front matter.name: \"\(declared)\" differs from the folder name \"\(name)\"; they must be equal"))
        }
        let description = root["description"]?.stringValue ?? ""
        if description.unicodeScalars.count > specDescriptionLimit {
            diagnostics.append(
                Diagnostic(
                    .warning, .skillSpec, file: display, at: root["description"]!.mark,
                    "front matter.description: \(description.unicodeScalars.count) characters, over the Agent Skills specification's \(specDescriptionLimit); accepted, but some harnesses may truncate it"
                ))
        }
        if let compatibility = root["compatibility"]?.stringValue,
            compatibility.unicodeScalars.count > specCompatibilityLimit
        {
            diagnostics.append(
                Diagnostic(
                    .warning, .skillSpec, file: display, at: root["compatibility"]!.mark,
                    "front matter.compatibility: over the specification's \(specCompatibilityLimit) characters; accepted"
                ))
        }
        return Skill(
            name: name, path: folder, description: description,
            license: root["license"]?.stringValue,
            compatibility: root["compatibility"]?.stringValue,
            metadata: root["metadata"]?.stringMap ?? [:],
            allowedTools: root["allowed-tools"]?.stringValue)
    }

    /// The front matter's bytes (between the opening `---` line and the closing one), or nil.
    static func extractFrontMatter(_ bytes: [UInt8]) -> [UInt8]? {
        var start = 0
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { start = 3 }
        let lines = bytes[start...].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        guard let first = lines.first, trimmed(first) == Array("---".utf8) else { return nil }
        var body: [UInt8] = []
        for line in lines.dropFirst() {
            if trimmed(line) == Array("---".utf8) { return body }
            body += line
            body.append(UInt8(ascii: "\n"))
        }
        return nil
    }

    static func trimmed(_ line: ArraySlice<UInt8>) -> [UInt8] {
        var slice = line
        while let last = slice.last, last == UInt8(ascii: "\r") || last == UInt8(ascii: " ") {
            slice = slice.dropLast()
        }
        return Array(slice)
    }

    /// Moves marks one line down: the front matter starts on the file's second line.
    static func shifted(_ node: YAMLNode) -> YAMLNode {
        var copy = node
        copy.mark.line += 1
        switch node.content {
        case .scalar: break
        case .sequence(let items): copy.content = .sequence(items.map(shifted))
        case .mapping(let pairs):
            copy.content = .mapping(pairs.map { YAMLPair(key: shifted($0.key), value: shifted($0.value)) })
        }
        return copy
    }
}
