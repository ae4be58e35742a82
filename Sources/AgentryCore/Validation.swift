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
        let parseCache = ports.parseCache
        return try await BlockingWork.run {
            let clock = ContinuousClock()
            let start = clock.now
            switch location {
            case .git(let repository, let ref, let path):
                // Through the parse cache: what this commit's files parsed to is remembered for the
                // diff and plan that usually follow (and a commit validated before costs nothing).
                let loaded = try reporting(.repositoryUnavailable) {
                    try source.reader(repository: repository, path: path, cache: parseCache).load(ref)
                }
                let report = loaded.report
                logger.debug(
                    "validated",
                    metadata: [
                        "errors": "\(report.errorCount)", "warnings": "\(report.warningCount)",
                        "files": "\(report.filesChecked)", "parsed": "\(loaded.parsedFiles)",
                        "mode": "\(loaded.mode.rawValue)", "time": "\(clock.now - start)",
                    ])
                return Outcome(
                    report: report,
                    source: .git(
                        repository: repository, ref: ref, commit: loaded.commit,
                        path: String(loaded.displayPrefix.dropLast())),
                    uncommitted: ref == "HEAD" ? source.uncommittedChanges(repository, path: path) : [])
            case .directory(let path):
                let loaded = try reporting(.repositoryUnavailable) { try source.folder(path) }
                let report = RepositoryValidator.validate(loaded.tree, displayPrefix: loaded.displayPrefix)
                logger.debug(
                    "validated",
                    metadata: [
                        "errors": "\(report.errorCount)", "warnings": "\(report.warningCount)",
                        "files": "\(report.filesChecked)", "time": "\(clock.now - start)",
                    ])
                return Outcome(report: report, source: loaded.source)
            }
        }
    }
}
