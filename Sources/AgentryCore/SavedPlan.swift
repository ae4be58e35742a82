import AgentryPlan
import Foundation

/// A plan saved by `agentry plan --out`: what it was computed from.
public struct SavedPlan: Sendable {
    public var repository: String
    public var ref: String
    public var path: String
    public var commit: String
    public var actualDigest: String
    /// What it says to do: agent → action and the revision it goes to.
    public var actions: [String: (action: String, toRevision: String?)]

    /// Reads a saved plan's JSON; `name` is the file, for the message when it is not one.
    public static func parse(_ bytes: [UInt8], name: String) throws -> SavedPlan {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            object["formatVersion"] as? Int == PlanOutput.formatVersion, object["kind"] as? String == "plan",
            let repository = object["repository"] as? String, let ref = object["ref"] as? String,
            let path = object["path"] as? String, let commit = object["commit"] as? String,
            let digest = object["actualDigest"] as? String, let listed = object["actions"] as? [[String: Any]]
        else {
            throw CoreError(
                .invalidArgument,
                "\(name) is not a plan saved by `agentry plan --out` (formatVersion \(PlanOutput.formatVersion))")
        }
        var actions: [String: (action: String, toRevision: String?)] = [:]
        for item in listed {
            guard let agent = item["agent"] as? String, let action = item["action"] as? String else {
                throw CoreError(.invalidArgument, "\(name) lists an action without an agent or an action")
            }
            actions[agent] = (action, item["toRevision"] as? String)
        }
        return SavedPlan(
            repository: repository, ref: ref, path: path, commit: commit, actualDigest: digest, actions: actions)
    }

    /// How the plan made now differs from this one, a line per agent; empty when it is the same.
    func differences(from plan: Plan) -> [String] {
        var lines: [String] = []
        let now = Dictionary(plan.actions.map { ($0.agent, $0) }, uniquingKeysWith: { a, _ in a })
        for name in Set(now.keys).union(actions.keys).sorted() {
            let saved = actions[name]
            let current = now[name]
            switch (saved, current) {
            case (let saved?, let current?):
                if saved.action != current.action.rawValue {
                    lines.append("\(name): \(saved.action) in the saved plan, \(current.action.rawValue) now")
                } else if saved.toRevision != current.toRevision {
                    let shown = { (revision: String?) in revision.map { String($0.prefix(12)) } ?? "none" }
                    lines.append(
                        "\(name): revision \(shown(saved.toRevision)) in the saved plan, \(shown(current.toRevision)) now"
                    )
                }
            case (let saved?, nil):
                lines.append("\(name): \(saved.action) in the saved plan, not an agent now")
            case (nil, let current?):
                lines.append("\(name): missing from the saved plan, \(current.action.rawValue) now")
            case (nil, nil):
                break
            }
        }
        return lines
    }
}
