import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The write end of the pipe the signal handler writes each caught signal's number to.
private nonisolated(unsafe) var signalPipeWriter: Int32 = -1

/// Catches signals (Ctrl-C, SIGTERM) while a command runs, instead of dying of them: `handler`
/// gets each signal, with how many have come so far, on a thread of its own. The process-wide
/// handler only writes the number to a pipe (async-signal-safe), so a signal is seen whichever
/// thread the kernel delivers it to. `cancel` puts the default handling back.
final class SignalWatch: @unchecked Sendable {
    private let signals: [Int32]
    private let reader: Int32
    private let writer: Int32

    init(_ signals: [Int32], handler: @escaping @Sendable (Int32, Int) -> Void) {
        self.signals = signals
        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else {
            reader = -1
            writer = -1
            return
        }
        reader = descriptors[0]
        writer = descriptors[1]
        _ = fcntl(writer, F_SETFL, fcntl(writer, F_GETFL) | O_NONBLOCK)
        for descriptor in [reader, writer] { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        signalPipeWriter = writer
        for number in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { caught in
                var byte = UInt8(truncatingIfNeeded: caught)
                _ = write(signalPipeWriter, &byte, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(number, &action, nil)
        }
        let reader = reader
        Thread.detachNewThread {
            var count = 0
            var byte: UInt8 = 0
            while true {
                let read = Glibc.read(reader, &byte, 1)
                if read == 1 {
                    count += 1
                    handler(Int32(byte), count)
                } else if read < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            close(reader)
        }
    }

    func cancel() {
        for number in signals { signal(number, SIG_DFL) }
        guard writer >= 0 else { return }
        signalPipeWriter = -1
        close(writer)
    }
}
