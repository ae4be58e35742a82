import AgentryModel
import AgentryYAML
import Foundation
import Testing

@Suite struct SchemaValidationTests {
    @Test func aCompleteRepositoryIsValid() {
        let report = validate(Fixture.repository())
        #expect(report.diagnostics.isEmpty, "\(report.diagnostics)")
        #expect(report.catalog.agents.map(\.metadata.name) == ["triage"])
        #expect(report.catalog.models.count == 2)
        #expect(report.catalog.skills.map(\.name) == ["gh-triage"])
        let agent = report.catalog.agents[0]
        #expect(agent.run.timeoutMilliseconds == 15 * 60_000)
        #expect(agent.lifecycle == .active)
        #expect(report.catalog.environments[0].memory.bytes == 512 * 1024 * 1024)
    }

    @Test func unknownFieldSuggestsTheClosestName() throws {
        let report = validate(Fixture.repository(["agents/triage.yaml": Fixture.agent(spec: "fallbackModel: [gpt]")]))
        let diagnostic = try #require(report.first(.unknownField))
        #expect(diagnostic.message.contains("did you mean \"fallbackModels\""))
        #expect(diagnostic.file == "agents/triage.yaml")
        #expect(diagnostic.mark == SourceMark(line: 12, column: 3))
    }

    @Test func misspeltRequiredFieldIsReportedOnce() {
        let agent = Fixture.agent().replacingOccurrences(of: "  harness: hermes", with: "  harnes: hermes")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        #expect(report.codes() == ["unknown-field"])
    }

    @Test func yaml11BooleansAreRefusedWithAHint() throws {
        let report = validate(Fixture.repository(["agents/triage.yaml": Fixture.agent(spec: "memory: {snapshot: no}")]))
        let diagnostic = try #require(report.first(.yaml11Boolean))
        #expect(diagnostic.message.contains("write false"))
        #expect(report.catalog.agents[0].memory.snapshot == true, "no silent conversion")
    }

    @Test func quotedBooleanIsAWrongTypeNotAConversion() {
        let report = validate(
            Fixture.repository(["agents/triage.yaml": Fixture.agent(spec: "memory: {snapshot: \"true\"}")]))
        #expect(report.codes() == ["wrong-type"])
    }

    @Test func quantitiesDurationsAndNamesMustParse() {
        let environment = Fixture.environment.replacingOccurrences(of: "memory: 512Mi", with: "memory: 512MB")
            .replacingOccurrences(of: "name: python-dev", with: "name: Python_Dev")
        let agent = Fixture.agent(spec: "run: {timeout: 15 minutes}")
        let report = validate(
            Fixture.repository(["environments/python.yaml": environment, "agents/triage.yaml": agent]))
        #expect(report.codes().contains("invalid-quantity"))
        #expect(report.codes().contains("invalid-name"))
        #expect(report.codes().contains("invalid-duration"))
    }

    @Test func missingOwnerHasItsOwnCode() {
        let agent = Fixture.agent().replacingOccurrences(of: "  owner: platform-team\n", with: "")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        #expect(report.codes() == ["missing-owner"])
    }

    @Test func numbersWhereStringsBelongAskForQuotes() throws {
        let harness = Fixture.harness.replacingOccurrences(of: "version: \"0.19.0\"", with: "version: 0.19")
        let report = validate(Fixture.repository(["harnesses/hermes.yaml": harness]))
        let diagnostic = try #require(report.first(.wrongType))
        #expect(diagnostic.message.contains("quote it"))
    }

    @Test func secretValuesAreRefused() {
        let agent = Fixture.agent(spec: "secrets:\n  - env: GITHUB_TOKEN\n    value: hunter2")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        #expect(report.codes().contains("secret-value"))
        #expect(!report.isValid)
    }

    @Test func credentialShapedStringsAreRefusedAnywhere() throws {
        let agent = Fixture.agent(spec: "env: {NOTE: \"token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8\"}")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        let diagnostic = try #require(report.first(.credentialLike))
        #expect(diagnostic.message.contains("GitHub token"))
        #expect(!diagnostic.message.contains("ghp_A1b2"), "the credential itself is never echoed")
    }

    @Test func unknownKindAndAPIVersion() {
        let report = validate([
            "a.yaml": "apiVersion: agentry/v1\nkind: Agnet\nmetadata: {name: a}\nspec: {}\n",
            "b.yaml":
                "apiVersion: agentry/v2\nkind: Model\nmetadata: {name: b}\nspec: {provider: x, name: y, api: messages, baseUrl: 'http://h'}\n",
        ])
        #expect(report.first(.unknownKind)?.message.contains("did you mean \"Agent\"") == true)
        #expect(report.first(.unsupportedAPIVersion)?.file == "b.yaml")
    }

