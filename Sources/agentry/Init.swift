import AgentryRepository
import ArgumentParser

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new agent repository (git) with a starter layout that validates clean.")

    @Argument(help: "The folder to create; it must not exist or be empty.")
    var directory: String

    @Option(name: .long, help: "Owner written into the starter agent.")
    var owner: String = "platform-team"

    func run() throws {
        let commit: String
        do {
            commit = try Scaffold.create(at: directory, owner: owner)
        } catch let error as LoadError {
            throw CommandError(error.message)
        }
        FileHandleOutput.standardOutput(
            """
            Created an agent repository in \(directory) (commit \(commit.prefix(12))).
            Next: cd \(directory) && agentry validate

            """)
    }
}
