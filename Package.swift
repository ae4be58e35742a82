// swift-tools-version:6.1
import PackageDescription

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
    ],
    targets: [
        // libgit2 from the system (Debian: libgit2-dev).
        .systemLibrary(
            name: "CGit2",
            pkgConfig: "libgit2",
            providers: [.apt(["libgit2-dev"])]
        ),
        // libsodium from the system (Debian: libsodium-dev): the secret store's encryption.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        // The host/guest control protocol. Imports no Foundation: the guest agent is a static executable.
        .target(name: "AgentryWire"),
        // The in-VM guest agent: static, Glibc only, so the initramfs needs no libraries.
        // System calls and CPU instructions Swift's Glibc module does not expose (guest and host).
        .target(name: "CGuestSupport"),
        .executableTarget(
            name: "agentry-guest",
            dependencies: ["AgentryWire", "CGuestSupport"],
            swiftSettings: [.unsafeFlags(["-Osize"])],
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        // A bounded YAML composer over libyaml events (the copy Yams vendors) with line:column marks.
        .target(
            name: "AgentryYAML",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // The resource model, its schema, and validation. Pure: no I/O.
        .target(
            name: "AgentryModel",
            dependencies: ["AgentryYAML"]
        ),
        // Desired state, actual state and the planner between them. Pure: no I/O.
        .target(
            name: "AgentryPlan",
            dependencies: ["AgentryModel"]
        ),
        // libgit2 access: repositories, refs, trees, blobs, commits.
        .target(
            name: "AgentryGit",
            dependencies: ["CGit2"]
        ),
        // The actual-state database: SQLite through GRDB, WAL, versioned migrations, one writer;
        // and the host's encrypted secret store.
        .target(
            name: "AgentryState",
            dependencies: ["CSodium", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The machine backend: guest images and QEMU microVMs with their control channel.
        .target(
            name: "AgentryMachine",
            dependencies: ["AgentryWire", "AgentryModel", "CGuestSupport"]
        ),
        // Loading an agent repository from a git commit or a folder; scaffolding.
        .target(
            name: "AgentryRepository",
            dependencies: [
                "AgentryModel", "AgentryYAML", "AgentryGit", "AgentryPlan", "AgentryState", "AgentryWire",
                "AgentryMachine", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "agentry",
            dependencies: [
                "AgentryRepository", "AgentryModel", "AgentryPlan", "AgentryState", "AgentryMachine", "AgentryGit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Helpers for tests: temporary folders, git fixtures, running the built binary.
        .target(name: "TestSupport", dependencies: ["CGuestSupport"], path: "Tests/TestSupport"),
        .testTarget(name: "AgentryYAMLTests", dependencies: ["AgentryYAML"]),
        .testTarget(name: "AgentryModelTests", dependencies: ["AgentryModel"]),
        .testTarget(name: "AgentryPlanTests", dependencies: ["AgentryPlan", "AgentryModel"]),
        .testTarget(
            name: "AgentryStateTests",
            dependencies: ["AgentryState", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "AgentryGitTests", dependencies: ["AgentryGit", "TestSupport"]),
        .testTarget(name: "AgentryRepositoryTests", dependencies: ["AgentryRepository", "AgentryGit", "TestSupport"]),
        .testTarget(name: "AgentryMachineTests", dependencies: ["AgentryMachine", "AgentryWire", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport"]),
    ]
)
