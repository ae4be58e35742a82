import AgentryModel
import Foundation
import Testing

/// `run.schedule`: which cron expressions read, and when each next fires, in UTC and in a zone
/// with daylight saving.
@Suite struct CronScheduleTests {
    static let utc = TimeZone(identifier: "UTC")!

    func time(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    func next(_ expression: String, after: String, zone: String = "UTC") -> String? {
        guard let cron = CronSchedule(expression), let zone = TimeZone(identifier: zone) else { return nil }
        return cron.next(after: time(after), in: zone).map { ISO8601DateFormatter().string(from: $0) }
    }

    @Test func cronExpressionsAndMacrosRead() {
        for valid in [
            "* * * * *", "0 9 * * 1-5", "*/15 * * * *", "0 0 1 jan,jul *", "@daily", "@HOURLY", "30 4 * * sun",
            "0 12 * * 7", "5/20 * * * *", "0-30/10 8-18 * * MON-FRI", "0 0 29 2 *",
        ] {
            #expect(CronSchedule(valid) != nil, "\(valid)")
        }
        for invalid in [
            "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
            "*/0 * * * *", "5-1 * * * *", "0 0 30 2 *", "@reboot", "a b c d e", "1,,2 * * * *", "-1 * * * *",
            "٣ * * * *",
        ] {
            #expect(CronSchedule(invalid) == nil, "\(invalid)")
        }
    }

    @Test func theNextTimeIsTheFirstMatchingMinuteStrictlyAfter() {
        // 2026-12-04 is a Friday.
        #expect(next("0 9 * * 1-5", after: "2026-12-04T10:00:00Z") == "2026-12-07T09:00:00Z")
        #expect(next("*/15 * * * *", after: "2026-12-04T10:07:30Z") == "2026-12-04T10:15:00Z")
        #expect(next("*/15 * * * *", after: "2026-12-04T10:15:00Z") == "2026-12-04T10:30:00Z")
        #expect(next("* * * * *", after: "2026-12-31T23:59:59Z") == "2027-01-01T00:00:00Z")
        #expect(next("@monthly", after: "2026-12-04T10:00:00Z") == "2027-01-01T00:00:00Z")
        #expect(next("0 0 29 2 *", after: "2026-01-01T00:00:00Z") == "2028-02-29T00:00:00Z")
        // Both day fields restricted: either one matches (the 13th, or a Friday).
        #expect(next("0 0 13 * 5", after: "2026-12-04T00:00:00Z") == "2026-12-11T00:00:00Z")
        #expect(next("0 0 13 * 5", after: "2026-12-11T00:00:00Z") == "2026-12-13T00:00:00Z")
        // A step restricts a day field: every other day of the month, every other weekday.
        #expect(next("0 0 */2 * *", after: "2025-03-01T00:00:00Z") == "2025-03-03T00:00:00Z")
        #expect(next("0 9 * * */2", after: "2026-12-07T10:00:00Z") == "2026-12-08T09:00:00Z")
    }

    @Test func aTimeZoneMovesTheHourAndADaylightSavingGapSkipsADay() {
        #expect(next("0 9 * * *", after: "2026-07-01T00:00:00Z", zone: "Europe/Paris") == "2026-07-01T07:00:00Z")
        #expect(next("0 9 * * *", after: "2026-12-01T00:00:00Z", zone: "Europe/Paris") == "2026-12-01T08:00:00Z")
        // 2026-03-29 02:30 does not exist in Paris (02:00 becomes 03:00): that day is skipped.
        #expect(next("30 2 * * *", after: "2026-03-28T12:00:00Z", zone: "Europe/Paris") == "2026-03-30T00:30:00Z")
        // 2026-10-25 02:30 happens twice in Paris: it fires at the first.
        #expect(next("30 2 * * *", after: "2026-10-24T12:00:00Z", zone: "Europe/Paris") == "2026-10-25T00:30:00Z")
    }

    @Test func aBadScheduleOrZoneIsAnErrorAtItsField() {
        let report = validate(
            Fixture.repository([
                "agents/triage.yaml": Fixture.agent(
                    spec: "run:\n  schedule: \"61 * * * *\"\n  timeZone: Mars/Olympus")
            ]))
        let errors = report.diagnostics.filter { $0.severity == .error }
        #expect(errors.count == 2, "\(errors)")
        let schedule = errors.first { $0.message.contains("cron") }
        #expect(
            schedule?.file == "agents/triage.yaml" && schedule?.mark.line == 13 && schedule?.mark.column == 15,
            "\(errors)")
        #expect(schedule?.message.contains("minute hour day-of-month month day-of-week") == true)
        let zone = errors.first { $0.message.contains("time zone") }
        #expect(zone?.mark.line == 14, "\(errors)")
        let good = validate(
            Fixture.repository([
                "agents/triage.yaml": Fixture.agent(spec: "run: {schedule: \"0 9 * * 1-5\", timeZone: Europe/Paris}")
            ]))
        #expect(good.diagnostics.filter { $0.severity == .error }.isEmpty, "\(good.diagnostics)")
        let agent = good.catalog.agents.first
        // A schedule with no prompt to give its runs: said, as a warning.
        let bare = validate(
            Fixture.repository(["agents/triage.yaml": Fixture.agent(spec: "run: {schedule: \"@daily\"}")]))
        let warning = bare.diagnostics.first { $0.severity == .warning && $0.message.contains("spec.run.prompt") }
        #expect(warning?.mark.line == 12, "\(bare.diagnostics)")
        #expect(agent?.run.schedule == RunSchedule(expression: "0 9 * * 1-5", timeZone: "Europe/Paris"))
    }
}
