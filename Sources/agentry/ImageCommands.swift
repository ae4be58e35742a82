import AgentryMachine
import AgentryModel
import ArgumentParser
import Foundation

/// Where the guest agent binary is: `$AGENTRY_GUEST`, else beside the agentry executable.
enum GuestAgentLocation {
    static var path: String {
        if let explicit = ProcessInfoEnvironment.value("AGENTRY_GUEST") { return explicit }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let beside = executable.deletingLastPathComponent().appendingPathComponent("agentry-guest").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        return "/usr/lib/agentry/agentry-guest"
    }
}

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Guest images.", subcommands: [ImageBuild.self])
}

struct ImageBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build a guest image from Debian's packages into the state directory (cached by content).",
        discussion: """
            minimal: Debian's cloud kernel with its virtio modules and an initramfs of busybox-static and \
            the guest agent. Needs apt (to download linux-image-cloud-amd64), dpkg-deb and busybox-static.

            debian-12: a Debian bookworm root filesystem (debootstrap --variant=minbase, as root) packed \
            as an ext4 image, booted with the minimal image's kernel and initramfs. Environments with \
            packages.apt get their own image with those packages, built by apply when first needed.
            """)

    @Argument(help: "The base: minimal or debian-12.")
    var base: String = "minimal"

    @OptionGroup var state: StateOptions
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        _ = try logging.makeLogger()
        do {
            let image = try ImageBuilder.build(
                base, imagesDirectory: state.directory + "/images", guestAgent: GuestAgentLocation.path, refresh: true,
                progress: { FileHandleOutput.standardError("image: \($0)") })
            FileHandleOutput.standardOutput("\(image.directory)\n")
        } catch let error as MachineError {
            throw CommandError(error.message)
        }
    }
}
