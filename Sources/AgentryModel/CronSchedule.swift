import Foundation

/// A five-field cron expression (`minute hour day-of-month month day-of-week`), as Vixie cron and
/// Kubernetes CronJobs read it: `*`, lists (`1,15`), ranges (`1-5`), steps (`*/15`, `10-50/10`),
/// month and day names (`jan`, `mon-fri`), `7` as Sunday, and the macros `@yearly`, `@monthly`,
/// `@weekly`, `@daily` and `@hourly`. When both day fields are restricted (anything but a bare `*`;
/// `*/2` restricts), a day matching either one fires, as Kubernetes CronJobs read it.
public struct CronSchedule: Sendable, Hashable {
    public let expression: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    /// 0 is Sunday.
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Nil when `expression` is not a valid five-field cron expression (or a macro), or names a
    /// day that never comes (`0 0 30 2 *`).
    public init?(_ expression: String) {
        let trimmed = expression.trimmingCharacters(in: .whitespaces)
        let text = Self.macros[trimmed.lowercased()] ?? trimmed
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map { String($0).lowercased() }
        guard fields.count == 5,
            let minutes = Self.field(fields[0], 0...59, names: []),
            let hours = Self.field(fields[1], 0...23, names: []),
            let days = Self.field(fields[2], 1...31, names: []),
            let months = Self.field(fields[3], 1...12, names: Self.monthNames, firstName: 1),
            let weekdays = Self.field(fields[4], 0...7, names: Self.dayNames, firstName: 0)
        else { return nil }
        self.expression = trimmed
        self.minutes = minutes
        self.hours = hours
        self.daysOfMonth = days
        self.months = months
        self.daysOfWeek = Set(weekdays.map { $0 == 7 ? 0 : $0 })
        // Only a bare `*` leaves a day field open (`*/2` restricts it), as Kubernetes reads it.
        dayOfMonthRestricted = fields[2] != "*"
        dayOfWeekRestricted = fields[4] != "*"
        // A day of the month that no chosen month has never fires (unless the weekday field can).
        let longest = months.map {
            [1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31][$0]!
        }
        .max()!
        if !dayOfWeekRestricted || !dayOfMonthRestricted, days.allSatisfy({ $0 > longest }) { return nil }
    }

    /// One field: comma-separated items, each `*`, `N`, `N-M` or a name, optionally `/step`.
    static func field(_ text: String, _ range: ClosedRange<Int>, names: [String], firstName: Int = 0) -> Set<Int>? {
        func value(_ part: Substring) -> Int? {
            if let number = Int(part), range.contains(number), part.allSatisfy(\.isASCII) { return number }
            if let index = names.firstIndex(of: String(part)) { return index + firstName }
            return nil
        }
        var result = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = item.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed >= 1, parsed <= range.upperBound else { return nil }
                step = parsed
            }
            let base = pieces[0]
            var low: Int
            var high: Int
            if base == "*" {
                low = range.lowerBound
                high = range.upperBound
            } else if let dash = base.firstIndex(of: "-") {
                guard let first = value(base[..<dash]), let last = value(base[base.index(after: dash)...]),
                    first <= last
                else { return nil }
                low = first
                high = last
            } else {
                guard let single = value(base) else { return nil }
                low = single
                // `N/step` means from N to the end, as cron reads it.
                high = pieces.count == 2 ? range.upperBound : single
            }
            result.formUnion(stride(from: low, through: high, by: step))
        }
        return result.isEmpty ? nil : result
    }

    func matchesDay(_ day: Int, weekday: Int) -> Bool {
        switch (dayOfMonthRestricted, dayOfWeekRestricted) {
        case (true, true): return daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
        case (true, false): return daysOfMonth.contains(day)
        case (false, true): return daysOfWeek.contains(weekday)
        case (false, false): return true
        }
    }

    /// The first time after `date` (strictly) that the schedule fires, in `timeZone`; nil if none
    /// within eight years. A local time skipped by a daylight-saving change does not fire that
    /// day; one that happens twice fires at its first.
    public func next(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let sortedHours = hours.sorted()
        let sortedMinutes = minutes.sorted()
        // Whole minutes: the first candidate is the minute after `date`'s.
        let start = calendar.dateComponents([.year, .month, .day], from: date)
        guard var day = calendar.date(from: start) else { return nil }
        for _ in 0..<(8 * 366) {
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if let month = parts.month, let dayOfMonth = parts.day, let weekday = parts.weekday,
                months.contains(month), matchesDay(dayOfMonth, weekday: weekday - 1)
            {
                for hour in sortedHours {
                    for minute in sortedMinutes {
                        var wanted = parts
                        wanted.weekday = nil
                        wanted.hour = hour
                        wanted.minute = minute
                        wanted.second = 0
                        guard let candidate = calendar.date(from: wanted), candidate > date else { continue }
                        // A local time that does not exist today (a daylight-saving gap) is skipped.
                        let back = calendar.dateComponents([.day, .hour, .minute], from: candidate)
                        guard back.day == dayOfMonth, back.hour == hour, back.minute == minute else { continue }
                        return candidate
                    }
                }
            }
            guard let following = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = following
        }
        return nil
    }
}
