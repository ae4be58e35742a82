/// Where a validated repository was read from, for reports.
public enum SourceDescription: Sendable {
    case git(repository: String, ref: String, commit: String, path: String)
    case directory(path: String)
}

/// Renders a `ValidationReport` for people (`text`), machines (`json`) and GitHub Actions (`github`).
public enum ValidationOutput {
    /// Bumped only when a field is removed or changes meaning; new fields may appear at any time.
    public static let formatVersion = 1

    public static func text(_ report: ValidationReport, warningsAsErrors: Bool = false) -> String {
        var lines = report.diagnostics.map { diagnostic in
            "\(diagnostic.file):\(diagnostic.mark.line):\(diagnostic.mark.column): \(diagnostic.severity.rawValue)[\(diagnostic.code.rawValue)]: \(diagnostic.message)"
        }
        lines.append(summary(report, warningsAsErrors: warningsAsErrors))
        return lines.joined(separator: "\n") + "\n"
    }

    /// Whether the report passes: no errors, and no warnings when they count as errors.
    public static func passes(_ report: ValidationReport, warningsAsErrors: Bool) -> Bool {
        report.isValid && !(warningsAsErrors && report.warningCount > 0)
    }

    public static func summary(_ report: ValidationReport, warningsAsErrors: Bool = false) -> String {
        let index = report.index
        let counts =
            "\(plural(index.agents.count, "agent")), \(plural(index.harnesses.count, "harness", "harnesses")), \(plural(index.models.count, "model")), \(plural(index.environments.count, "environment")), \(plural(index.skills.count, "skill"))"
        if report.isValid && !passes(report, warningsAsErrors: warningsAsErrors) {
            return
                "invalid: 0 errors, \(plural(report.warningCount, "warning")) (--warnings-as-errors) in \(plural(report.filesChecked, "file")) (\(counts))"
        }
        if report.isValid {
            let warnings = report.warningCount > 0 ? " with \(plural(report.warningCount, "warning"))" : ""
            return "valid\(warnings): \(plural(report.filesChecked, "file")) (\(counts))"
        }
        return
            "invalid: \(plural(report.errorCount, "error")), \(plural(report.warningCount, "warning")) in \(plural(report.filesChecked, "file")) (\(counts))"
    }

    static func plural(_ count: Int, _ singular: String, _ plural: String? = nil) -> String {
        "\(count) \(count == 1 ? singular : (plural ?? singular + "s"))"
    }

    public static func json(_ report: ValidationReport, source: SourceDescription, warningsAsErrors: Bool = false)
        -> String
    {
        let sourceJSON: JSON
        switch source {
        case .git(let repository, let ref, let commit, let path):
            sourceJSON = .object([
                ("type", .string("git")), ("repository", .string(repository)), ("ref", .string(ref)),
                ("commit", .string(commit)), ("path", .string(path)),
            ])
        case .directory(let path):
            sourceJSON = .object([("type", .string("directory")), ("path", .string(path))])
        }
        let index = report.index
        let document = JSON.object([
            ("formatVersion", .int(formatVersion)),
            ("valid", .bool(passes(report, warningsAsErrors: warningsAsErrors))),
            ("source", sourceJSON),
            (
                "summary",
                .object([
                    ("files", .int(report.filesChecked)),
                    ("errors", .int(report.errorCount)),
                    ("warnings", .int(report.warningCount)),
                    ("agents", .int(index.agents.count)),
                    ("harnesses", .int(index.harnesses.count)),
                    ("models", .int(index.models.count)),
                    ("environments", .int(index.environments.count)),
                    ("skills", .int(index.skills.count)),
                ])
            ),
            (
                "diagnostics",
                .array(report.diagnostics.map(diagnosticJSON))
            ),
        ])
        return document.rendered() + "\n"
    }

    /// One diagnostic as every JSON document of agentry gives it.
    public static func diagnosticJSON(_ diagnostic: Diagnostic) -> JSON {
        .object([
            ("file", .string(diagnostic.file)),
            ("line", .int(diagnostic.mark.line)),
            ("column", .int(diagnostic.mark.column)),
            ("severity", .string(diagnostic.severity.rawValue)),
            ("code", .string(diagnostic.code.rawValue)),
            ("category", .string(diagnostic.category.rawValue)),
            ("message", .string(diagnostic.message)),
        ])
    }

    /// GitHub Actions workflow commands: each diagnostic becomes an annotation on the pull request.
    public static func github(_ report: ValidationReport, warningsAsErrors: Bool = false) -> String {
        var lines = report.diagnostics.map { diagnostic in
            let properties = [
                "file=\(escapeProperty(diagnostic.file))",
                "line=\(diagnostic.mark.line)",
                "col=\(diagnostic.mark.column)",
                "title=\(escapeProperty("agentry " + diagnostic.code.rawValue))",
            ].joined(separator: ",")
            return "::\(diagnostic.severity.rawValue) \(properties)::\(escapeData(diagnostic.message))"
        }
        lines.append(summary(report, warningsAsErrors: warningsAsErrors))
        return lines.joined(separator: "\n") + "\n"
    }

    static func escapeData(_ text: String) -> String {
        text.replacingAll("%", with: "%25").replacingAll("\r", with: "%0D").replacingAll("\n", with: "%0A")
    }

    static func escapeProperty(_ text: String) -> String {
        escapeData(text).replacingAll(":", with: "%3A").replacingAll(",", with: "%2C")
    }
}

extension String {
    /// Replaces every occurrence of `target` (without Foundation).
    public func replacingAll(_ target: String, with replacement: String) -> String {
        guard contains(target) else { return self }
        return split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
