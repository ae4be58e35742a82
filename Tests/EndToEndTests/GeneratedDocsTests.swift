import Foundation
import TestSupport
import Testing

/// docs/reference.md is generated from the validator's shapes; it must match what the binary prints.
@Test func fieldReferenceIsCurrent() throws {
    let committed = try String(
        contentsOf: Agentry.packageRoot.appendingPathComponent("docs/reference.md"), encoding: .utf8)
    let generated = try Agentry.run(["schema", "--reference"])
    #expect(generated.status == 0)
    #expect(generated.stdout == committed, "run: agentry schema --reference > docs/reference.md")
    #expect(committed.contains("| `spec.harness` |"))
    #expect(committed.contains("| `credential-like` | policy |"))
}
