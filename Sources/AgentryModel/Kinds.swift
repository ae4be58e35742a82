/// The resource kinds of `agentry/v1` and their shapes, with the documentation of every field.
public enum Kind: String, Sendable, CaseIterable, Hashable, Codable {
    case agent = "Agent"
    case harness = "Harness"
    case model = "Model"
    case environment = "Environment"

    public static let apiVersion = "agentry/v1"

    /// The lower-case name used by `agentry schema` and the schema file names.
    public var slug: String { rawValue.lowercased() }

    public var summary: String {
        switch self {
        case .agent: return "An agent: who it is, its instructions and skills, and what runs it."
        case .harness: return "An agent framework: how it is installed, invoked, and given a model."
        case .model: return "A model endpoint that a harness talks to."
        case .environment: return "The machine an agent runs on: base image, packages, resources, network."
        }
    }

    /// The shape of a whole document of this kind.
    public var shape: ObjectShape {
        switch self {
        case .agent: return Shapes.agentResource
        case .harness: return Shapes.harnessResource
        case .model: return Shapes.modelResource
        case .environment: return Shapes.environmentResource
        }
    }
}

/// The APIs a model can speak and a harness can use.
public enum ModelAPI: String, Sendable, CaseIterable, Codable {
    case messages
    case chatCompletions = "chat-completions"
    case responses
}

public enum HarnessType: String, Sendable, CaseIterable, Codable {
    case openclaw, hermes, shell, custom, codex, opencode
    case claudeCode = "claude-code"
}

public enum Lifecycle: String, Sendable, CaseIterable, Codable {
    case active, paused, revoked
}

public enum DeletionPolicy: String, Sendable, CaseIterable, Codable {
    case retain, delete
}

public enum EnvironmentBase: String, Sendable, CaseIterable, Codable {
    case minimal
    case debian12 = "debian-12"
}

public enum EgressMode: String, Sendable, CaseIterable, Codable {
    case none
    case modelOnly = "model-only"
    case all
}

enum Shapes {
    static let secretValueMessage =
        "secret values never belong in git; store the value with `agentry secret set KEY` and write `ref: KEY` here"

    static let agentResource = resource(.agent, metadata: agentMetadata, spec: agentSpec)
    static let harnessResource = resource(.harness, metadata: metadata, spec: harnessSpec)
    static let modelResource = resource(.model, metadata: metadata, spec: modelSpec)
    static let environmentResource = resource(.environment, metadata: metadata, spec: environmentSpec)

    static func resource(_ kind: Kind, metadata: ObjectShape, spec: ObjectShape) -> ObjectShape {
        ObjectShape(
            kind.rawValue, doc: kind.summary,
            fields: [
                FieldShape(
                    "apiVersion", .string(.constant(Kind.apiVersion)), required: true,
                    invalidCode: .unsupportedAPIVersion, doc: "Always `agentry/v1`."),
                FieldShape("kind", .string(.constant(kind.rawValue)), required: true, doc: "`\(kind.rawValue)`."),
                FieldShape("metadata", .object(metadata), required: true, doc: "Name and ownership."),
                FieldShape("spec", .object(spec), required: true, doc: "The \(kind.rawValue)'s definition."),
            ])
    }

    static let nameField = FieldShape(
        "name", .string(.dnsLabel), required: true,
        doc:
            "The resource's name, unique per kind: a DNS label (`triage`, `python-dev`). Other resources refer to it by this name."
    )

    static let labelsField = FieldShape(
        "labels", .map(key: .labelKey, value: .string(.text(minLength: 0, maxLength: 63))),
        doc: "Free key/value labels for selection and reporting (`team: platform`).")

    static let metadata = ObjectShape(
        "Metadata", doc: "Identity of the resource.",
        fields: [
            nameField,
            FieldShape(
                "owner", .string(.text(maxLength: 253)),
                doc: "Who answers for this resource: a team or a person."),
            labelsField,
        ])

    static let agentMetadata = ObjectShape(
        "AgentMetadata", doc: "Identity and ownership of the agent.",
        fields: [
            nameField,
            FieldShape(
                "owner", .string(.text(maxLength: 253)), required: true, missingCode: .missingOwner,
                doc: "Who answers for this agent, a team or a person (`platform-team`, `ana@example.com`)."),
            labelsField,
        ])

