import AgentryBasics
import AgentryModel
import Testing

@Suite struct FormatTests {
    @Test(arguments: [
        ("512Mi", 536_870_912), ("4Gi", 4_294_967_296), ("1G", 1_000_000_000), ("0.5Ki", 512), ("100", 100),
    ])
    func quantitiesParse(text: String, bytes: Int) throws {
        #expect(try #require(Quantity(text)).bytes == UInt64(bytes))
    }

    @Test(arguments: ["512MB", "0", "0Gi", "Mi", "-1Gi", "1.Gi", "4 Gi", ""])
    func badQuantitiesDoNot(text: String) {
        #expect(Quantity(text) == nil)
    }

    @Test(arguments: [("90s", 90_000), ("15m", 900_000), ("1h30m", 5_400_000), ("250ms", 250), ("0s5ms", 5)])
    func durationsParse(text: String, milliseconds: Int) {
        #expect(DurationText.parse(text) == UInt64(milliseconds))
    }

    @Test(arguments: ["15 minutes", "0s", "m", "15", "1.5h", "10d", "", "0h0m", "5m s"])
    func badDurationsDoNot(text: String) {
        #expect(DurationText.parse(text) == nil)
    }

    /// The JSON Schema pattern accepts them, so the validator does too; they saturate instead of wrapping.
    @Test func absurdSizesSaturate() {
        #expect(DurationText.parse("99999999999999999999h") == UInt64.max)
        #expect(Quantity("99999999999Ti")?.bytes == UInt64.max)
    }

    @Test(arguments: [
        "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "AKIAIOSFODNN7EXAMPLE2",
        "xoxb-1234567890-abcdefghij1234", "-----BEGIN OPENSSH PRIVATE KEY-----",
        "https://bot:s3cretpass@git.example.com/x",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ])
    func credentialsAreRecognised(text: String) {
        #expect(CredentialScanner.match(text) != nil)
    }

    @Test(arguments: [
        "anthropic/api-key", "sk-my-descriptive-secret-name-here", "https://{{user}}:{{password}}@host/x",
        "http://10.0.2.2:8080/v1", "Triage new issues for the platform team", "ghp_short",
        "postgres://user:${PASSWORD}@db/app", "task-ask-first",
    ])
    func ordinaryStringsAreNot(text: String) {
        #expect(CredentialScanner.match(text) == nil)
    }

    @Test func symlinkResolutionStaysInTheTree() {
        let tree = makeTree(
            ["a/file.md": "x", "b/real.md": "y"],
            symlinks: [
                "a/link.md": "../b/real.md", "a/dir": "../b", "a/out": "../../x", "a/loop": "loop2", "a/loop2": "loop",
            ])
        #expect(tree.resolve("a/link.md") == .file("b/real.md"))
        #expect(tree.resolve("a/dir/real.md") == .file("b/real.md"))
        #expect(tree.resolve("a/out") == .escapes("a/out"))
        #expect(tree.resolve("a/loop") == .loop)
        #expect(tree.resolve("../x") == .escapes("../x"))
        #expect(tree.resolve("a/missing") == .missing("a/missing"))
        #expect(tree.resolve("a") == .directory("a"))
    }
}

@Suite struct OutputTests {
    let report = validate(
        Fixture.repository(["agents/triage.yaml": Fixture.agent(spec: "lifecycle: actve\ndeletionPolicy: keep, really")]
        ))

    @Test func textLinesAreCompilerStyle() {
        let lines = ValidationOutput.text(report).split(separator: "\n")
        #expect(
            lines.first
                == "agents/triage.yaml:12:14: error[invalid-value]: spec.lifecycle: expected one of active, paused, revoked, got \"actve\"; did you mean \"active\"?"
        )
        #expect(lines.last?.hasPrefix("invalid: 2 errors") == true)
    }

    @Test func githubAnnotationsEscapeProperties() {
        let output = ValidationOutput.github(report)
        #expect(output.contains("::error file=agents/triage.yaml,line=13,col=19,title=agentry invalid-value::"))
        #expect(!output.contains("keep, really\",") || output.contains("keep%2C") || output.contains("keep, really"))
    }

    @Test func jsonIsVersionedAndComplete() {
        let output = ValidationOutput.json(report, source: .directory(path: "x"))
        #expect(output.contains("\"formatVersion\": 1"))
        #expect(output.contains("\"category\": \"schema\""))
        #expect(output.contains("\"valid\": false"))
    }
}

