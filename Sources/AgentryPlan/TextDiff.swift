/// A changed text behind a plan's digests (instructions, a skill's files), shown as a unified diff:
/// once per text, with the agents it affects.
public struct TextChange: Sendable, Hashable {
    /// `skills/greeting/SKILL.md`, or `hello: instructions` for an agent's own text.
    public var path: String
    public var old: String?
    public var new: String?
    public var agents: [String]

    public init(path: String, old: String?, new: String?, agents: [String]) {
        self.path = path
        self.old = old
        self.new = new
        self.agents = agents
    }

    /// The unified diff, `---`/`+++` headers included.
    public var unifiedDiff: [String] {
        ["--- " + (old == nil ? "/dev/null" : "a/" + path), "+++ " + (new == nil ? "/dev/null" : "b/" + path)]
            + UnifiedDiff.hunks(old: old ?? "", new: new ?? "")
    }
}

/// Line-based unified diffs (an LCS over lines, three lines of context).
public enum UnifiedDiff {
    /// Texts longer than this many lines on both sides are shown whole (removed, then added)
    /// rather than compared line by line.
    static let comparedLines = 1000

    public static func hunks(old: String, new: String, context: Int = 3) -> [String] {
        let a = lines(old)
        let b = lines(new)
        let edits = script(a, b)
        // Group edits into hunks with `context` lines around changes.
        var output: [String] = []
        var index = 0
        while index < edits.count {
            guard edits[index].kind != .same else {
                index += 1
                continue
            }
            var start = index
            var leading = 0
            while start > 0 && edits[start - 1].kind == .same && leading < context {
                start -= 1
                leading += 1
            }
            // The hunk runs on while changes are at most 2 × `context` unchanged lines apart.
            var lastChange = index
            var cursor = index
            while cursor < edits.count {
                if edits[cursor].kind != .same {
                    lastChange = cursor
                } else if cursor - lastChange > context * 2 {
                    break
                }
                cursor += 1
            }
            let stop = min(edits.count, lastChange + 1 + context)
            let slice = edits[start..<stop]
            let oldStart = slice.first { $0.kind != .added }?.oldLine ?? (slice.first?.oldLine ?? 0)
            let newStart = slice.first { $0.kind != .removed }?.newLine ?? (slice.first?.newLine ?? 0)
            let oldCount = slice.filter { $0.kind != .added }.count
            let newCount = slice.filter { $0.kind != .removed }.count
            output.append(
                "@@ -\(oldCount == 0 ? oldStart : oldStart + 1),\(oldCount) +\(newCount == 0 ? newStart : newStart + 1),\(newCount) @@"
            )
            for edit in slice {
                switch edit.kind {
                case .same: output.append(" " + edit.text)
                case .removed: output.append("-" + edit.text)
                case .added: output.append("+" + edit.text)
                }
            }
            index = stop
        }
        return output
    }

    static func lines(_ text: String) -> [String] {
        guard !text.isEmpty else { return [] }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if text.hasSuffix("\n") { lines.removeLast() }
        return lines
    }

    struct Edit {
        enum Kind { case same, removed, added }
        var kind: Kind
        var text: String
        /// Zero-based positions in the old and new texts where this edit sits.
        var oldLine: Int
        var newLine: Int
    }

    /// The shortest edit script by a longest common subsequence of lines.
    static func script(_ a: [String], _ b: [String]) -> [Edit] {
        // Common prefix and suffix first: most changes touch a few lines of a long text.
        var prefix = 0
        while prefix < a.count && prefix < b.count && a[prefix] == b[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < a.count - prefix && suffix < b.count - prefix
            && a[a.count - 1 - suffix] == b[b.count - 1 - suffix]
        {
            suffix += 1
        }
        let middleA = Array(a[prefix..<(a.count - suffix)])
        let middleB = Array(b[prefix..<(b.count - suffix)])
        var edits: [Edit] = (0..<prefix).map { Edit(kind: .same, text: a[$0], oldLine: $0, newLine: $0) }
        if middleA.count > comparedLines || middleB.count > comparedLines || middleA.isEmpty || middleB.isEmpty {
            edits += middleA.enumerated().map {
                Edit(kind: .removed, text: $0.element, oldLine: prefix + $0.offset, newLine: prefix)
            }
            edits += middleB.enumerated().map {
                Edit(kind: .added, text: $0.element, oldLine: prefix + middleA.count, newLine: prefix + $0.offset)
            }
        } else {
            let n = middleA.count
            let m = middleB.count
            var lengths = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
            for i in stride(from: n - 1, through: 0, by: -1) {
                for j in stride(from: m - 1, through: 0, by: -1) {
                    lengths[i][j] =
                        middleA[i] == middleB[j] ? lengths[i + 1][j + 1] + 1 : max(lengths[i + 1][j], lengths[i][j + 1])
                }
            }
            var i = 0
            var j = 0
            while i < n || j < m {
                if i < n && j < m && middleA[i] == middleB[j] {
                    edits.append(Edit(kind: .same, text: middleA[i], oldLine: prefix + i, newLine: prefix + j))
                    i += 1
                    j += 1
                } else if j < m && (i == n || lengths[i][j + 1] > lengths[i + 1][j]) {
                    edits.append(Edit(kind: .added, text: middleB[j], oldLine: prefix + i, newLine: prefix + j))
                    j += 1
                } else {
                    edits.append(Edit(kind: .removed, text: middleA[i], oldLine: prefix + i, newLine: prefix + j))
                    i += 1
                }
            }
        }
        let base = a.count - suffix
        let baseB = b.count - suffix
        edits += (0..<suffix).map { Edit(kind: .same, text: a[base + $0], oldLine: base + $0, newLine: baseB + $0) }
        return edits
    }
}
