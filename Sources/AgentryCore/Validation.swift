import AgentryBasics
import AgentryModel
import Logging

/// `agentry validate`: loading and validating in one call.
public enum Validation {
    public struct Outcome: Sendable {
        public var report: ValidationReport
        public var source: SourceDescription
        /// Files of the agent repository changed in the work tree but not committed, when HEAD was
        /// validated: validate reads the commit, so they were not checked.
        public var uncommitted: [String] = []
    }

    public static func run(_ location: RepositoryLocation, ports: Ports) async throws -> Outcome {
        let source = ports.source
        let logger = ports.logger
        return try await BlockingWork.run {
            let clock = ContinuousClock()
            let start = clock.now
            let loaded = try reporting(.repositoryUnavailable) { () throws -> LoadedRepository in
                switch location {
                case .git(let repository, let ref, let path):
                    return try source.reader(repository: repository, path: path, cache: nil).tree(ref)
                case .directory(let path):
                    return try source.folder(path)
                }
            }
            let loadedAt = clock.now
            let report = RepositoryValidator.validate(loaded.tree, displayPrefix: loaded.displayPrefix)
            logger.debug(
                "validated",
                metadata: [
                    "errors": "\(report.errorCount)", "warnings": "\(report.warningCount)",
                    "files": "\(report.filesChecked)",
                    "load": "\(loadedAt - start)", "validate": "\(clock.now - loadedAt)",
                ])
            var outcome = Outcome(report: report, source: loaded.source)
            if case .git(let repository, let ref, let path) = location, ref == "HEAD" {
                outcome.uncommitted = source.uncommittedChanges(repository, path: path)
            }
            return outcome
        }
    }
}