    @Test func hostileFilesGetADiagnosticAtTheFile() {
        var entries = makeTree(Fixture.repository()).entries
        entries["big.yaml"] = .file(size: 5_000_000, content: nil)
        entries["binary.yaml"] = .file(size: 4, content: [0x61, 0x3A, 0xFF, 0x0A])
        entries["tabs.yaml"] = .file(size: 0, content: Array("a:\n\tb: 1\n".utf8))
        entries["list.yaml"] = .file(size: 0, content: Array("- a\n- b\n".utf8))
        entries["scalar.yaml"] = .file(size: 0, content: Array("just text\n".utf8))
        entries["empty.yaml"] = .file(size: 0, content: [])
        entries["deep.yaml"] = .file(size: 0, content: Array(String(repeating: "[", count: 200_000).utf8))
        let report = RepositoryValidator.validate(SourceTree(entries: entries))
        let byFile = Dictionary(grouping: report.diagnostics, by: \.file).mapValues { $0.map(\.code.rawValue) }
        #expect(byFile["big.yaml"] == ["file-too-large"])
        #expect(byFile["binary.yaml"] == ["not-utf8"])
        #expect(byFile["tabs.yaml"] == ["tab-indent"])
        #expect(byFile["list.yaml"] == ["not-a-mapping"])
        #expect(byFile["scalar.yaml"] == ["not-a-mapping"])
        #expect(byFile["empty.yaml"] == ["empty-file"])
        #expect(byFile["deep.yaml"] == ["yaml-limit"])
        #expect(report.diagnostics.first { $0.file == "binary.yaml" }?.mark == SourceMark(line: 1, column: 3))
    }

    @Test func severalDocumentsInOneFileAreAllowed() {
        var files = Fixture.repository()
        files["environments/python.yaml"] =
            Fixture.environment + "---\n" + Fixture.environment.replacingOccurrences(of: "python-dev", with: "node-dev")
        let report = validate(files)
        #expect(report.isValid)
        #expect(report.catalog.environments.map(\.metadata.name).sorted() == ["node-dev", "python-dev"])
    }

    @Test func mergeKeysAndCustomTagsAreUnsupported() {
        let environment = Fixture.environment.replacingOccurrences(
            of: "base: debian-12", with: "base: !custom debian-12")
        let report = validate(Fixture.repository(["environments/python.yaml": environment]))
        #expect(report.codes() == ["unsupported-yaml"])
    }
}

@Suite struct ReferenceValidationTests {
    @Test func unresolvedReferencesPointAtTheReference() throws {
        let agent = Fixture.agent().replacingOccurrences(of: "harness: hermes", with: "harness: hermez")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        let diagnostic = try #require(report.first(.unresolvedReference))
        #expect(diagnostic.message.contains("did you mean \"hermes\""))
        #expect(diagnostic.mark == SourceMark(line: 8, column: 12))
    }

    @Test func everyKindOfReferenceIsChecked() {
        let agent = Fixture.agent(spec: "fallbackModels: [nope]")
            .replacingOccurrences(of: "environment: python-dev", with: "environment: ruby")
            .replacingOccurrences(of: "skills: [gh-triage]", with: "skills: [gh-triage, missing-skill]")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        #expect(report.codes() == ["unresolved-reference", "unresolved-reference", "unresolved-reference"])
    }

