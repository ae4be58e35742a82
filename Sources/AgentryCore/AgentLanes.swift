/// One operation at a time per agent: converge (an apply's step for it), run, exec. Operations on
/// different agents proceed in parallel; those on one agent wait their turn, first come first
/// served. The kill switch does not queue: it is set in the state and the machine stopped at once,
/// and the operation holding the lane finds its machine gone and fails (see docs/design.md).
///
/// Within one process only; across processes the state's writer lock keeps applies apart.
public actor AgentLanes {
    private var busy: Set<String> = []
    private var waiting: [String: [CheckedContinuation<Void, Never>]] = [:]

    public init() {}

    /// Runs `body` once no other operation holds `agent`'s lane, holding it until `body` ends.
    public func withLane<T: Sendable>(_ agent: String, _ body: @Sendable () async throws -> T) async throws -> T {
        await acquire(agent)
        defer { release(agent) }
        return try await body()
    }

    /// Whether an operation holds the agent's lane now.
    public func isBusy(_ agent: String) -> Bool { busy.contains(agent) }

    private func acquire(_ agent: String) async {
        if busy.insert(agent).inserted { return }
        await withCheckedContinuation { waiting[agent, default: []].append($0) }
    }

    private func release(_ agent: String) {
        if var queue = waiting[agent], !queue.isEmpty {
            // The lane passes straight to the next in line: it stays busy.
            let next = queue.removeFirst()
            waiting[agent] = queue.isEmpty ? nil : queue
            next.resume()
        } else {
            busy.remove(agent)
        }
    }
}