@Suite struct DigestTests {
    @Test func sha256KnownVectors() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex(String(repeating: "a", count: 1000))
                == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than a block), and GitHub's documented example.
    @Test func hmacSHA256KnownVectors() {
        func hex(_ key: [UInt8], _ message: String) -> String {
            Hex.string(HMACSHA256.mac(key: key, message: Array(message.utf8)))
        }
        #expect(
            hex([UInt8](repeating: 0x0b, count: 20), "Hi There")
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(
            hex(Array("Jefe".utf8), "what do ya want for nothing?")
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(
            hex([UInt8](repeating: 0xaa, count: 131), "Test Using Larger Than Block-Size Key - Hash Key First")
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        #expect(
            hex(Array("It's a Secret to Everybody".utf8), "Hello, World!")
                == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
        #expect(HMACSHA256.equal([1, 2, 3], [1, 2, 3]) && !HMACSHA256.equal([1, 2, 3], [1, 2, 4]))
        #expect(!HMACSHA256.equal([1, 2], [1, 2, 3]))
    }

    @Test func gitBlobIDsMatchGit() {
        #expect(GitBlobID.of([]) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")
        #expect(GitBlobID.of(Array("hello\n".utf8)) == "ce013625030ba8dba906f756967f9e9ca394464a")
    }

    @Test func canonicalNormalisesDurationsAndSizes() {
        #expect(Canonical.duration(5_400_000) == "1h30m")
        #expect(Canonical.duration(90_000) == "1m30s")
        #expect(Canonical.size(536_870_912) == "512Mi")
        #expect(Canonical.size(1_000_000_000) == "1000000000")
    }
}

@Suite struct JSONWriterTests {
    /// A document with every kind of value, nested and empty containers, and text that needs escapes.
    static let document = JSON.object([
        ("name", .string("a \"quoted\" \\ name\nwith\ta\u{1}control")),
        ("count", .int(-3)), ("on", .bool(true)), ("none", .null),
        ("empty", .array([])), ("nothing", .object([])),
        ("items", .array([.int(1), .object([("k", .array([.string("é ✓")]))]), .array([])])),
    ])

    @Test func writesTheLayoutReadersGet() throws {
        let pretty = JSONWriterTests.document.rendered()
        #expect(
            pretty == """
                {
                  "name": "a \\"quoted\\" \\\\ name\\nwith\\ta\\u0001control",
                  "count": -3,
                  "on": true,
                  "none": null,
                  "empty": [],
                  "nothing": {},
                  "items": [
                    1,
                    {
                      "k": [
                        "é ✓"
                      ]
                    },
                    []
                  ]
                }
                """)
        #expect(
            JSONWriterTests.document.rendered(pretty: false)
                == #"{"name":"a \"quoted\" \\ name\nwith\ta\u0001control","count":-3,"on":true,"none":null,"empty":[],"nothing":{},"items":[1,{"k":["é ✓"]},[]]}"#
        )
    }

    /// Writing as it goes gives the same bytes as rendering the tree (plans are written so).
    @Test func streamingMatchesTheTree() {
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("name")
        writer.string("a \"quoted\" \\ name\nwith\ta\u{1}control")
        for (key, value) in [("count", JSON.int(-3)), ("on", .bool(true))] {
            writer.key(key)
            writer.value(value)
        }
        writer.key("none")
        writer.string(nil)
        writer.key("empty")
        writer.beginArray()
        writer.endArray()
        writer.key("nothing")
        writer.beginObject()
        writer.endObject()
        writer.key("items")
        writer.beginArray()
        writer.value(.int(1))
        writer.beginObject()
        writer.key("k")
        writer.beginArray()
        writer.string("é ✓")
        writer.endArray()
        writer.endObject()
        writer.value(.array([]))
        writer.endArray()
        writer.endObject()
        #expect(writer.text == JSONWriterTests.document.rendered())
    }
}