    static let reference = Shape.string(.dnsLabel)
    static let apiList = Shape.list(.string(.oneOf(ModelAPI.allCases.map(\.rawValue))), minItems: 1, unique: true)
    static let envMap = Shape.map(key: .envName, value: .string(.text(minLength: 0)))
    static let packageList = Shape.list(.string(.text()), unique: true)

    static let secretRef = ObjectShape(
        "SecretRef", doc: "A reference to a key in the host's secret store; never the value itself.",
        fields: [
            FieldShape(
                "ref", .string(.secretRef), required: true,
                doc: "The key in the host's secret store (`anthropic/api-key`), set with `agentry secret set`.")
        ],
        refusedKeys: ["value": (.secretValue, secretValueMessage)])

    static let secretBinding = ObjectShape(
        "SecretBinding", doc: "A secret projected into the agent's runs as an environment variable.",
        fields: [
            FieldShape("env", .string(.envName), required: true, doc: "The environment variable the run sees."),
            FieldShape(
                "ref", .string(.secretRef), required: true,
                doc: "The key in the host's secret store (`github/token`), set with `agentry secret set`."),
            FieldShape(
                "optional", .boolean,
                doc: "When `true`, a run starts even if the key is not in the store. Default `false`."),
        ],
        refusedKeys: ["value": (.secretValue, secretValueMessage)])

    static let instructionsFile = ObjectShape(
        "InstructionsFile", doc: "Instructions kept in a Markdown file.",
        fields: [
            FieldShape(
                "file", .string(.text()), required: true,
                doc:
                    "Path of the file, relative to the YAML file that declares the agent; it must stay inside the repository."
            )
        ])

    static let agentSpec = ObjectShape(
        "AgentSpec", doc: "What the agent is and what runs it.",
        fields: [
            FieldShape(
                "description", .string(.text(maxLength: 1024)),
                doc: "One or two sentences on what the agent does."),
            FieldShape(
                "instructions", .choice([.string(.text()), .object(instructionsFile)]),
                doc: "The agent's standing instructions: inline text, or `{file: PATH}` relative to this YAML file."),
            FieldShape("harness", reference, required: true, doc: "The Harness that runs the agent."),
            FieldShape(
                "model", reference, required: true,
                doc: "The Model the harness talks to. Swap it here; nothing else moves."),
            FieldShape(
                "fallbackModels", .list(reference, unique: true),
                doc: "Models to try, in order, when `model` is unavailable."),
            FieldShape("environment", reference, required: true, doc: "The Environment (machine) the agent runs on."),
            FieldShape(
                "skills", .list(.string(.skillName), unique: true),
                doc: "Skills given to the agent: folder names under `skills/`, each with a `SKILL.md`."),
            FieldShape(
                "secrets", .list(.object(secretBinding)),
                doc: "Secrets projected for the length of a run only, by reference to the host's secret store."),
            FieldShape("env", envMap, doc: "Plain (non-secret) environment variables for the agent's runs."),
            FieldShape(
                "tools", .object(toolsSpec),
                doc:
                    "Which built-in capabilities the agent may use (`shell`, `edit`, `web`), in every harness's own terms."
            ),
            FieldShape(
                "mcpServers", .list(.object(mcpServer)),
                doc: "MCP servers the harness connects to, rendered into its own MCP configuration."),
            FieldShape(
                "run",
                .object(
                    ObjectShape(
                        "RunDefaults", doc: "Defaults for `agentry run`.",
                        fields: [
                            FieldShape("prompt", .string(.text()), doc: "The prompt used when a run names none."),
                            FieldShape(
                                "timeout", .string(.duration),
                                doc: "How long a run may take before its processes are killed. Default `15m`."),
                            FieldShape(
                                "output", .string(.relativePath),
                                doc:
                                    "Folder under the agent's home whose files are collected as artifacts. Default `out/`."
                            ),
                            FieldShape(
                                "budget",
                                .object(
                                    ObjectShape(
                                        "RunBudget", doc: "What one run may spend on its models.",
                                        fields: [
                                            FieldShape(
                                                "tokens", .integer(min: 1, max: 1_000_000_000_000),
                                                doc:
                                                    "Input and output tokens together; past them the model gateway answers 429 and the run record says the budget stopped it."
                                            )
                                        ])),
                                doc: "Limits on one run's model use, enforced by the model gateway."),
                            FieldShape(
                                "schedule", .string(.cron),
                                doc:
                                    "When `agentry serve` starts a run on its own (trigger `schedule`): five-field cron, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. A run still going when the next is due is skipped, and the skip recorded."
                            ),
                            FieldShape(
                                "timeZone", .string(.timeZone),
                                doc: "The time zone `schedule` is read in. Default `UTC`."),
                        ])),
                doc: "Run defaults."),
            FieldShape(
                "memory",
                .object(
                    ObjectShape(
                        "Memory", doc: "The agent's memory folder.",
                        fields: [
                            FieldShape(
                                "path", .string(.relativePath),
                                doc: "Folder under the agent's home. Default `memory/`."),
                            FieldShape(
                                "snapshot", .boolean,
                                doc: "Whether the folder is snapshotted into history after each run. Default `true`."),
                        ])),
                doc: "Memory kept across runs and machines."),
            FieldShape(
                "lifecycle", .string(.oneOf(Lifecycle.allCases.map(\.rawValue))),
                doc:
                    "`active` (default), `paused` (machine stopped, everything kept) or `revoked` (kill switch: stopped, secrets withdrawn, runs refused)."
            ),
            FieldShape(
                "deletionPolicy", .string(.oneOf(DeletionPolicy.allCases.map(\.rawValue))),
                doc:
                    "What happens to the environment disk when the agent leaves the repository: `retain` (default) or `delete`."
            ),
        ])

