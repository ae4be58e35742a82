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

/// schemas/openapi.yaml is what the binary serves and prints, and is a valid OpenAPI 3.1 document
/// whose references all resolve (Tests/openapi/check.py, without exchanges).
@Test func openAPIDocumentIsCurrentAndValid() throws {
    let committed = try String(
        contentsOf: Agentry.packageRoot.appendingPathComponent("schemas/openapi.yaml"), encoding: .utf8)
    let printed = try Agentry.run(["schema", "--openapi"])
    #expect(printed.status == 0)
    #expect(printed.stdout == committed, "run: agentry schema --openapi > schemas/openapi.yaml")
    let checked = try Shell.run(
        "python3", ["Tests/openapi/check.py", "schemas/openapi.yaml"], in: Agentry.packageRoot, timeout: 120)
    #expect(checked.status == 0, "\(checked.stdout)\(checked.stderr)")
}