    @Test func modelAPIMustBeSupportedByTheHarness() throws {
        let agent = Fixture.agent(spec: "fallbackModels: [gpt]")
        let report = validate(Fixture.repository(["agents/triage.yaml": agent]))
        let diagnostic = try #require(report.first(.unsupportedAPI))
        #expect(diagnostic.message.contains("responses"))
        #expect(diagnostic.message.contains("spec.fallbackModels[0]"))
        // A fallback of another API than the model's: the gateway cannot retry on it, said as a warning.
        let mismatch = try #require(report.first(.fallbackAPIMismatch))
        #expect(
            mismatch.severity == .warning && mismatch.message.contains("skips this fallback"), "\(mismatch.message)")
    }

    @Test func duplicateNamesNameTheFirstDefinition() throws {
        let report = validate(Fixture.repository(["harnesses/copy.yaml": Fixture.harness]))
        let diagnostic = try #require(report.first(.duplicateName))
        #expect(diagnostic.file == "harnesses/hermes.yaml")
        // At the second definition's `metadata.name`, naming the first's.
        #expect(diagnostic.mark.line == 3 && diagnostic.mark.column == 18, "\(diagnostic.mark)")
        #expect(diagnostic.message.contains("harnesses/copy.yaml:3:18"), "\(diagnostic.message)")
    }

    @Test func instructionFilesMustExistAndStayInside() {
        var files = Fixture.repository()
        files.removeValue(forKey: "agents/triage/INSTRUCTIONS.md")
        #expect(validate(files).codes() == ["instructions-missing"])

        let escaping = Fixture.agent().replacingOccurrences(
            of: "triage/INSTRUCTIONS.md", with: "../../etc/passwd")
        #expect(validate(Fixture.repository(["agents/triage.yaml": escaping])).codes() == ["path-escape"])

        let absolute = Fixture.agent().replacingOccurrences(of: "triage/INSTRUCTIONS.md", with: "/etc/passwd")
        #expect(validate(Fixture.repository(["agents/triage.yaml": absolute])).codes() == ["path-escape"])

        let sibling = Fixture.agent().replacingOccurrences(of: "triage/INSTRUCTIONS.md", with: "../docs/triage.md")
        #expect(validate(Fixture.repository(["agents/triage.yaml": sibling, "docs/triage.md": "x"])).isValid)
    }

    @Test func symlinksResolveInsideAndNeverLeave() {
        var files = Fixture.repository()
        files.removeValue(forKey: "agents/triage/INSTRUCTIONS.md")
        files["shared/INSTRUCTIONS.md"] = "shared"
        let inside = validate(files, symlinks: ["agents/triage/INSTRUCTIONS.md": "../../shared/INSTRUCTIONS.md"])
        #expect(inside.isValid, "\(inside.diagnostics)")

        let outside = validate(files, symlinks: ["agents/triage/INSTRUCTIONS.md": "../../../outside.md"])
        #expect(outside.codes().sorted() == ["path-escape", "path-escape"])

        let absolute = validate(files, symlinks: ["agents/triage": "/tmp"])
        #expect(absolute.codes().allSatisfy { $0 == "path-escape" } && !absolute.isValid)
    }

    /// A skill file whose path a machine could not take is refused by validate, not by apply.
    @Test func skillFilesWithOverlongPathsAreRefused() {
        let deep = (0..<16).map { _ in String(repeating: "d", count: 250) }.joined(separator: "/")
        var files = Fixture.repository()
        files["skills/gh-triage/\(deep)/notes.md"] = "x"
        let report = validate(files)
        #expect(report.codes() == ["skill-spec"], "\(report.diagnostics)")
        #expect(report.diagnostics.first?.message.contains("at most 3800") == true)
        var fine = Fixture.repository()
        fine["skills/gh-triage/\(deep.prefix(3000))/notes.md"] = "x"
        #expect(validate(fine).isValid)
    }

    @Test func skillsNeedFrontMatterWithTheFolderName() {
        let renamed = Fixture.skill.replacingOccurrences(of: "name: gh-triage", with: "name: triage")
        #expect(validate(Fixture.repository(["skills/gh-triage/SKILL.md": renamed])).codes() == ["skill-name-mismatch"])

        let bare = "# no front matter\n"
        #expect(validate(Fixture.repository(["skills/gh-triage/SKILL.md": bare])).codes() == ["skill-front-matter"])

        let noDescription = "---\nname: gh-triage\n---\n"
        let report = validate(Fixture.repository(["skills/gh-triage/SKILL.md": noDescription]))
        #expect(report.codes() == ["missing-field"])
        #expect(report.diagnostics[0].mark.line == 2, "front matter positions count the opening --- line")

        var files = Fixture.repository()
        files.removeValue(forKey: "skills/gh-triage/SKILL.md")
        files["skills/gh-triage/README.md"] = "x"
        #expect(validate(files).codes() == ["skill-front-matter"])
    }

    @Test func realWorldSkillDeviationsAreWarnings() {
        let long = "---\nname: gh-triage\ndescription: \(String(repeating: "word ", count: 250))\nversion: 2\n---\n"
        let report = validate(Fixture.repository(["skills/gh-triage/SKILL.md": long]))
        #expect(report.isValid)
        #expect(report.codes(.warning) == ["skill-spec", "skill-spec"])
    }

    @Test func harnessTemplatesUseKnownVariables() throws {
        let harness = Fixture.harness.replacingOccurrences(of: "{{prompt}}", with: "{{promt}}")
        let report = validate(Fixture.repository(["harnesses/hermes.yaml": harness]))
        let diagnostic = try #require(report.first(.unknownTemplateVariable))
        #expect(diagnostic.message.contains("did you mean \"prompt\""))

        let leaky = Fixture.harness.replacingOccurrences(
            of: "\"{{prompt}}\"]", with: "\"{{prompt}}\", \"{{model.apiKey}}\"]")
        #expect(validate(Fixture.repository(["harnesses/hermes.yaml": leaky])).codes() == ["secret-in-file"])
    }

    @Test func duplicateSecretBindings() {
        let agent = Fixture.agent(spec: "secrets:\n  - {env: A, ref: x}\n  - {env: A, ref: y}")
        #expect(validate(Fixture.repository(["agents/triage.yaml": agent])).codes() == ["duplicate-name"])
    }

    @Test func onlyResourceFilesAreRead() {
        var files = Fixture.repository()
        files[".github/workflows/ci.yaml"] = "- not: a resource"
        files["skills/gh-triage/examples/config.yaml"] = "- neither"
        #expect(validate(files).isValid)
    }
}