    static let configFile = ObjectShape(
        "ConfigFile", doc: "A file rendered into the agent's home before each run.",
        fields: [
            FieldShape("path", .string(.relativePath), required: true, doc: "Path under the agent's home."),
            FieldShape(
                "content", .string(.text(minLength: 0)), required: true,
                doc: "The file's text; `{{placeholders}}` are rendered per run (see Templates)."),
        ])

    static let harnessSpec = ObjectShape(
        "HarnessSpec", doc: "How an agent framework is installed and invoked.",
        fields: [
            FieldShape(
                "type", .string(.oneOf(HarnessType.allCases.map(\.rawValue))), required: true,
                doc: "The framework: `openclaw`, `hermes`, `claude-code`, `codex`, `opencode`, `shell` or `custom`."),
            FieldShape("version", .string(.text(maxLength: 128)), doc: "The framework version this harness pins."),
            FieldShape(
                "install",
                .object(
                    ObjectShape(
                        "Install", doc: "How the framework is installed on the environment disk, once per revision.",
                        fields: [
                            FieldShape("apt", packageList, doc: "Debian packages."),
                            FieldShape("pip", packageList, doc: "Python packages (`name==version`)."),
                            FieldShape("npm", packageList, doc: "npm packages, installed globally."),
                            FieldShape("script", .string(.text()), doc: "A shell script run after the packages."),
                        ])),
                doc: "Installation steps."),
            FieldShape(
                "command", .list(.string(.text()), minItems: 1), required: true,
                doc: "The argv of one non-interactive run; `{{prompt}}` and other placeholders are rendered."),
            FieldShape(
                "continueCommand", .list(.string(.text()), minItems: 1),
                doc:
                    "The argv of a run that continues the agent's previous session (`agentry run --continue`), its state kept on the environment disk."
            ),
            FieldShape("env", envMap, doc: "Environment variables for every run."),
            FieldShape(
                "modelEnv", envMap,
                doc: "Environment variables that carry the model choice (`OPENAI_BASE_URL: \"{{model.baseUrl}}\"`)."),
            FieldShape(
                "configFiles", .list(.object(configFile)),
                doc: "Configuration files rendered into the agent's home before each run."),
            FieldShape(
                "instructionsFile", .string(.relativePath),
                doc: "Where the agent's instructions are written for the framework to find (`AGENTS.md`)."),
            FieldShape(
                "skillsDir", .string(.relativePath),
                doc: "The folder under the agent's home where the framework looks for skills."),
            FieldShape(
                "stateDirs", .list(.string(.relativePath), unique: true),
                doc: "Framework state kept on the environment disk across runs and harness versions."),
            FieldShape(
                "supports",
                .object(
                    ObjectShape(
                        "Supports", doc: "What the framework can talk to.",
                        fields: [
                            FieldShape("apis", apiList, required: true, doc: "Model APIs the framework speaks.")
                        ])),
                required: true, doc: "Capabilities, checked against each agent's models."),
        ])

