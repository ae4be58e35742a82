#if canImport(Glibc)
    import Glibc
#endif

/// How much a guest may send its supervisor: frames and bytes per second, with a second's worth in
/// hand. Past it the guest is not read until the allowance refills: its writes wait (the guest slows
/// itself down) and the host's cost per machine stays bounded whatever the guest sends. Nothing is
/// dropped: a flood of output arrives, only no faster than this.
struct GuestAllowance {
    /// Far above what agentry's own traffic needs (output comes in chunks of up to 64 KiB, files in
    /// frames of up to 16 MiB), far below what a loop of one-byte writes would cost the host.
    static let framesPerSecond = 20_000
    static let bytesPerSecond = 64 << 20

    let framesPerSecond: Double
    let bytesPerSecond: Double
    private(set) var frames: Double
    private(set) var bytes: Double
    private var last: Duration
    /// Time since some fixed moment (monotonic); a test hands in its own.
    let elapsed: () -> Duration

    init(
        framesPerSecond: Int = Self.framesPerSecond, bytesPerSecond: Int = Self.bytesPerSecond,
        elapsed: @escaping () -> Duration = GuestAllowance.monotonic
    ) {
        self.framesPerSecond = Double(framesPerSecond)
        self.bytesPerSecond = Double(bytesPerSecond)
        frames = Double(framesPerSecond)
        bytes = Double(bytesPerSecond)
        self.elapsed = elapsed
        last = elapsed()
    }

    static func monotonic() -> Duration {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return .seconds(now.tv_sec) + .nanoseconds(now.tv_nsec)
    }

    mutating func refill() {
        let now = elapsed()
        let seconds = Self.seconds(now - last)
        last = now
        guard seconds > 0 else { return }
        frames = min(framesPerSecond, frames + seconds * framesPerSecond)
        bytes = min(bytesPerSecond, bytes + seconds * bytesPerSecond)
    }

    /// Whether a frame may be taken now.
    mutating func hasFrame() -> Bool {
        refill()
        return frames >= 1
    }

    mutating func tookFrame() { frames -= 1 }

    /// Whether the guest may be read now (its byte allowance is not spent).
    mutating func mayRead() -> Bool {
        refill()
        return bytes > 0
    }

    /// What a read took (a read may overdraw: the next waits for it).
    mutating func spend(bytes count: Int) { bytes -= Double(count) }

    /// How long until there is a frame and a byte to spend again.
    var untilRefilled: Duration {
        let waitFrames = frames >= 1 ? 0 : (1 - frames) / framesPerSecond
        let waitBytes = bytes > 0 ? 0 : (1 - bytes) / bytesPerSecond
        return .microseconds(Int64((max(waitFrames, waitBytes) * 1_000_000).rounded(.up)))
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
