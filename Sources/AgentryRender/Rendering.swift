import AgentryModel

/// An agent rendered for its machine: the files to put in its home (the files of the previous push,
/// listed in `.agentry/files`, are removed first, so a dropped skill or a switched harness leaves
/// nothing stale), the environment and the command of a run. Secret values are never part of it: a variable that needs one names the secret.
public struct RenderedAgent: Sendable {
    /// Files relative to the home, agentry's own manifest included.
    public var files: [BundleFile]
    public var environment: [String: String]
    /// Variables that carry the run's gateway token (`{{model.apiKey}}`): the variable → its
    /// template, rendered when a run starts (the provider's key itself never enters the machine).
    public var tokenEnvironment: [String: String]
    public var command: [String]
}

public enum Rendering {
    static let apiKey = "model.apiKey"

    /// Template values for an agent (and a run).
    public static func values(_ bundle: AgentBundle, run: RunContext) -> [String: String] {
        let home = AgentLayout.home
        var values = [
            "prompt": run.prompt,
            "agent.name": bundle.name,
            "agent.home": home,
            "agent.instructionsFile": home + "/" + AgentLayout.instructionsFile(bundle.harness),
            "agent.skillsDir": home + "/" + AgentLayout.skillsDirectory(bundle.harness),
            "agent.outputDir": home + "/" + AgentLayout.outputDirectory(bundle.agent),
            "agent.memoryDir": home + "/" + AgentLayout.memoryDirectory(bundle.agent),
            "harness.version": bundle.harness.version ?? "",
            "run.id": run.runID,
            "run.timeoutSeconds": "\(run.timeoutSeconds)",
        ]
        if let model = bundle.model {
            values["model.name"] = model.name
            values["model.provider"] = model.provider
            values["model.api"] = model.api?.rawValue ?? ""
            // The machine reaches its model only through the host's gateway, at the upstream's path.
            values["model.baseUrl"] = GatewayAddress.url + GatewayAddress.path(of: model.baseURL)
            values["model.contextWindow"] = model.contextWindow.map(String.init) ?? ""
            values["model.maxOutputTokens"] = model.maxOutputTokens.map(String.init) ?? ""
        }
        return values
    }

    /// Replaces `{{ name }}` placeholders. Unknown names were refused by validation; they render empty.
    public static func render(_ template: String, _ values: [String: String]) -> String {
        var output = ""
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            output += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                output += rest[open.lowerBound...]
                return output
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            output += values[name] ?? ""
            rest = rest[close.upperBound...]
        }
        output += rest
        return output
    }

    public static func uses(_ template: String, _ name: String) -> Bool {
        var rest = Substring(template)
        while let open = rest.range(of: "{{"), let close = rest[open.upperBound...].range(of: "}}") {
            if rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces) == name { return true }
            rest = rest[close.upperBound...]
        }
        return false
    }

    public static func render(_ bundle: AgentBundle, run: RunContext) -> RenderedAgent {
        let values = values(bundle, run: run)
        var files: [BundleFile] = []
        if let instructions = bundle.instructions {
            files.append(BundleFile(path: AgentLayout.instructionsFile(bundle.harness), bytes: instructions))
        }
        let skills = AgentLayout.skillsDirectory(bundle.harness)
        for skill in bundle.skills {
            for file in skill.files {
                var copy = file
                copy.path = skills + "/" + skill.name + "/" + file.path
                files.append(copy)
            }
        }
        for config in bundle.harness.configFiles {
            files.append(
                BundleFile(
                    path: AgentLayout.trimmed(config.path), mode: 0o600,
                    bytes: Array(render(config.content, values).utf8)))
        }
        NativeRendering.apply(bundle, to: &files)
        let identity = """
            {"agent": \(JSONText.quote(bundle.name)), "revision": \(JSONText.quote(bundle.revision)), \
            "commit": \(JSONText.quote(bundle.commit)), "harness": \(JSONText.quote(bundle.harness.metadata.name)), \
            "model": \(JSONText.quote(bundle.model?.metadata.name ?? ""))}

            """
        files.append(BundleFile(path: AgentLayout.own + "/agent.json", bytes: Array(identity.utf8)))
        let manifest = (files.map(\.path) + [AgentLayout.own + "/files"]).joined(separator: "\n") + "\n"
        files.append(BundleFile(path: AgentLayout.own + "/files", bytes: Array(manifest.utf8)))

        // Later layers win: the environment's, the harness's, the model's, the agent's own.
        var environment: [String: String] = [:]
        var tokenEnvironment: [String: String] = [:]
        let layers = [bundle.environment?.env ?? [:], bundle.harness.env, bundle.harness.modelEnv, bundle.agent.env]
        for layer in layers {
            for (key, template) in layer {
                if uses(template, apiKey) {
                    environment[key] = nil
                    tokenEnvironment[key] = template
                } else {
                    tokenEnvironment[key] = nil
                    environment[key] = render(template, values)
                }
            }
        }
        environment["HOME"] = AgentLayout.home
        environment["AGENTRY_AGENT"] = bundle.name
        if !run.runID.isEmpty { environment["AGENTRY_RUN_ID"] = run.runID }
        environment["AGENTRY_OUTPUT_DIR"] = values["agent.outputDir"]
        let continuing = run.continuing && !bundle.harness.continueCommand.isEmpty
        if continuing { environment["AGENTRY_CONTINUE"] = "1" }
        let command = (continuing ? bundle.harness.continueCommand : bundle.harness.command).map { render($0, values) }
        return RenderedAgent(
            files: files, environment: environment,
            tokenEnvironment: tokenEnvironment, command: command)
    }
}

enum JSONText {
    static func quote(_ text: String) -> String {
        var output = ""
        JSON.quote(text, into: &output)
        return output
    }
}
