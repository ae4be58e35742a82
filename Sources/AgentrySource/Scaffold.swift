import AgentryGit
import AgentryModel
import Foundation

/// `agentry init`: a new git repository with a starter layout that validates clean.
public enum Scaffold {
    /// The files of the starter layout, by path.
    public static func files(owner: String) -> [(path: String, content: String)] {
        let schemaLine = { (depth: Int) in
            "# yaml-language-server: $schema=\(String(repeating: "../", count: depth)).agentry/schemas/resource.schema.json\n"
        }
        var files: [(String, String)] = [
            (
                "agents/hello.yaml",
                schemaLine(1) + """
                    apiVersion: agentry/v1
                    kind: Agent
                    metadata:
                      name: hello
                      owner: \(owner)
                    spec:
                      description: Says hello and writes a greeting file; a first agent to change.
                      instructions: {file: hello/INSTRUCTIONS.md}
                      harness: shell
                      model: local
                      environment: minimal
                      skills: [greeting]
                      run:
                        prompt: Say hello.
                        timeout: 2m
                      lifecycle: active
                      deletionPolicy: retain

                    """
            ),
            (
                "agents/hello/INSTRUCTIONS.md",
                """
                # hello

                Greet whoever asks, in one sentence, and write the greeting to `out/greeting.txt`.

                """
            ),
            (
                "harnesses/shell.yaml",
                schemaLine(1) + """
                    apiVersion: agentry/v1
                    kind: Harness
                    metadata:
                      name: shell
                    spec:
                      # A plain shell script: needs no network and no framework, handy for a first run.
                      type: shell
                      command: ["/bin/sh", "-c", "mkdir -p out && echo \\"$AGENTRY_PROMPT\\" | tee out/greeting.txt"]
                      env:
                        AGENTRY_PROMPT: "{{prompt}}"
                      instructionsFile: AGENTS.md
                      skillsDir: skills
                      supports:
                        apis: [chat-completions, messages, responses]

                    """
            ),
            (
                "models/local.yaml",
                schemaLine(1) + """
                    apiVersion: agentry/v1
                    kind: Model
                    metadata:
                      name: local
                    spec:
                      # Any OpenAI-compatible server on the host (llama.cpp, vLLM, Ollama); no key needed.
                      provider: openai-compatible
                      name: llama-3.1-8b-instruct
                      api: chat-completions
                      baseUrl: http://127.0.0.1:8080/v1

                    """
            ),
            (
                "environments/minimal.yaml",
                schemaLine(1) + """
                    apiVersion: agentry/v1
                    kind: Environment
                    metadata:
                      name: minimal
                    spec:
                      base: minimal
                      resources: {cpus: 1, memory: 256Mi, disk: 1Gi}
                      network: {egress: none}

                    """
            ),
            (
                "skills/greeting/SKILL.md",
                """
                ---
                name: greeting
                description: Writes short, friendly greetings. Use when asked to say hello or welcome someone.
                ---

                # Greeting

                Keep greetings to one sentence. Use the person's name when you know it.

                """
            ),
            (
                ".pre-commit-config.yaml",
                """
                # Runs `agentry validate` on every commit (https://pre-commit.com).
                repos:
                  - repo: local
                    hooks:
                      - id: agentry-validate
                        name: agentry validate
                        entry: agentry validate --dir .
                        language: system
                        pass_filenames: false
                        files: \\.(ya?ml|md)$

                """
            ),
            (
                "README.md",
                """
                # Agents

                This repository declares AI agents for agentry. Every change is reviewed in a pull request;
                `agentry validate` checks it.

                - `agents/`: one YAML file per agent, with its instructions beside it.
                - `harnesses/`, `models/`, `environments/`: what runs the agents, which model they use, and
                  the machines they run on.
                - `skills/<name>/SKILL.md`: skills in the Agent Skills format.
                - `.agentry/schemas/`: JSON Schemas for editor completion (the `yaml-language-server` line at
                  the top of each file points at them).

                Check it: `agentry validate` (the committed state) or `agentry validate --dir .` (the work tree).

                """
            ),
        ]
        for name in JSONSchema.names {
            if let document = JSONSchema.document(named: name) {
                files.append((".agentry/schemas/\(name).schema.json", document.rendered() + "\n"))
            }
        }
        return files
    }

    /// Creates the repository at `path` (which must not exist or be an empty folder) and commits the
    /// starter layout. Returns the commit id.
    @discardableResult
    public static func create(at path: String, owner: String = "platform-team") throws -> String {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw SourceError(.invalidPath, "\(path) exists and is not a folder") }
            let contents = (try? manager.contentsOfDirectory(atPath: path)) ?? []
            guard contents.isEmpty else {
                throw SourceError(.invalidPath, "\(path) is not empty; agentry init only creates new repositories")
            }
        }
        guard isPlainText(owner) else {
            throw SourceError(.invalidPath, "--owner must be a plain single line (no ':' or '#')")
        }
        func author() -> Signature {
            let user = Signature.user(environment: ProcessInfo.processInfo.environment)
            return Signature(name: user.name ?? "agentry init", email: user.email ?? "agentry@localhost")
        }
        do {
            let repository = try GitRepository.create(at: path)
            let root = repository.workdir ?? path
            for (relative, content) in files(owner: owner) {
                let url = URL(fileURLWithPath: root).appendingPathComponent(relative)
                try manager.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(content.utf8).write(to: url)
            }
            let commit = try repository.commitWorkTree(
                message: "Start an agentry repository\n\nCreated by `agentry init`.",
                author: author())
            return "\(commit)"
        } catch let error as GitError {
            throw SourceError(.git, error.description, cause: error)
        } catch let error as SourceError {
            throw error
        } catch {
            throw SourceError(.io, "could not write the starter files in \(path): \(error.localizedDescription)")
        }
    }
}

extension Scaffold {
    /// An owner is written unquoted into YAML: keep it to one line without YAML indicators.
    static func isPlainText(_ text: String) -> Bool {
        !text.isEmpty && !text.contains("\n") && !text.contains(":") && !text.contains("#")
            && !text.hasPrefix("-") && !text.hasPrefix("{") && !text.hasPrefix("[")
    }
}
