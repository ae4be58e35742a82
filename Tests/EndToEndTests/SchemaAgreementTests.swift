import Foundation
import TestSupport
import Testing

/// The JSON Schemas in `schemas/` and agentry's own validator must judge every document alike.
@Suite("Schema agreement")
struct SchemaAgreementTests {
    /// Runs the examples and the corpus of Tests/schema-agreement/ through the real binary and Python
    /// `jsonschema` (Tests/schema-agreement/check.py); needs python3 with jsonschema and PyYAML.
    @Test("agentry and the JSON Schemas agree on the examples and the corpus")
    func validatorAndSchemasAgree() throws {
        let result = try Shell.run(
            "python3", ["Tests/schema-agreement/check.py", "--agentry", Agentry.binary.path],
            in: Agentry.packageRoot, timeout: 300)
        #expect(
            result.status == 0,
            "Tests/schema-agreement/check.py exited \(result.status):\n\(result.stdout)\(result.stderr)")
    }

    /// The committed schemas are generated; editors and CI use the files, so they must not drift.
    @Test(
        "schemas/NAME.schema.json is exactly what `agentry schema NAME` prints",
        arguments: ["agent", "harness", "model", "environment", "skill", "resource"])
    func schemaFileMatchesGenerated(name: String) throws {
        let file = Agentry.packageRoot.appendingPathComponent("schemas/\(name).schema.json")
        let committed = try Data(contentsOf: file)
        let result = try Agentry.run(["schema", name])
        #expect(result.status == 0, "agentry schema \(name) exited \(result.status): \(result.stderr)")
        let generated = Data(result.stdout.utf8)
        #expect(
            generated == committed,
            """
            schemas/\(name).schema.json differs from `agentry schema \(name)` \
            (\(firstDifference(committed, generated))); regenerate it with \
            `.build/debug/agentry schema \(name) > schemas/\(name).schema.json`
            """)
    }

    /// Where two byte strings first differ, with the line on each side, for the failure message.
    func firstDifference(_ committed: Data, _ generated: Data) -> String {
        let committedLines = String(decoding: committed, as: UTF8.self).split(
            separator: "\n", omittingEmptySubsequences: false)
        let generatedLines = String(decoding: generated, as: UTF8.self).split(
            separator: "\n", omittingEmptySubsequences: false)
        for index in 0..<max(committedLines.count, generatedLines.count) {
            let left = index < committedLines.count ? String(committedLines[index]) : "<end of file>"
            let right = index < generatedLines.count ? String(generatedLines[index]) : "<end of output>"
            if left != right {
                return
                    "first at line \(index + 1): the file has `\(left.trimmingCharacters(in: .whitespaces))`, agentry prints `\(right.trimmingCharacters(in: .whitespaces))`"
            }
        }
        return "same lines, different bytes"
    }
}
