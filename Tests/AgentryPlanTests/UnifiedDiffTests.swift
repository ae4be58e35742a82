import AgentryPlan
import Testing

@Suite struct UnifiedDiffTests {
    /// The hunks GNU `diff -u` prints for the same two texts.
    @Test func hunksReadAsDiffUPrintsThem() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\n"
        let new = "a\nB\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\n"
        #expect(
            UnifiedDiff.hunks(old: old, new: new) == [
                "@@ -1,5 +1,5 @@", " a", "-b", "+B", " c", " d", " e",
                "@@ -10,3 +10,4 @@", " j", " k", " l", "+m",
            ])
        #expect(UnifiedDiff.hunks(old: "same\n", new: "same\n").isEmpty)
        #expect(UnifiedDiff.hunks(old: "", new: "x\ny\n") == ["@@ -0,0 +1,2 @@", "+x", "+y"])
    }

    /// Whatever the texts, applying the hunks to the old text gives the new one.
    @Test(arguments: 0..<40) func hunksTurnTheOldTextIntoTheNew(_ seed: Int) {
        var random = Seeded(seed)
        let words = ["alpha", "beta", "gamma", "delta", "", "`tick`", "omega"]
        func text() -> [String] { (0..<random.next(30)).map { _ in words[random.next(words.count)] } }
        let old = text()
        var new = old
        for _ in 0..<random.next(6) {
            switch random.next(3) {
            case 0 where !new.isEmpty: new.remove(at: random.next(new.count))
            case 1: new.insert(words[random.next(words.count)], at: random.next(new.count + 1))
            default: if !new.isEmpty { new[random.next(new.count)] = "changed" }
            }
        }
        let join = { (lines: [String]) in lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n" }
        let hunks = UnifiedDiff.hunks(old: join(old), new: join(new))
        #expect(apply(hunks, to: old) == new, "\(old) → \(new): \(hunks)")
    }

    /// A minimal `patch`: checks context and removed lines as it goes.
    func apply(_ hunks: [String], to old: [String]) -> [String]? {
        var result: [String] = []
        var position = 0
        var index = 0
        while index < hunks.count {
            let header = hunks[index].split(separator: " ")
            guard header.first == "@@", header.count >= 3 else { return nil }
            let start = header[1].dropFirst().split(separator: ",").first.flatMap { Int($0) } ?? 0
            let count = header[1].split(separator: ",").last.flatMap { Int($0) } ?? 0
            let from = count == 0 ? start : start - 1
            guard from >= position, from <= old.count else { return nil }
            result += old[position..<from]
            position = from
            index += 1
            while index < hunks.count && !hunks[index].hasPrefix("@@") {
                let line = hunks[index]
                let body = String(line.dropFirst())
                switch line.first {
                case " ", "-":
                    guard position < old.count, old[position] == body else { return nil }
                    if line.first == " " { result.append(body) }
                    position += 1
                case "+": result.append(body)
                default: return nil
                }
                index += 1
            }
        }
        return result + old[position...]
    }

    struct Seeded {
        var state: UInt64
        init(_ seed: Int) { state = UInt64(seed) &* 6_364_136_223_846_793_005 &+ 1 }
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return bound <= 0 ? 0 : Int((state >> 33) % UInt64(bound))
        }
    }
}
