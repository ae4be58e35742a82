/// One request a harness made of its models.
public struct ModelCall: Sendable, Equatable {
    /// The `model` the harness asked for, and the Model that answered (nil when none did).
    public var requested: String
    public var served: String?
    /// The HTTP status the harness got.
    public var status: Int
    public var inputTokens: Int
    public var outputTokens: Int
    /// From the request to the answer's first byte, and to its end.
    public var firstByteMilliseconds: Int?
    public var durationMilliseconds: Int
    /// Each model tried before the one that answered, with why it was passed over.
    public var fallbacks: [String]
    /// The answer broke off after its first byte had gone to the harness.
    public var incomplete: Bool
    public var error: String?

    public init(
        requested: String, served: String?, status: Int, inputTokens: Int = 0, outputTokens: Int = 0,
        firstByteMilliseconds: Int? = nil, durationMilliseconds: Int = 0, fallbacks: [String] = [],
        incomplete: Bool = false, error: String? = nil
    ) {
        self.requested = requested
        self.served = served
        self.status = status
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.firstByteMilliseconds = firstByteMilliseconds
        self.durationMilliseconds = durationMilliseconds
        self.fallbacks = fallbacks
        self.incomplete = incomplete
        self.error = error
    }
}

/// What a run used of its models.
public struct ModelUsage: Sendable, Equatable {
    /// The calls, the first `ModelCall` limit of them; `moreCalls` counts the rest.
    public var calls: [ModelCall] = []
    public var moreCalls = 0
    public var totalCalls = 0
    public var inputTokens = 0
    public var outputTokens = 0
    /// Tokens by the Model that served them: (input, output, calls).
    public var byModel: [String: (input: Int, output: Int, calls: Int)] = [:]
    /// A request was refused because the run's token budget was spent.
    public var budgetExceeded = false

    public init() {}

    /// Calls kept in the record; the rest are counted.
    public static let keptCalls = 200

    public mutating func add(_ call: ModelCall) {
        totalCalls += 1
        inputTokens += call.inputTokens
        outputTokens += call.outputTokens
        if let served = call.served {
            var entry = byModel[served] ?? (0, 0, 0)
            entry.input += call.inputTokens
            entry.output += call.outputTokens
            entry.calls += 1
            byModel[served] = entry
        }
        if calls.count < Self.keptCalls { calls.append(call) } else { moreCalls += 1 }
    }

    public static func == (lhs: ModelUsage, rhs: ModelUsage) -> Bool {
        lhs.calls == rhs.calls && lhs.moreCalls == rhs.moreCalls && lhs.totalCalls == rhs.totalCalls
            && lhs.inputTokens == rhs.inputTokens && lhs.outputTokens == rhs.outputTokens
            && lhs.budgetExceeded == rhs.budgetExceeded
            && lhs.byModel.mapValues { [$0.input, $0.output, $0.calls] }
                == rhs.byModel.mapValues { [$0.input, $0.output, $0.calls] }
    }
}
