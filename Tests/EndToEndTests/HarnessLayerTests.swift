import Foundation
import TestSupport
import Testing

extension ApplyCommandTests {
    /// A repository with one debian-12 agent (no network at all) on the harness `harness`, and the
    /// harnesses `probe-a`, `probe-b` (each installs its wheel from the local wheelhouse with pip)
    /// and `broken` (a package no index has).
    func layeredRepository(harness: String) throws -> TemporaryDirectory {
        let repo = try repository(agents: [])
        try repo.write(
            "environments/tiny.yaml",
            "apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: tiny}\nspec: {base: debian-12, packages: {apt: [jq]}, resources: {cpus: 1, memory: 256Mi, disk: 3Gi}, network: {egress: none}}\n"
        )
        // probe-a's installation also notes what it could see of the host: its processes and its
        // capabilities.
        let note =
            "ls /proc | grep -c '^[0-9]' > /opt/agentry/processes; grep CapBnd /proc/self/status | cut -f2 > /opt/agentry/capabilities"
        for (name, package) in [
            ("probe-a", "agentry-probe-a==1.0"), ("probe-b", "agentry-probe-b==1.0"),
            ("broken", "agentry-probe-missing==9"),
        ] {
            try repo.write(
                "harnesses/\(name).yaml",
                """
                apiVersion: agentry/v1
                kind: Harness
                metadata: {name: \(name)}
                spec:
                  type: custom
                  install: {pip: ["\(package)"]\(name == "probe-a" ? ", script: \"\(note)\"" : "")}
                  command: ["\(name)"]
                  supports: {apis: [chat-completions]}

                """)
        }
        try switchHarness(repo, to: harness)
        return repo
    }

    func switchHarness(_ repo: TemporaryDirectory, to harness: String) throws {
        try repo.write(
            "agents/layered.yaml",
            "apiVersion: agentry/v1\nkind: Agent\nmetadata: {name: layered, owner: test}\nspec: {harness: \(harness), model: local, environment: tiny, deletionPolicy: delete}\n"
        )
        try repo.commitAll("harness \(harness)")
    }

    /// A harness's installation is made on the host, once, into a read-only layer the machine mounts:
    /// the machine itself has no network, its harness is on its PATH, a switch of harness swaps the
    /// layer and keeps the environment disk, a switch back finds the old layer, and an installation
    /// that fails fails the apply with its output.
    @Test func aHarnessIsInstalledOnTheHostIntoALayerTheMachineMounts() throws {
        defer { stopMachines() }
        let (index, pip) = try packageIndex(state.path + "/../wheelhouse-\(UUID().uuidString)", probes: ["a", "b"])
        let repo = try layeredRepository(harness: "probe-a")

        let applied = try agentry(["apply"], in: repo, timeout: 1200, environment: pip)
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        #expect(applied.stderr.contains("built the harness layer of probe-a"), "\(applied.stderr)")
        let first = try agentry(
            ["exec", "layered", "--", "sh", "-c", "probe-a; echo mine > /agent/mine; echo own > /usr/local/own"],
            in: repo)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == "probe a /opt/agentry/venv\n", "\(first.stdout)")
        // The installation ran confined: in its own process namespace, without the capabilities
        // that leave a chroot (sys_chroot, sys_admin, sys_ptrace) or signal the host's processes.
        let confinement = try agentry(
            ["exec", "layered", "--", "cat", "/opt/agentry/processes", "/opt/agentry/capabilities"], in: repo)
        let noted = confinement.stdout.split(separator: "\n").map(String.init)
        #expect((Int(noted.first ?? "") ?? 99) < 8, "the installation saw the host's processes: \(noted)")
        let capabilities = UInt64(noted.dropFirst().first ?? "", radix: 16) ?? UInt64.max
        for bit in [5, 18, 19, 21] {
            #expect(capabilities & (1 << UInt64(bit)) == 0, "capability \(bit) kept: \(noted)")
        }
        // The layer is shared and read-only: the guest cannot change it.
        let write = try agentry(["exec", "layered", "--", "sh", "-c", "echo x > /run/agentry-layer/x"], in: repo)
        #expect(write.status != 0, "\(write.stdout)")

        // This one is built without any mount (as in a container that forbids them): in a copy of
        // the root, compared with it afterwards.
        try switchHarness(repo, to: "probe-b")
        let switched = try agentry(
            ["apply"], in: repo, timeout: 1200, environment: pip.merging(["AGENTRY_LAYER_MOUNTS": "0"]) { $1 })
        #expect(switched.status == 0, "\(switched.stdout)\(switched.stderr)")
        #expect(switched.stderr.contains("built the harness layer of probe-b"), "\(switched.stderr)")
        let second = try agentry(
            [
                "exec", "layered", "--", "sh", "-c",
                "probe-b; command -v probe-a || echo gone; cat /agent/mine /usr/local/own",
            ],
            in: repo)
        #expect(second.stdout == "probe b /opt/agentry/venv\ngone\nmine\nown\n", "\(second.stdout)\(second.stderr)")
        let layers = try FileManager.default.contentsOfDirectory(atPath: Self.images.path + "/layers")
            .filter { !$0.hasPrefix(".") }
        #expect(layers.count >= 2, "\(layers)")

        // Back to the first harness: its layer is still there, nothing is built.
        try switchHarness(repo, to: "probe-a")
        let back = try agentry(["apply"], in: repo, timeout: 600, environment: pip)
        #expect(back.status == 0, "\(back.stdout)\(back.stderr)")
        #expect(!back.stderr.contains("building the harness layer"), "\(back.stderr)")
        let third = try agentry(["exec", "layered", "--", "sh", "-c", "probe-a; cat /agent/mine"], in: repo)
        #expect(third.stdout == "probe a /opt/agentry/venv\nmine\n", "\(third.stdout)\(third.stderr)")

        // An installation that fails fails the apply, with what pip said; the agent keeps running
        // its previous machine untouched until a good harness comes.
        try switchHarness(repo, to: "broken")
        let broken = try agentry(["apply"], in: repo, timeout: 600, environment: pip)
        #expect(broken.status != 0, "\(broken.stdout)\(broken.stderr)")
        #expect(broken.stderr.contains("installing the harness broken failed"), "\(broken.stderr)")
        #expect(broken.stderr.contains("agentry-probe-missing"), "\(broken.stderr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: Self.images.path + "/layers")
            .filter { $0.hasPrefix(".build-") }
        #expect(leftovers.isEmpty, "a failed build leaves nothing behind: \(leftovers)")
        withExtendedLifetime(index) {}
    }
}
