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
                      # On a real harness (harness: claude-code, codex or hermes, with a model of its
                      # API), say once what it may use; agentry writes it into that harness's settings:
                      # tools: {shell: {deny: ["git push *"]}, edit: allow, web: deny}
                      # mcpServers:
                      #   - {name: github, command: github-mcp-server, args: [stdio], env: {GITHUB_PERSONAL_ACCESS_TOKEN: {ref: github/token}}}
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
        for harness in bundledHarnesses {
            files.append(("harnesses/\(harness.name).yaml", schemaLine(1) + harness.body))
        }
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

extension Scaffold {
    /// The bundled real harnesses, as `examples/quickstart/harnesses/` has them (a test keeps the
    /// two the same): `agentry init` writes them beside the shell harness, ready for an agent to use.
    public static let bundledHarnesses: [(name: String, body: String)] = [
        (
            "claude-code",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata:
              name: claude-code
              owner: platform-team
            spec:
              # Claude Code, headless: `claude -p PROMPT` runs one turn and prints its events as JSON lines
              # (stream-json). PyPI's claude-agent-sdk carries the CLI itself; agentry installs it on the host
              # into a layer the machine mounts. The machine talks to the model only through agentry's gateway.
              type: claude-code
              version: "2.1.327"
              install:
                pip: ["claude-agent-sdk==0.2.184"]
                script: |
                  sdk="$(/opt/agentry/venv/bin/python -c 'import claude_agent_sdk, os; print(os.path.dirname(claude_agent_sdk.__file__))')"
                  ln -sf "$sdk/_bundled/claude" /opt/agentry/venv/bin/claude
              command:
                - claude
                - -p
                - "{{prompt}}"
                - --output-format
                - stream-json
                - --verbose
                - --model
                - "{{model.name}}"
                - --permission-mode
                - dontAsk
              # `agentry run --continue`: the latest session in the home (sessions live in CLAUDE_CONFIG_DIR).
              continueCommand:
                - claude
                - -p
                - "{{prompt}}"
                - --continue
                - --output-format
                - stream-json
                - --verbose
                - --model
                - "{{model.name}}"
                - --permission-mode
                - dontAsk
              env:
                # Its settings, sessions and transcripts live on the environment disk.
                CLAUDE_CONFIG_DIR: "{{agent.home}}/.claude-home"
                CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1"
                DISABLE_AUTOUPDATER: "1"
              modelEnv:
                # Claude Code appends /v1/messages: a Messages model's baseUrl is the API's root.
                ANTHROPIC_BASE_URL: "{{model.baseUrl}}"
                ANTHROPIC_API_KEY: "{{model.apiKey}}"
              instructionsFile: CLAUDE.md
              skillsDir: .claude/skills
              stateDirs: [.claude-home]
              supports:
                apis: [messages]

            """
        ),
        (
            "codex",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata:
              name: codex
              owner: platform-team
            spec:
              # OpenAI's Codex CLI, headless: `codex exec PROMPT --json` runs one turn and prints its events as
              # JSON lines. PyPI's openai-codex-cli-bin carries the pinned binary. It speaks the Responses API
              # only. agentry adds approval_policy, sandbox_mode, web_search and [mcp_servers] to config.toml
              # from each agent's spec.tools and spec.mcpServers (the machine is the sandbox: by default
              # Codex's own is off and nothing waits for approval).
              type: codex
              version: "0.163.0"
              install:
                pip: ["openai-codex-cli-bin==0.163.0"]
                script: |
                  package="$(/opt/agentry/venv/bin/python -c 'import codex_cli_bin, os; print(os.path.dirname(codex_cli_bin.__file__))')"
                  ln -sf "$package/bin/codex" /opt/agentry/venv/bin/codex
              command: ["codex", "exec", "{{prompt}}", "--json", "--skip-git-repo-check"]
              # `agentry run --continue`: the latest session started in the home (CODEX_HOME/sessions).
              continueCommand: ["codex", "exec", "resume", "--last", "--json", "--skip-git-repo-check", "{{prompt}}"]
              env:
                CODEX_HOME: "{{agent.home}}/.codex"
              modelEnv:
                AGENTRY_MODEL_KEY: "{{model.apiKey}}"
              configFiles:
                - path: .codex/config.toml
                  content: |
                    model = "{{model.name}}"
                    model_provider = "agentry"

                    [model_providers.agentry]
                    name = "agentry model gateway"
                    base_url = "{{model.baseUrl}}"
                    env_key = "AGENTRY_MODEL_KEY"
                    wire_api = "responses"
              instructionsFile: AGENTS.md
              skillsDir: .agents/skills
              stateDirs: [.codex]
              supports:
                apis: [responses]

            """
        ),
        (
            "hermes",
            """
            apiVersion: agentry/v1
            kind: Harness
            metadata:
              name: hermes
              owner: platform-team
            spec:
              # Hermes Agent (Nous Research): `hermes -z PROMPT` runs one turn non-interactively and prints
              # only the final answer. Its home is $HERMES_HOME: config.yaml, skills/, memories/, state.db.
              type: hermes
              version: "0.19.0"
              install:
                # The mcp extra: the agent's spec.mcpServers become config.yaml's mcp_servers.
                pip: ["hermes-agent[mcp]==0.19.0"]
              command: ["hermes", "-z", "{{prompt}}", "--ignore-rules"]
              # `agentry run --continue`: -z always starts afresh, so the quiet chat mode resumes the latest
              # session in $HERMES_HOME/state.db (--yolo: as -z, nothing waits for an approval).
              continueCommand: ["hermes", "chat", "-Q", "-q", "{{prompt}}", "--continue", "--yolo", "--ignore-rules"]
              env:
                HERMES_HOME: "{{agent.home}}/.hermes"
              modelEnv:
                # config.yaml reads the run's gateway token from here (Hermes expands ${VAR} in its config).
                AGENTRY_MODEL_KEY: "{{model.apiKey}}"
              configFiles:
                - path: .hermes/config.yaml
                  # Hermes reads model.default (model.model is ignored).
                  content: |
                    model:
                      provider: custom
                      default: "{{model.name}}"
                      base_url: "{{model.baseUrl}}"
                      api_key: "${AGENTRY_MODEL_KEY}"
              instructionsFile: .hermes/SOUL.md
              skillsDir: .hermes/skills
              stateDirs: [.hermes/memories, .hermes/sessions]
              supports:
                apis: [chat-completions]

            """
        ),
    ]
}
