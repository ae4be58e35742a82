import AgentryModel
import Foundation
import Logging

/// The agents' `run.schedule`s in `agentry serve`: each fires at its due minutes (in its time
/// zone), starting a run with trigger `schedule`, or skipping when the agent's last run is still
/// going or waiting. Schedules follow the commit the reconcile loop last read; times missed while
/// the service was down are not caught up (a CronJob without a starting deadline).
public actor Scheduler {
    public struct Entry: Sendable, Equatable {
        public var schedule: RunSchedule
        public var next: Date?
    }

    let runs: RunService
    let clock: any WallClock
    var logger: Logger
    var entries: [String: Entry] = [:]
    var wake: AsyncStream<Void>.Continuation?

    public init(runs: RunService, clock: any WallClock, logger: Logger) {
        self.runs = runs
        self.clock = clock
        self.logger = logger
    }

    /// The agent's schedule and when it next fires, if it has one.
    public func entry(of agent: String) -> Entry? { entries[agent] }

    /// Takes the schedules of a commit: new and changed ones count from now, unchanged ones keep
    /// their next time, and agents without one lose theirs.
    public func update(_ schedules: [String: RunSchedule]) {
        let now = clock.now()
        var updated: [String: Entry] = [:]
        for (agent, schedule) in schedules {
            if let current = entries[agent], current.schedule == schedule {
                updated[agent] = current
            } else {
                updated[agent] = Entry(schedule: schedule, next: schedule.next(after: now))
            }
        }
        if updated != entries {
            entries = updated
            wake?.yield()
        }
    }

    /// Fires every schedule due at `now` (once, however late), and moves each to its next time.
    @discardableResult
    public func tick(now: Date) async -> [ScheduleEvent] {
        var events: [ScheduleEvent] = []
        for (agent, entry) in entries.sorted(by: { $0.key < $1.key }) {
            guard let due = entry.next, due <= now else { continue }
            events.append(await runs.fireSchedule(agent: agent, dueAt: due))
            // The entry may have changed while the run was submitted.
            if entries[agent]?.schedule == entry.schedule {
                entries[agent]?.next = entry.schedule.next(after: max(now, due))
            }
        }
        return events
    }

    /// Fires schedules until cancelled: wakes at the earliest due time (at least once a minute, so a
    /// clock that jumps is noticed), or when the schedules change.
    public func run() async {
        var signal = WakeSignal()
        wake = signal.continuation
        while !Task.isCancelled {
            await tick(now: clock.now())
            await signal.wait(until: entries.values.compactMap(\.next).min(), now: clock.now())
        }
    }
}
