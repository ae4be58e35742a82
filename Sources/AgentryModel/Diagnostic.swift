import AgentryYAML

/// One problem found in an agent repository, pinned to a file and position.
public struct Diagnostic: Sendable, Hashable, Comparable {
    public enum Severity: String, Sendable, Hashable, Codable {
        case error, warning
    }

    /// Which layer found it. `schema` problems are exactly those a JSON Schema validator sees.
    public enum Category: String, Sendable, Hashable, Codable {
        /// The file could not be read as YAML (or Markdown front matter) at all.
        case syntax
        /// A single document does not match its kind's schema.
        case schema
        /// Something across files: duplicates, references, instruction files, skills.
        case reference
        /// A rule beyond the schema: secrets and credentials.
        case policy
    }

    public var severity: Severity
    public var code: Code
    /// Path relative to the repository root, `/`-separated.
    public var file: String
    public var mark: SourceMark
    public var message: String

    public init(_ severity: Severity, _ code: Code, file: String, at mark: SourceMark, _ message: String) {
        self.severity = severity
        self.code = code
        self.file = file
        self.mark = mark
        self.message = message
    }

    public var category: Category { code.category }

    public static func < (lhs: Diagnostic, rhs: Diagnostic) -> Bool {
        (lhs.file, lhs.mark, lhs.code.rawValue, lhs.message) < (rhs.file, rhs.mark, rhs.code.rawValue, rhs.message)
    }
}

extension Diagnostic {
    /// Stable diagnostic codes. Never renumber or reuse one: CI configurations and editors match on them.
    public enum Code: String, Sendable, Hashable, Codable, CaseIterable {
        // syntax
        case yamlSyntax = "yaml-syntax"
        case yamlLimit = "yaml-limit"
        case duplicateKey = "duplicate-key"
        case notUTF8 = "not-utf8"
        case tabIndent = "tab-indent"
        case fileTooLarge = "file-too-large"
        case emptyFile = "empty-file"
        // schema
        case notAMapping = "not-a-mapping"
        case unknownField = "unknown-field"
        case missingField = "missing-field"
        case wrongType = "wrong-type"
        case invalidValue = "invalid-value"
        case invalidName = "invalid-name"
        case invalidQuantity = "invalid-quantity"
        case invalidDuration = "invalid-duration"
        case yaml11Boolean = "yaml11-boolean"
        case unknownKind = "unknown-kind"
        case unsupportedAPIVersion = "unsupported-api-version"
        case missingOwner = "missing-owner"
        case secretValue = "secret-value"
        case unsupportedYAML = "unsupported-yaml"
        // reference
        case duplicateName = "duplicate-name"
        case unresolvedReference = "unresolved-reference"
        case unsupportedAPI = "unsupported-api"
        case instructionsMissing = "instructions-missing"
        case pathEscape = "path-escape"
        case skillFrontMatter = "skill-front-matter"
        case skillNameMismatch = "skill-name-mismatch"
        case skillSpec = "skill-spec"
        case unknownTemplateVariable = "unknown-template-variable"
        case fallbackAPIMismatch = "fallback-api-mismatch"
        case unsupportedTool = "unsupported-tool"
        case configConflict = "config-conflict"
        // policy
        case credentialLike = "credential-like"
        case secretInFile = "secret-in-file"

        public var category: Category {
            switch self {
            case .yamlSyntax, .yamlLimit, .duplicateKey, .notUTF8, .tabIndent, .fileTooLarge, .emptyFile:
                return .syntax
            case .notAMapping, .unknownField, .missingField, .wrongType, .invalidValue, .invalidName,
                .invalidQuantity, .invalidDuration, .yaml11Boolean, .unknownKind, .unsupportedAPIVersion,
                .missingOwner, .secretValue, .unsupportedYAML:
                return .schema
            case .duplicateName, .unresolvedReference, .unsupportedAPI, .instructionsMissing, .pathEscape,
                .skillFrontMatter, .skillNameMismatch, .skillSpec, .unknownTemplateVariable, .fallbackAPIMismatch,
                .unsupportedTool, .configConflict:
                return .reference
            case .credentialLike, .secretInFile:
                return .policy
            }
        }

        /// One line for the README's table and `agentry explain`-style help.
        public var summary: String {
            switch self {
            case .yamlSyntax: return "The file is not valid YAML."
            case .yamlLimit: return "Nesting deeper than 64 levels or more than 200,000 nodes (alias bombs)."
            case .duplicateKey: return "A key appears twice in one mapping."
            case .notUTF8: return "The file is not UTF-8 text."
            case .tabIndent: return "A tab is used for indentation; YAML requires spaces."
            case .fileTooLarge: return "The file is over the size cap (1 MiB) and was not read."
            case .emptyFile: return "The file holds no documents (warning)."
            case .notAMapping: return "A document is a list or a scalar, not a resource mapping."
            case .unknownField: return "A key that the kind does not define (with a did-you-mean)."
            case .missingField: return "A required field is absent."
            case .wrongType: return "A value of the wrong type (string, integer, boolean, list, mapping)."
            case .invalidValue: return "A value outside the allowed set or format."
            case .invalidName: return "A name or reference that is not a DNS label."
            case .invalidQuantity: return "A size that does not parse (`512Mi`, `4Gi`)."
            case .invalidDuration: return "A duration that does not parse (`90s`, `15m`, `1h30m`)."
            case .yaml11Boolean: return "`yes`/`no`/`on`/`off` where only `true`/`false` may stand."
            case .unknownKind: return "A kind other than Agent, Harness, Model, Environment."
            case .unsupportedAPIVersion: return "An apiVersion other than agentry/v1."
            case .missingOwner: return "An Agent without metadata.owner."
            case .secretValue: return "A secret value written into git instead of a reference."
            case .unsupportedYAML:
                return "YAML features agentry does not accept: merge keys, custom tags, complex keys."
            case .duplicateName: return "Two resources of one kind share a name."
            case .unresolvedReference:
                return "A reference to a harness, model, environment or skill that does not exist."
            case .unsupportedAPI: return "A model whose api the agent's harness does not support."
            case .instructionsMissing: return "An instructions file that does not exist."
            case .pathEscape: return "A path or symlink that leads outside the repository."
            case .skillFrontMatter: return "A SKILL.md whose front matter is missing or invalid."
            case .skillNameMismatch: return "A skill whose name differs from its folder."
            case .skillSpec: return "A skill that departs from the Agent Skills specification (warning)."
            case .unknownTemplateVariable: return "A `{{placeholder}}` in a harness that agentry does not know."
            case .fallbackAPIMismatch:
                return "A fallback model whose api differs from the model's: the gateway skips it (warning)."
            case .unsupportedTool:
                return "An agent's tools or MCP servers that its harness cannot express in its own configuration."
            case .configConflict:
                return
                    "A harness that sets, in its own files, what agentry renders from its agents' tools and MCP servers."
            case .credentialLike: return "A string that looks like an API key, token or private key."
            case .secretInFile:
                return "`{{model.apiKey}}` rendered into a file or command argument instead of the environment."
            }
        }
    }
}
