import AgentryModel
import AgentryPlan
import AgentryYAML
import Testing

/// The planner as a pure function: hand-made desired and actual states.
@Suite struct PlannerTests {
    func desired(_ name: String, revision: String, lifecycle: Lifecycle = .active) -> DesiredAgent {
        DesiredAgent(
            name: name, revision: revision, lifecycle: lifecycle, deletionPolicy: .retain,
            origin: Origin(file: "agents/\(name).yaml", mark: .start), parts: [],
            references: [("harness", "shell"), ("model", "local"), ("environment", "minimal")])
    }

    func actual(_ name: String, revision: String, fields: [String: String] = [:], lifecycle: Lifecycle = .active)
        -> ActualAgent
    {
        ActualAgent(
            name: name, appliedRevision: revision, appliedFields: fields, lifecycle: lifecycle, deletionPolicy: .delete)
    }

    func plan(
        _ wanted: [DesiredAgent], _ existing: [ActualAgent], fields: [String: Fields] = [:],
        options: PlanOptions = PlanOptions()
    )
        -> Result<Plan, PlanRefusal>
    {
        Planner.plan(
            desired: DesiredState(agents: Dictionary(uniqueKeysWithValues: wanted.map { ($0.name, $0) })),
            actual: ActualState(agents: Dictionary(uniqueKeysWithValues: existing.map { ($0.name, $0) })),
            options: options, fields: { fields[$0.name] })
    }

    @Test(arguments: [
        ("model.name", Action.update), ("instructions", .update), ("skills.x", .update), ("secrets.A", .update),
        ("run.timeout", .update), ("harness.version", .reinstall), ("harness", .reinstall),
        ("environment.resources.memory", .restart), ("environment.network.egress", .restart),
        ("environment.base", .replace), ("environment.packages.apt", .replace), ("environment", .update),
    ])
    func fieldsClassifyToTheSmallestAction(field: String, expected: Action) {
        #expect(Planner.classify([Change(field: field, old: "a", new: "b")]) == expected)
    }

    @Test func theMostDisruptiveChangeWins() {
        let changes = [
            Change(field: "model.name", old: "a", new: "b"), Change(field: "environment.base", old: "a", new: "b"),
            Change(field: "harness.version", old: "1", new: "2"),
        ]
        #expect(Planner.classify(changes) == .replace)
    }

    @Test func sameRevisionIsANoop() throws {
        let result = try plan([desired("a", revision: "r1")], [actual("a", revision: "r1")]).get()
        #expect(result.actions.map(\.action) == [.noop])
        #expect(!result.hasChanges)
    }

    @Test func reasonsAreFieldLevelOldToNew() throws {
        let result = try plan(
            [desired("a", revision: "r2")], [actual("a", revision: "r1", fields: ["model.name": "x", "gone": "1"])],
            fields: ["a": [("model.name", "y")]]
        ).get()
        let action = try #require(result.actions.first)
        #expect(action.action == .update)
        #expect(
            action.reasons == [
                Change(field: "model.name", old: "x", new: "y"), Change(field: "gone", old: "1", new: nil),
            ])
    }

    @Test func lifecycleTransitions() throws {
        let result = try plan(
            [
                desired("p", revision: "r", lifecycle: .paused), desired("r", revision: "r", lifecycle: .revoked),
                desired("u", revision: "r", lifecycle: .active),
            ],
            [actual("p", revision: "r"), actual("r", revision: "r"), actual("u", revision: "r", lifecycle: .paused)],
            fields: ["p": [("lifecycle", "paused")], "r": [("lifecycle", "revoked")], "u": [("lifecycle", "active")]]
        ).get()
        #expect(result.actions.map(\.action) == [.pause, .revoke, .resume])
    }

    @Test func createAndDeleteCarryNotes() throws {
        let result = try plan([desired("new", revision: "r")], [actual("old", revision: "r")]).get()
        #expect(result.actions.map(\.action) == [.create, .delete])
        #expect(result.actions[0].reasons.map(\.field) == ["harness", "model", "environment", "lifecycle"])
        #expect(result.actions[1].notes.contains("environment disk removed (deletionPolicy: delete)"))
    }

    @Test func safetyRefusals() {
        #expect(throws: PlanRefusal.emptyDesiredState(running: 1)) { try plan([], [actual("a", revision: "r")]).get() }
        #expect(throws: Never.self) {
            try plan([], [actual("a", revision: "r")], options: PlanOptions(allowEmpty: true)).get()
        }
        let three = ["a", "b", "c"].map { actual($0, revision: "r") }
        #expect(throws: PlanRefusal.massDelete(deleting: 2, running: 3)) {
            try plan([desired("a", revision: "r")], three).get()
        }
        #expect(throws: Never.self) {
            try plan([desired("a", revision: "r")], three, options: PlanOptions(allowMassDelete: true)).get()
        }
        // Deleting one of two is not "more than half"; a single agent may always go.
        #expect(throws: Never.self) { try plan([desired("a", revision: "r")], Array(three.prefix(2))).get() }
    }

    @Test func actualDigestTracksWhatThePlannerReads() {
        let one = ActualState(agents: ["a": actual("a", revision: "r1")])
        var two = one
        two.agents["a"]?.machineState = "failed"
        #expect(one.digest != two.digest)
        #expect(one.digest == ActualState(agents: ["a": actual("a", revision: "r1")]).digest)
    }
}
