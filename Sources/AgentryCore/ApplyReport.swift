import AgentryBasics
import AgentryModel
import AgentryPlan

/// What an apply did, as `apply` prints it: a summary line, and `-o json` for CI.
extension Apply.Outcome {
    public static let formatVersion = 1

    /// `done`, `failed`, `blocked` or `skipped`.
    public static func outcome(of step: AppliedStep) -> String {
        if step.failed { return "failed" }
        if step.skipped { return "skipped" }
        return step.action == .blocked ? "blocked" : "done"
    }

    /// Steps by what they did: `created: 2`, `restarted: 1`, ... (only actions carried out).
    var counts: [(String, Int)] {
        var counts: [String: Int] = [:]
        for step in steps where !step.failed && !step.skipped {
            counts[Self.pastTense(step.action), default: 0] += 1
        }
        return counts.sorted { $0.key < $1.key }
    }

    static func pastTense(_ action: Action) -> String {
        switch action {
        case .create: "created"
        case .update: "updated"
        case .restart: "restarted"
        case .reinstall: "reinstalled"
        case .replace: "replaced"
        case .pause: "paused"
        case .resume: "resumed"
        case .revoke: "revoked"
        case .delete: "deleted"
        case .repair: "repaired"
        case .blocked: "blocked"
        case .noop: "unchanged"
        }
    }

    /// `Apply complete: 2 created, 1 restarted, 0 failed in 7.4s`.
    public var summaryLine: String {
        if declined { return "Apply cancelled: nothing was changed." }
        let failed = steps.filter(\.failed).count
        let skipped = steps.filter(\.skipped).count
        var parts = counts.map { "\($0.1) \($0.0)" }
        if skipped > 0 { parts.append("\(skipped) skipped") }
        parts.append("\(failed) failed")
        let seconds = DurationText.seconds(milliseconds: Int(duration.milliseconds))
        return
            "Apply \(failed > 0 ? "finished with failures" : "complete"): \(parts.joined(separator: ", ")) in \(seconds)"
    }

    /// `{"formatVersion": 1, "kind": "apply", "commit": ..., "results": [...], "summary": {...}}`.
    public var json: String {
        var commit: JSON = .null
        var valid = true
        var error: JSON = .null
        switch plan {
        case .planned(let document): commit = .string(document.commit)
        case .invalid: valid = false
        case .refused(let refusal): error = .string("refusing to plan: \(refusal)")
        }
        let results = steps.map { step in
            JSON.object([
                ("agent", .string(step.agent)),
                ("action", .string(step.action.rawValue)),
                ("outcome", .string(Self.outcome(of: step))),
                ("message", .string(step.detail)),
                ("durationMs", .int(Int(step.duration.milliseconds))),
            ])
        }
        var summary: [(String, JSON)] = counts.map { ($0.0, .int($0.1)) }
        summary.append(("skipped", .int(steps.filter(\.skipped).count)))
        summary.append(("failed", .int(steps.filter(\.failed).count)))
        summary.append(("durationMs", .int(Int(duration.milliseconds))))
        let document = JSON.object([
            ("formatVersion", .int(Self.formatVersion)),
            ("kind", .string("apply")),
            ("valid", .bool(valid)),
            ("commit", commit),
            ("approved", .bool(!declined)),
            ("error", error),
            ("results", .array(results)),
            ("summary", .object(summary)),
        ])
        return document.rendered() + "\n"
    }
}
