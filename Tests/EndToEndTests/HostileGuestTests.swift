import Foundation
import TestSupport
import Testing

/// A guest that attacks its host, on real microVMs: secrets written to the console, the kernel
/// log, file names and encoded files, a FIFO planted where agentry writes. Afterwards the host's
/// disk, processes and history are checked. (Part of the apply suite. A flood from a guest's
/// command is `GuestCommandTests`.)
extension ApplyCommandTests {
    /// Every file under the state directory and every object of the repository's history branch
    /// that holds `value` (the environment disk aside: what the agent itself writes to its own disk
    /// is its own).
    func leaks(of value: String, _ repo: TemporaryDirectory) throws -> [String] {
        let onDisk = try Shell.run("grep", ["-r", "-l", "-a", "-F", "--exclude=env.qcow2", "--", value, state.path])
        let inGit = try Shell.run("git", ["-C", repo.path, "grep", "-l", "-F", value, "agentry/history"])
        let names = try Shell.run("git", ["-C", repo.path, "ls-tree", "-r", "--name-only", "agentry/history"])
        return onDisk.stdout.split(separator: "\n").map(String.init)
            + inGit.stdout.split(separator: "\n").map(String.init)
            + names.stdout.split(separator: "\n").filter { $0.contains(value) }.map(String.init)
    }

    @Test func aHostileGuestCannotLeakOrWedgeTheHost() throws {
        defer { stopMachines() }
        let token = "tok-hostile-\(UUID().uuidString.prefix(8))"
        let base64 = Data(token.utf8).base64EncodedString()
        let repo = try runRepository(
            script: """
                mkdir -p out memory; echo "$API_TOKEN" > /dev/console; echo "$API_TOKEN" > /dev/ttyS0; \
                echo "console: $API_TOKEN" > /dev/kmsg; echo x > "out/$API_TOKEN.txt"; \
                printf %s "$API_TOKEN" | base64 > out/encoded; echo "in a file: $API_TOKEN" > out/plain; echo ran
                """,
            secrets: [("API_TOKEN", "ci/api-token")])
        let set = try Shell.run(
            Agentry.binary.path, ["secret", "set", "ci/api-token", "--state-dir", state.path], input: token + "\n")
        #expect(set.status == 0, "\(set.stderr)")

        // The machine starts from an agentry whose environment holds another secret: the
        // supervisor and QEMU (and the egress proxy QEMU would start) do not inherit it.
        let marker = "AGENTRY_SECRET_LEAK_CHECK"
        let run = try agentry(["run", "greeter", "--apply"], in: repo, environment: [marker: "leak-check-value-1"])
        #expect(run.status == 0 && run.stdout.contains("ran"), "\(run.stderr)")
        let machine = state.path + "/agents/greeter"
        let qemu = try String(contentsOfFile: machine + "/vm.pid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let supervisor =
            try Shell.run("pgrep", ["-f", "machine-supervisor run --dir \(machine)"]).stdout
            .split(separator: "\n").first.map(String.init) ?? ""
        for pid in [qemu, supervisor] {
            let environment = try Shell.run("cat", ["/proc/\(pid)/environ"]).stdout
            #expect(!environment.isEmpty && !environment.contains(marker), "process \(pid) inherited \(marker)")
        }

        // Nothing holds the token: not the console log, not the state, not history (names and
        // encodings included).
        let found = try leaks(of: token, repo)
        #expect(found.isEmpty, "\(found)")
        #expect(try leaks(of: base64.trimmingCharacters(in: ["="]), repo).isEmpty)
        let serial = try String(contentsOfFile: machine + "/serial.log", encoding: .utf8)
        #expect(serial.contains("reported in"), "the boot is kept: \(serial.suffix(500))")

        // A FIFO where agentry stages the configuration: the push is refused at once, naming the
        // file (the guest agent never blocks on it); the machine that could not be configured is
        // failed, and the next apply restarts it (its /run is new) and converges.
        let planted = try agentry(
            [
                "exec", "greeter", "--", "sh", "-c",
                "rm -f /run/agentry-config.tar && mkfifo /run/agentry-config.tar && echo planted",
            ], in: repo)
        #expect(planted.stdout == "planted\n", "\(planted.stderr)")
        try repo.write(
            "agents/greeter.yaml",
            try String(contentsOf: repo.url.appendingPathComponent("agents/greeter.yaml"), encoding: .utf8)
                .replacingOccurrences(of: "Greet people.", with: "Greet people warmly."))
        try repo.commitAll("new instructions")
        let started = ContinuousClock.now
        let blocked = try agentry(["apply"], in: repo, timeout: 120)
        #expect(
            blocked.status == 1 && blocked.stderr.contains("cannot write /run/agentry-config.tar"), "\(blocked.stderr)")
        #expect(ContinuousClock.now - started < .seconds(60), "refused at once, not after a timeout")
        let again = try agentry(["apply"], in: repo)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try agentry(["exec", "greeter", "--", "cat", "/agent/AGENTS.md"], in: repo).stdout.contains("warmly"))
    }
}
