import AgentryCore
import AgentryModel
import AgentryPlan
import AgentrySource
import AgentryState
import Foundation
import Logging
import TestSupport
import Testing

/// The incremental loader against fresh loads, over real commits of a copy of examples/quickstart.
@Suite struct IncrementalLoadTests {
    let quickstart = Agentry.packageRoot.appendingPathComponent("examples/quickstart")
    let logger = Logger(label: "test")

    func edit(_ directory: TemporaryDirectory, _ file: String, _ change: (String) -> String) throws {
        let url = directory.url.appendingPathComponent(file)
        try directory.write(file, change(try String(contentsOf: url, encoding: .utf8)))
    }

    /// A parse cache as agentry keeps one, in a folder that does not exist yet.
    func parseCache(_ directory: String) -> SQLiteParseCache {
        SQLiteParseCache(directory: directory + "/cache", generation: "test")
    }

    @Test func cachedLoadsGiveTheSameResultAsFreshOnes() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let state = try TemporaryDirectory("agentry-state")
        let reader = try CommitReader(
            repository: directory.path, path: "", cache: parseCache(state.path), logger: logger)
        let first = try reader.load("HEAD")
        #expect(first.mode == .full)
        #expect(first.parsedFiles == first.report.filesChecked, "nothing cached yet")
        #expect(try reader.load("HEAD").mode == .snapshot)

        // A one-file change is incremental and equal to a fresh load.
        try edit(directory, "agents/hello.yaml") { $0.replacingOccurrences(of: "timeout: 2m", with: "timeout: 4m") }
        try directory.commitAll("one file")
        let incremental = try reader.load("HEAD")
        #expect(incremental.mode == .incremental)
        #expect(incremental.parsedFiles == 1)
        try expectSameAsFresh(incremental, directory)

        // A change that breaks the repository falls back to the full path and reports it.
        try directory.write("agents/broken.yaml", "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: x}\n")
        try FileManager.default.removeItem(at: directory.url.appendingPathComponent("skills/gh-triage"))
        try directory.commitAll("broken")
        let broken = try reader.load("HEAD")
        #expect(broken.mode == .full)
        // Parsed: the new file and hello.yaml (changed since the remembered commit); the rest is cached.
        #expect(broken.parsedFiles == 2)
        try expectSameAsFresh(broken, directory)
    }

    /// Random edits, each loaded incrementally (or not) and compared with a fresh load.
    @Test func incrementalLoadsMatchFreshOnesOverRandomEdits() throws {
        let directory = try TemporaryDirectory()
        try directory.copy(from: quickstart)
        try directory.commitAll("base")
        let state = try TemporaryDirectory("agentry-state")
        let reader = try CommitReader(
            repository: directory.path, path: "", cache: parseCache(state.path), logger: logger)
        _ = try reader.load("HEAD")
        var generator = SystemRandomNumberGenerator()
        let edits: [(TemporaryDirectory) throws -> Void] = [
            {
                try self.edit($0, "agents/hello.yaml") {
                    $0.replacingOccurrences(of: "cpus", with: "cpus") + "\n# \(UInt32.random(in: 0...9999))\n"
                }
            },
            {
                try self.edit($0, "agents/triage.yaml") {
                    $0.replacingOccurrences(of: "timeout: 15m", with: "timeout: \(Int.random(in: 1...59))m")
                }
            },
            { try $0.write("agents/triage/INSTRUCTIONS.md", "# triage \(UInt32.random(in: 0...9999))\n") },
            { try $0.write("skills/greeting/notes-\(UInt32.random(in: 0...9999)).md", "n\n") },
            {
                try self.edit($0, "harnesses/hermes.yaml") {
                    $0.replacingOccurrences(
                        of: "stateDirs: [", with: "stateDirs: [.cache-\(UInt32.random(in: 0...9999)), ")
                }
            },
            {
                try self.edit($0, "environments/minimal.yaml") {
                    $0.replacingOccurrences(of: "disk: 1Gi", with: "disk: \(Int.random(in: 2...9))Gi")
                        .replacingOccurrences(of: "disk: 2Gi}", with: "disk: 1Gi}")
                }
            },
            { dir in
                let name = "extra-\(UInt32.random(in: 0...9999))"
                try self.edit(dir, "agents/hello.yaml") { $0 }
                try dir.write(
                    "agents/\(name).yaml",
                    try String(contentsOf: dir.url.appendingPathComponent("agents/hello.yaml"), encoding: .utf8)
                        .replacingOccurrences(of: "name: hello", with: "name: \(name)").replacingOccurrences(
                            of: "hello/INSTRUCTIONS.md", with: "hello/INSTRUCTIONS.md"))
            },
            { dir in
                let extras = try FileManager.default.contentsOfDirectory(
                    atPath: dir.url.appendingPathComponent("agents").path
                ).filter { $0.hasPrefix("extra-") }
                if let victim = extras.first {
                    try FileManager.default.removeItem(at: dir.url.appendingPathComponent("agents/\(victim)"))
                }
            },
            {
                try $0.write(
                    "models/sonnet.yaml",
                    try String(contentsOf: $0.url.appendingPathComponent("models/sonnet.yaml"), encoding: .utf8)
                        .replacingOccurrences(
                            of: "contextWindow: 200000", with: "contextWindow: \(Int.random(in: 1000...9000))"))
            },
            { try $0.write("README.md", "readme \(UInt32.random(in: 0...9999))\n") },
        ]
        var modes: [LoadedCommit.Mode: Int] = [:]
        for step in 0..<24 {
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                try edits[Int.random(in: 0..<edits.count, using: &generator)](directory)
            }
            try directory.commitAll("step \(step)")
            let loaded = try reader.load("HEAD")
            modes[loaded.mode, default: 0] += 1
            try expectSameAsFresh(loaded, directory)
        }
        #expect(modes[.incremental, default: 0] > 0, "\(modes)")
    }

    func expectSameAsFresh(_ loaded: LoadedCommit, _ directory: TemporaryDirectory) throws {
        let fresh = try CommitReader(repository: directory.path, path: "", cache: nil, logger: logger).load("HEAD")
        #expect(loaded.report.diagnostics == fresh.report.diagnostics)
        #expect(loaded.report.filesChecked == fresh.report.filesChecked)
        #expect(loaded.desired.agents.mapValues(\.revision) == fresh.desired.agents.mapValues(\.revision))
        #expect(Set(loaded.report.index.skills) == Set(fresh.report.index.skills))
        #expect(loaded.report.index.harnesses.count == fresh.report.index.harnesses.count)
    }
}
