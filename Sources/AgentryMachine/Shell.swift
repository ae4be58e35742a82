import AgentryBasics
import Foundation

/// Why a machine operation failed, with what to do about it.
public struct MachineError: AgentryFailure {
    public enum Code: String, Sendable {
        /// A host tool agentry needs is missing.
        case toolMissing
        /// A host tool or QEMU failed.
        case hostCommandFailed
        /// Building a guest image failed.
        case imageFailed
        /// The environment disk is corrupt, missing or cannot be made.
        case diskFailed
        /// QEMU did not start, or the machine did not report in.
        case bootFailed
        /// The control channel failed or the guest did not answer.
        case guestFailed
        /// The guest answered with something malformed or refused a request.
        case guestRefused
        /// An argument is not acceptable (an image base, a package name, a path too long).
        case invalidInput
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var category: FailureCategory {
        switch code {
        case .toolMissing: return .notFound
        case .invalidInput: return .invalidInput
        case .hostCommandFailed, .imageFailed, .bootFailed, .guestFailed, .guestRefused: return .unavailable
        case .diskFailed: return .io
        }
    }
}

/// Runs host programs (qemu-img, apt-get, dpkg-deb, mkfs.ext4, debootstrap) to completion, with a
/// deadline, through `HostProcess`: standard output and error merged, in the order they came.
public struct HostCommands: Sendable {
    /// The environment programs run with (`LC_ALL=C` unless it says otherwise).
    public let environment: [String: String]

    public init(environment: [String: String]) {
        var environment = environment
        environment["LC_ALL"] = environment["LC_ALL"] ?? "C"
        self.environment = environment
    }

    public struct Result {
        public var status: Int32
        public var output: String
    }

    /// Finds `name` on PATH (and in /usr/sbin, /sbin, where Debian keeps some tools).
    public func locate(_ name: String) -> String? {
        HostProcess.locate(name, path: environment["PATH"])
    }

    /// Runs a program; `lines` sees its output a line at a time as it comes.
    @discardableResult
    public func run(
        _ program: String, _ arguments: [String], package: String? = nil, timeout: Duration = .seconds(300),
        directory: String? = nil, lines: (String) -> Void = { _ in }
    ) throws -> Result {
        guard let executable = locate(program) else {
            let hint = package.map { " (install it: apt-get install \($0))" } ?? ""
            throw MachineError(.toolMissing, "\(program) is not installed\(hint)")
        }
        do {
            let result = try HostProcess.run(
                executable, arguments, environment: environment.map { "\($0.key)=\($0.value)" }, directory: directory,
                timeout: timeout, merge: true, lines: lines)
            return Result(status: result.status, output: result.output)
        } catch let error as HostProcess.Failure {
            throw MachineError(.hostCommandFailed, error.message)
        }
    }

    /// Runs a program and fails with its output when it exits non-zero.
    @discardableResult
    public func check(
        _ program: String, _ arguments: [String], package: String? = nil, timeout: Duration = .seconds(300),
        directory: String? = nil, what: String
    ) throws -> String {
        let result = try run(program, arguments, package: package, timeout: timeout, directory: directory)
        guard result.status == 0 else {
            let tail = result.output.split(separator: "\n").suffix(8).joined(separator: "\n")
            throw MachineError(.hostCommandFailed, "\(what) failed (\(program) exited \(result.status)):\n\(tail)")
        }
        return result.output
    }
}
