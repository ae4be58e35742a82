import AgentryBasics
import Logging

/// Logs how long each phase of an operation took (at debug level: `--log-level debug`).
struct PhaseClock {
    let logger: Logger
    let label: Logger.Message
    var last = ContinuousClock.now

    init(logger: Logger, label: Logger.Message = "run phase") {
        self.logger = logger
        self.label = label
    }

    mutating func mark(_ phase: String) {
        let now = ContinuousClock.now
        let elapsed = now - last
        last = now
        logger.debug(label, metadata: ["phase": "\(phase)", "ms": "\(elapsed.milliseconds)"])
    }
}
