import AgentryModel

/// Builds an in-memory source tree; parent folders are added for every file.
func makeTree(_ files: [String: String], symlinks: [String: String] = [:]) -> SourceTree {
    var entries: [String: SourceTree.Entry] = [:]
    func addParents(_ path: String) {
        var parts = path.split(separator: "/").dropLast()
        while !parts.isEmpty {
            entries[parts.joined(separator: "/")] = .directory
            parts = parts.dropLast()
        }
    }
    for (path, content) in files {
        addParents(path)
        let bytes = Array(content.utf8)
        entries[path] = .file(size: bytes.count, content: SourceTree.needsContent(path) ? bytes : nil)
    }
    for (path, target) in symlinks {
        addParents(path)
        entries[path] = .symlink(target: target)
    }
    return SourceTree(entries: entries)
}

func validate(_ files: [String: String], symlinks: [String: String] = [:]) -> ValidationReport {
    RepositoryValidator.validate(makeTree(files, symlinks: symlinks))
}

extension ValidationReport {
    func codes(_ severity: Diagnostic.Severity = .error) -> [String] {
        diagnostics.filter { $0.severity == severity }.map(\.code.rawValue)
    }

    func first(_ code: Diagnostic.Code) -> Diagnostic? {
        diagnostics.first { $0.code == code }
    }
}

enum Fixture {
    static let harness = """
        apiVersion: agentry/v1
        kind: Harness
        metadata: {name: hermes}
        spec:
          type: hermes
          version: "0.19.0"
          command: ["hermes", "-z", "{{prompt}}"]
          modelEnv: {OPENAI_BASE_URL: "{{model.baseUrl}}"}
          supports: {apis: [chat-completions, messages]}

        """

    static let models = """
        apiVersion: agentry/v1
        kind: Model
        metadata: {name: sonnet}
        spec:
          provider: anthropic
          name: claude-sonnet-4-5
          api: messages
          baseUrl: https://api.anthropic.com
          credentials: {ref: anthropic/api-key}
        ---
        apiVersion: agentry/v1
        kind: Model
        metadata: {name: gpt}
        spec:
          provider: openai
          name: gpt-5
          api: responses
          baseUrl: https://api.openai.com/v1

        """

    static let environment = """
        apiVersion: agentry/v1
        kind: Environment
        metadata: {name: python-dev}
        spec:
          base: debian-12
          resources: {cpus: 1, memory: 512Mi, disk: 4Gi}
          network: {egress: none}

        """

    static let skill = """
        ---
        name: gh-triage
        description: Triage GitHub issues.
        ---
        # Body

        """

    static func agent(name: String = "triage", spec: String = "") -> String {
        """
        apiVersion: agentry/v1
        kind: Agent
        metadata:
          name: \(name)
          owner: platform-team
        spec:
          instructions: {file: triage/INSTRUCTIONS.md}
          harness: hermes
          model: sonnet
          environment: python-dev
          skills: [gh-triage]
        \(spec.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))

        """
    }

    /// A valid repository; override or add files to break it.
    static func repository(_ overrides: [String: String] = [:]) -> [String: String] {
        var files = [
            "agents/triage.yaml": agent(),
            "agents/triage/INSTRUCTIONS.md": "Triage issues.\n",
            "harnesses/hermes.yaml": harness,
            "models/models.yaml": models,
            "environments/python.yaml": environment,
            "skills/gh-triage/SKILL.md": skill,
        ]
        files.merge(overrides) { _, new in new }
        return files
    }
}
