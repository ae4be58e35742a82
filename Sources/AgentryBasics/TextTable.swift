/// Columns of text aligned with two spaces between them, as `status` and `history` print them.
/// The last column is not padded, and no line ends in spaces.
public struct TextTable: Sendable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(_ header: [String]) {
        self.header = header
    }

    public mutating func append(_ row: [String]) {
        rows.append(row)
    }

    public var rendered: String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        return all.map { row in
            var line = ""
            for (column, cell) in row.enumerated() {
                if column > 0 { line += "  " }
                line += cell
                if column < row.count - 1 { line += String(repeating: " ", count: max(0, widths[column] - cell.count)) }
            }
            while line.hasSuffix(" ") { line.removeLast() }
            return line + "\n"
        }.joined()
    }
}
