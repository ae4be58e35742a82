import AgentryBasics
import AgentryCore
import AgentryGit
import Foundation

/// The history branch through libgit2: records committed without a work tree (blobs, an updated
/// tree, a commit, a compare-and-swap ref move), pushed to `origin` with replay on a lost race.
/// Each call opens the repository afresh (libgit2 objects are not shared between threads).
public struct GitHistory: HistoryStore {
    /// The host's name, for the committer's address.
    let hostName: String
    /// What a push offers a remote that asks (never written anywhere).
    let credentials: GitCredentials

    public init(hostName: String, credentials: GitCredentials = GitCredentials()) {
        self.hostName = hostName
        self.credentials = credentials
    }

    func branch(_ location: HistoryLocation) throws -> HistoryBranch {
        HistoryBranch(repository: try GitRepository.open(location.repository), branch: location.branch)
    }

    /// Git refuses `<` and `>` in names (and newlines): they are dropped rather than lose a record.
    func signature(_ actor: String) -> Signature {
        let name = String(actor.unicodeScalars.filter { !"<>\n\r".unicodeScalars.contains($0) }.map(Character.init))
            .trimmingCharacters(in: .whitespaces)
        return Signature(name: name.isEmpty ? "agentry" : name, email: "agentry@" + hostName)
    }

    public func record(
        _ files: [HistoryFile], message: String, actor: String, at date: Date, in location: HistoryLocation
    )
        throws -> HistoryCommit
    {
        let history = try branch(location)
        let commit = try history.append(
            files.map { RecordFile(path: $0.path, bytes: $0.bytes) }, message: message, author: signature(actor),
            at: date)
        var warning: String?
        if history.hasOrigin {
            do {
                try history.push(credentials: credentials)
            } catch let error as GitError {
                warning = "history was committed locally but not pushed to origin: \(error.message)"
            }
        }
        return HistoryCommit(commit: "\(commit)", pushWarning: warning)
    }

    public func files(under folder: String, in location: HistoryLocation) throws -> [HistoryFile]? {
        let history = try branch(location)
        guard let entries = try history.files(under: folder) else { return nil }
        var files: [HistoryFile] = []
        for entry in entries {
            guard case .file = entry.kind else { continue }
            files.append(HistoryFile(path: entry.path, bytes: try history.repository.blob(entry.id)))
        }
        return files
    }

    public func paths(under folder: String, in location: HistoryLocation) throws -> [String]? {
        try branch(location).files(under: folder)?.filter {
            if case .file = $0.kind { return true } else { return false }
        }
        .map(\.path)
    }

    public func read(_ path: String, in location: HistoryLocation) throws -> [UInt8]? {
        try branch(location).read(path)
    }

    public func compact(in location: HistoryLocation) throws -> Bool {
        try GitRepository.open(location.repository).packIfDue(consolidating: true) != nil
    }
}
