// swift-tools-version:6.1
import PackageDescription

// The layout and its dependency arrows are described in README.md ("Project layout"):
// pure modules at the bottom, the core's use cases above them, adapters implementing the core's
// ports, one composition module wiring the real adapters, and a thin CLI on top.
let package = Package(
    name: "agentry",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "agentry", targets: ["agentry"]),
        .executable(name: "agentry-guest", targets: ["agentry-guest"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", .upToNextMinor(from: "6.2.2")),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // MARK: System libraries

        // libgit2 from the system (Debian: libgit2-dev).
        .systemLibrary(name: "CGit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
        // libsodium from the system (Debian: libsodium-dev): the secret store's encryption.
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        // System calls and CPU instructions Swift's Glibc module does not expose (guest and host).
        .target(name: "CGuestSupport"),

        // MARK: Pure modules (no I/O)

        // Small shared pieces, no Foundation: error categories, durations, timestamps, hex, text
        // tables, process spawning and the blocking-work pool.
        .target(name: "AgentryBasics", dependencies: ["CGuestSupport"]),
        // The host/guest control protocol. Imports no Foundation: the guest agent is a static executable.
        .target(name: "AgentryWire"),
        // A bounded YAML composer over libyaml events (the copy Yams vendors) with line:column marks.
        .target(name: "AgentryYAML", dependencies: [.product(name: "Yams", package: "Yams")]),
        // The resource model, its schema, and validation.
        .target(name: "AgentryModel", dependencies: ["AgentryYAML", "AgentryBasics"]),
        // Desired state, actual state and the planner between them.
        .target(name: "AgentryPlan", dependencies: ["AgentryModel"]),
        // What goes into a machine and what comes back: the agent's layout in the guest, harness
        // templates, guest scripts, the egress policy, redaction, tar, run and audit records.
        .target(name: "AgentryRender", dependencies: ["AgentryModel", "AgentryPlan", "AgentryYAML", "AgentryBasics"]),

        // MARK: The core

        // The use cases (validate, plan, diff, apply, run, exec, kill, status, history) and the
        // ports they reach the world through; one lane per agent orders its operations.
        .target(
            name: "AgentryCore",
            dependencies: [
                "AgentryModel", "AgentryPlan", "AgentryRender", "AgentryBasics", "AgentryWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),

        // MARK: Adapters (each implements ports of the core)

        // libgit2 access: repositories, refs, trees, blobs, commits, the history branch writer.
        .target(name: "AgentryGit", dependencies: ["CGit2", "AgentryBasics"]),
        // Agent repositories read from git commits (incrementally) and folders; new ones scaffolded.
        .target(
            name: "AgentrySource",
            dependencies: [
                "AgentryCore", "AgentryGit", "AgentryModel", "AgentryPlan", "AgentryRender", "AgentryWire",
                "AgentryBasics", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The history branch: run, apply and event records written and read through libgit2.
        .target(name: "AgentryHistory", dependencies: ["AgentryCore", "AgentryGit", "AgentryRender", "AgentryBasics"]),
        // The actual-state database: SQLite through GRDB, WAL, versioned migrations, one writer;
        // and the loader's parse cache in the user's cache folder.
        .target(
            name: "AgentryState",
            dependencies: ["AgentryCore", "AgentryBasics", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The host's secret store (libsodium) and the folder and environment secret sources.
        .target(name: "AgentrySecrets", dependencies: ["AgentryCore", "AgentryBasics", "CSodium"]),
        // The machine backend: guest images, QEMU microVMs, their control channel, the egress proxy.
        .target(
            name: "AgentryMachine",
            dependencies: [
                "AgentryCore", "AgentryRender", "AgentryModel", "AgentryWire", "AgentryBasics", "CGuestSupport",
                // The egress proxy: NIO's event loop, and its HTTP/1 parser (llhttp) for what guests send.
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),

        // The model gateway: a run's model calls, served on the host (NIO), sent on to the
        // providers (AsyncHTTPClient: TLS, streaming) with their keys added here.
        .target(
            name: "AgentryGateway",
            dependencies: [
                "AgentryCore", "AgentryRender", "AgentryModel",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),

        // The service's HTTP surface (`agentry serve`): the /v1 API on Hummingbird, with its
        // lifecycle (SIGTERM drains) from ServiceLifecycle. Errors map to statuses in one place.
        .target(
            name: "AgentryServer",
            dependencies: [
                "AgentryCore", "AgentryModel", "AgentryRender", "AgentryBasics",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),

        // MARK: Composition and executables

        // The one place that wires the real adapters into the core.
        .target(
            name: "AgentryComposition",
            dependencies: [
                "AgentryCore", "AgentrySource", "AgentryHistory", "AgentryState", "AgentrySecrets", "AgentryMachine",
                "AgentryGateway", "AgentryGit", "AgentryServer", "AgentryBasics",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "agentry",
            dependencies: [
                "AgentryCore", "AgentryComposition",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The in-VM guest agent: static, Glibc only, so the initramfs needs no libraries.
        .executableTarget(
            name: "agentry-guest",
            dependencies: ["AgentryWire", "CGuestSupport"],
            swiftSettings: [.unsafeFlags(["-Osize"])],
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),

        // MARK: Test support

        // Helpers for tests: temporary folders, git fixtures, running the built binary.
        .target(name: "TestSupport", dependencies: ["AgentryBasics", "CGuestSupport"], path: "Tests/TestSupport"),
        // In-memory fakes of the core's ports, for fast unit tests of the use cases (no QEMU).
        .target(
            name: "AgentryTesting",
            dependencies: ["AgentryCore", "AgentryRender", "AgentryWire", "AgentryBasics"],
            path: "Tests/AgentryTesting"
        ),

        // MARK: Tests (one suite per module; EndToEndTests run the built binary)

        .testTarget(name: "AgentryBasicsTests", dependencies: ["AgentryBasics"]),
        .testTarget(name: "AgentryYAMLTests", dependencies: ["AgentryYAML"]),
        .testTarget(name: "AgentryModelTests", dependencies: ["AgentryModel", "AgentryBasics"]),
        .testTarget(name: "AgentryPlanTests", dependencies: ["AgentryPlan", "AgentryModel"]),
        .testTarget(
            name: "AgentryRenderTests", dependencies: ["AgentryRender", "AgentryModel", "AgentryBasics", "TestSupport"]),
        .testTarget(
            name: "AgentryCoreTests",
            dependencies: [
                "AgentryCore", "AgentryTesting", "AgentrySource", "AgentryRender", "AgentryPlan", "AgentryModel",
                "AgentryWire", "TestSupport", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AgentryStateTests",
            dependencies: [
                "AgentryState", "AgentryCore", "TestSupport", .product(name: "GRDB", package: "GRDB.swift"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "AgentrySecretsTests", dependencies: ["AgentrySecrets", "AgentryCore", "TestSupport"]),
        .testTarget(name: "AgentryGitTests", dependencies: ["AgentryGit", "TestSupport"]),
        .testTarget(name: "AgentryHistoryTests", dependencies: ["AgentryHistory", "AgentryCore", "TestSupport"]),
        .testTarget(
            name: "AgentrySourceTests",
            dependencies: [
                "AgentrySource", "AgentryCore", "AgentryState", "AgentryModel", "AgentryPlan", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AgentryMachineTests",
            dependencies: ["AgentryMachine", "AgentryCore", "AgentryRender", "AgentryWire", "TestSupport"]
        ),
        .testTarget(name: "AgentryGatewayTests", dependencies: ["AgentryGateway", "AgentryCore", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport"]),
    ]
)
