/// Shell work in the guest, in one place: the PATHs commands get, quoting, and running a snippet.
public enum GuestShell {
    /// The system's folders only: agentry's own scripts.
    public static let systemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    /// What harnesses and operators get: the installed harnesses' venv and npm folders first.
    public static let runPath = "/opt/agentry/venv/bin:/opt/agentry/npm/bin:" + systemPath

    /// `text` as one single-quoted shell word.
    public static func quote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Runs `script` with `sh -c` in the guest and returns its standard output; fails with its
    /// error output, saying what it was doing (`what`, else the script's start).
    @discardableResult
    public static func run(
        _ script: String, over channel: ControlChannel, path: String = systemPath, home: String = "/agent",
        timeout: Duration = .seconds(60), what: String? = nil
    ) throws -> [UInt8] {
        var out: [UInt8] = []
        var errors: [UInt8] = []
        let result = try channel.exec(
            ["/bin/sh", "-c", script], environment: ["PATH=" + path, "HOME=" + home], timeout: timeout,
            output: { stream, bytes in if stream == .stdout { out += bytes } else { errors += bytes } })
        guard result.status == 0 else {
            let doing = what ?? "`\(script.prefix(80))`"
            throw MachineError("\(doing) failed in the machine (exit \(result.status)): \(String(decoding: errors.suffix(400), as: UTF8.self))")
        }
        return out
    }
}