    static let modelSpec = ObjectShape(
        "ModelSpec", doc: "A model endpoint.",
        fields: [
            FieldShape(
                "provider", .string(.dnsLabel), required: true,
                doc: "Who serves it: `anthropic`, `openai`, `openai-compatible`, `ollama`, …"),
            FieldShape(
                "name", .string(.text(maxLength: 256)), required: true,
                doc: "The provider's model id (`claude-sonnet-4-5`)."),
            FieldShape(
                "api", .string(.oneOf(ModelAPI.allCases.map(\.rawValue))), required: true,
                doc: "The wire API: `messages`, `chat-completions` or `responses`."),
            FieldShape("baseUrl", .string(.url), required: true, doc: "The endpoint's base URL."),
            FieldShape(
                "credentials", .object(secretRef),
                doc: "The API key, by reference to the host's secret store. Omit for local models that need none."),
            FieldShape(
                "contextWindow", .integer(min: 1, max: 100_000_000), doc: "Context window in tokens."),
            FieldShape(
                "maxOutputTokens", .integer(min: 1, max: 100_000_000), doc: "Output limit in tokens."),
        ])

    static let environmentSpec = ObjectShape(
        "EnvironmentSpec", doc: "The machine an agent runs on.",
        fields: [
            FieldShape(
                "base", .string(.oneOf(EnvironmentBase.allCases.map(\.rawValue))), required: true,
                doc: "The base image: `minimal` (busybox) or `debian-12`."),
            FieldShape(
                "packages",
                .object(
                    ObjectShape(
                        "Packages", doc: "Packages installed on top of the base.",
                        fields: [
                            FieldShape("apt", packageList, doc: "Debian packages (`debian-12` base)."),
                            FieldShape("pip", packageList, doc: "Python packages."),
                        ])),
                doc: "Extra packages."),
            FieldShape(
                "resources",
                .object(
                    ObjectShape(
                        "Resources", doc: "Machine size.",
                        fields: [
                            FieldShape("cpus", .integer(min: 1, max: 64), doc: "Virtual CPUs. Default 1."),
                            FieldShape("memory", .string(.quantity), doc: "Memory. Default `512Mi`."),
                            FieldShape("disk", .string(.quantity), doc: "Environment disk size. Default `4Gi`."),
                        ])),
                doc: "CPUs, memory, disk."),
            FieldShape(
                "network",
                .object(
                    ObjectShape(
                        "Network", doc: "What the machine may reach.",
                        fields: [
                            FieldShape(
                                "egress",
                                .choice([
                                    .string(.oneOf(EgressMode.allCases.map(\.rawValue))),
                                    .list(.string(.hostname), minItems: 1, unique: true),
                                ]),
                                doc:
                                    "`none` (default: no network device), `model-only`, `all`, or a list of allowed hosts."
                            )
                        ])),
                doc: "Network policy."),
            FieldShape("env", envMap, doc: "Environment variables for every agent on this environment."),
        ])

    /// The YAML front matter of a `SKILL.md` (Agent Skills format).
    static let skillFrontMatter = ObjectShape(
        "SkillFrontMatter",
        doc:
            "The YAML front matter of an Agent Skills `SKILL.md`. Keys outside the specification are accepted with a warning.",
        fields: [
            FieldShape(
                "name", .string(.skillName), required: true,
                doc: "The skill's name; must equal its folder's name."),
            FieldShape(
                "description", .string(.text()), required: true,
                doc:
                    "What the skill does and when to use it (the specification says at most 1024 characters; longer is a warning)."
            ),
            FieldShape("license", .string(.text()), doc: "License name or a pointer to a bundled license file."),
            FieldShape(
                "compatibility", .string(.text()),
                doc: "Environment requirements (the specification says at most 500 characters)."),
            FieldShape(
                "metadata", .map(key: .text(), value: .string(.text(minLength: 0))),
                doc: "Free key/value metadata."),
            FieldShape(
                "allowed-tools", .string(.text()), doc: "Space-delimited tools the skill may use (experimental)."),
        ])
}

extension ObjectShape {
    /// The Agent Skills `SKILL.md` front matter.
    public static var skillFrontMatter: ObjectShape { Shapes.skillFrontMatter }
}
