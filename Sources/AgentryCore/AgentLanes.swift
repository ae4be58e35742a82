/// One apply step at a time per agent within a process. Steps of different agents proceed in
/// parallel; those of one agent wait their turn, first come first served. Runs and steps are
/// ordered by the agent's run lock (across processes too), and `exec` takes neither. The kill
/// switch does not queue: it is set in the state and the machine stopped at once, and the
/// operation holding the agent finds its machine gone (see docs/design.md).
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
