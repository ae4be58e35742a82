import AgentryPlan
import Foundation

/// A plan saved by `agentry plan --out`: what it was computed from.
public struct SavedPlan: Sendable {
    public var repository: String
    public var ref: String
    public var path: String
    public var commit: String
    public var actualDigest: String

    /// Reads a saved plan's JSON; `name` is the file, for the message when it is not one.
    public static func parse(_ bytes: [UInt8], name: String) throws -> SavedPlan {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            object["formatVersion"] as? Int == PlanOutput.formatVersion, object["kind"] as? String == "plan",
            let repository = object["repository"] as? String, let ref = object["ref"] as? String,
            let path = object["path"] as? String, let commit = object["commit"] as? String,
            let digest = object["actualDigest"] as? String
        else {
            throw CoreError(
                .invalidArgument,
                "\(name) is not a plan saved by `agentry plan --out` (formatVersion \(PlanOutput.formatVersion))")
        }
        return SavedPlan(repository: repository, ref: ref, path: path, commit: commit, actualDigest: digest)
    }
}
