import AgentryRender
import Foundation
import Metrics

/// What `agentry serve` counts, through swift-metrics (the service bootstraps a Prometheus
/// backend; elsewhere these go nowhere). Each metric always has the same label names, and every
/// label value comes from the repository or from agentry, never from a guest.
public enum ServiceMetrics {
    public static let runDuration = "agentry_run_duration_seconds"
    public static let reconcileDuration = "agentry_reconcile_duration_seconds"
    /// Histogram buckets: runs take minutes, passes seconds.
    public static let runBuckets: [Duration] = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600].map { .seconds($0) }
    public static let reconcileBuckets: [Duration] = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300].map { .seconds($0) }
    /// The machine states `agentry_machines` reports, each always present (0 when none).
    public static let machineStates = ["running", "starting", "stopped", "killed", "absent", "other"]

    /// A run ended: by agent and status, its duration, and its agent's model tokens by Model.
    static func runEnded(_ run: ServiceRun, usage: ModelUsage?) {
        Counter(label: "agentry_runs_total", dimensions: [("agent", run.agent), ("status", run.status.rawValue)])
            .increment()
        if let started = run.startedAt, let finished = run.finishedAt, finished >= started {
            Timer(label: runDuration, dimensions: [("agent", run.agent)])
                .recordNanoseconds(Int64(finished.timeIntervalSince(started) * 1e9))
        }
        for (model, used) in usage?.byModel ?? [:] {
            Counter(label: "agentry_model_tokens_total", dimensions: [("model", model), ("direction", "input")])
                .increment(by: used.input)
            Counter(label: "agentry_model_tokens_total", dimensions: [("model", model), ("direction", "output")])
                .increment(by: used.output)
        }
    }

    /// Runs waiting and carrying on, over all agents.
    public static func queue(waiting: Int, active: Int) {
        Gauge(label: "agentry_runs_queued").record(waiting)
        Gauge(label: "agentry_runs_active").record(active)
    }

    static func reconciled(result: String, duration: Duration) {
        Counter(label: "agentry_reconcile_passes_total", dimensions: [("result", result)]).increment()
        Timer(label: reconcileDuration).recordNanoseconds(Int64(duration / .nanoseconds(1)))
    }

    /// `result`: succeeded, failed, or timedOut (the pass went on without waiting longer).
    static func fetched(_ result: String) {
        Counter(label: "agentry_source_fetches_total", dimensions: [("result", result)]).increment()
    }

    static func scheduled(_ outcome: ScheduleEvent.Outcome) {
        Counter(label: "agentry_schedule_events_total", dimensions: [("outcome", outcome.rawValue)]).increment()
    }

    /// A webhook came in (`provider` github or gitlab), answered with `status`.
    public static func webhookReceived(provider: String, status: Int) {
        Counter(
            label: "agentry_webhooks_received_total", dimensions: [("provider", provider), ("status", String(status))]
        ).increment()
    }

    /// A webhook out was attempted: `delivered`, `retrying` or `failed` (for good).
    static func delivery(_ result: String) {
        Counter(label: "agentry_webhook_deliveries_total", dimensions: [("result", result)]).increment()
    }

    /// Machines by the state the state directory last recorded for them.
    public static func machines(_ states: [String?]) {
        var counts = Dictionary(uniqueKeysWithValues: machineStates.map { ($0, 0) })
        for state in states {
            let known = state.flatMap { machineStates.contains($0) ? $0 : nil } ?? (state == nil ? "absent" : "other")
            counts[known, default: 0] += 1
        }
        for (state, count) in counts {
            Gauge(label: "agentry_machines", dimensions: [("state", state)]).record(count)
        }
    }
}
