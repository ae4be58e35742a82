import AgentryModel
import Logging

/// Where to read an agent repository from: a git commit or a plain folder.
public enum RepositoryLocation: Sendable {
    case git(repository: String, ref: String, path: String)
    case directory(String)
}

/// Loading and validating in one call, for the CLI and for later stages (planning) alike.
public enum Validation {
    public struct Outcome: Sendable {
        public var report: ValidationReport
        public var source: SourceDescription
    }

    public static func run(_ location: RepositoryLocation, logger: Logger) throws -> Outcome {
        let clock = ContinuousClock()
        let start = clock.now
        let loaded: LoadedRepository
        switch location {
        case .git(let repository, let ref, let path):
            loaded = try RepositoryLoader.fromGit(repository: repository, ref: ref, path: path, logger: logger)
        case .directory(let path):
            loaded = try RepositoryLoader.fromDirectory(path, logger: logger)
        }
        let loadedAt = clock.now
        let report = RepositoryValidator.validate(loaded.tree, displayPrefix: loaded.displayPrefix)
        logger.debug(
            "validated",
            metadata: [
                "errors": "\(report.errorCount)", "warnings": "\(report.warningCount)", "files": "\(report.filesChecked)",
                "load": "\(loadedAt - start)", "validate": "\(clock.now - loadedAt)",
            ])
        return Outcome(report: report, source: loaded.source)
    }
}
