import AgentryModel
import AgentryPlan
import AgentryWire
import AgentryYAML
import Foundation

/// What the loader remembers of the last commit it read of an agent repository: everything derived
/// from it (summaries, revisions, skill digests, warnings), so the next commit costs only what git
/// says changed. Per-file parse results live beside it, one row per file.
struct DerivedSnapshot {
    struct SkillState {
        var name: String
        var digest: String
        /// Whether its SKILL.md front matter was readable (the skill can be used).
        var usable: Bool
    }

    var commit: String
    var filesChecked: Int
    var hasSymlinks: Bool
    var diagnostics: [Diagnostic]
    var agents: [AgentSummary]
    var desired: [DesiredAgent]
    var resources: [ResourceSummary]
    var skills: [SkillState]

    var isValid: Bool { !diagnostics.contains { $0.severity == .error } }
}

/// Compact binary forms of `DerivedSnapshot` and `FileResult`. Decoding is defensive: anything
/// unexpected means "no cache", never a wrong answer.
enum SnapshotCodec {
    // Bumped when what a parse records changes (2: origins at `metadata.name`).
    // 3: agents' tool problems, harnesses' types. 4: agents' run schedules.
    static let snapshotMagic = Array("agentry-derived-4\n".utf8)
    static let fileMagic: UInt8 = 4

    static func encode(_ snapshot: DerivedSnapshot) -> [UInt8] {
        var writer = ByteWriter()
        writer.bytes += snapshotMagic
        writer.string(snapshot.commit)
        writer.int(snapshot.filesChecked)
        writer.byte(snapshot.hasSymlinks ? 1 : 0)
        writer.diagnostics(snapshot.diagnostics)
        writer.int(snapshot.agents.count)
        for agent in snapshot.agents { writer.agent(agent) }
        // Desired agents are their summaries (above) plus a revision and content parts.
        writer.int(snapshot.desired.count)
        for agent in snapshot.desired {
            writer.string(agent.name)
            writer.string(agent.revision)
            writer.fields(agent.parts)
        }
        writer.resources(snapshot.resources)
        writer.int(snapshot.skills.count)
        for skill in snapshot.skills {
            writer.string(skill.name)
            writer.string(skill.digest)
            writer.byte(skill.usable ? 1 : 0)
        }
        return writer.bytes
    }

    static func decodeSnapshot(_ data: Data) -> DerivedSnapshot? {
        data.withUnsafeBytes { raw in decodeSnapshot(raw.bindMemory(to: UInt8.self)) }
    }

    static func decodeSnapshot(_ bytes: UnsafeBufferPointer<UInt8>) -> DerivedSnapshot? {
        var reader = ByteReader(bytes: bytes)
        guard reader.expect(snapshotMagic), let commit = reader.string(), let filesChecked = reader.int(),
            let symlinks = reader.byte(), let diagnostics = reader.diagnostics(), let agentCount = reader.int()
        else { return nil }
        var agents: [AgentSummary] = []
        agents.reserveCapacity(agentCount)
        for _ in 0..<agentCount {
            guard let agent = reader.agent() else { return nil }
            agents.append(agent)
        }
        guard let desiredCount = reader.int() else { return nil }
        // Positions, not copies: 10,000 summaries are looked up here.
        var positions: [String: Int] = [:]
        positions.reserveCapacity(agents.count)
        for (position, agent) in agents.enumerated() { positions[agent.name] = position }
        var desired: [DesiredAgent] = []
        desired.reserveCapacity(desiredCount)
        for _ in 0..<desiredCount {
            guard let name = reader.string(), let revision = reader.string(), let parts = reader.fields(),
                let position = positions[name]
            else { return nil }
            desired.append(DesiredAgent(agents[position], revision: revision, parts: parts))
        }
        guard let resources = reader.resources(), let skillCount = reader.int() else { return nil }
        var skills: [DerivedSnapshot.SkillState] = []
        for _ in 0..<skillCount {
            guard let name = reader.string(), let digest = reader.string(), let usable = reader.byte() else {
                return nil
            }
            skills.append(DerivedSnapshot.SkillState(name: name, digest: digest, usable: usable == 1))
        }
        guard reader.atEnd else { return nil }
        return DerivedSnapshot(
            commit: commit, filesChecked: filesChecked, hasSymlinks: symlinks == 1, diagnostics: diagnostics,
            agents: agents, desired: desired, resources: resources, skills: skills)
    }

    static func encode(_ result: FileResult) -> [UInt8] {
        var writer = ByteWriter()
        writer.byte(fileMagic)
        writer.diagnostics(result.diagnostics)
        writer.int(result.agents.count)
        for agent in result.agents { writer.agent(agent) }
        writer.resources(result.resources)
        writer.string(result.skillName ?? "")
        return writer.bytes
    }

    static func decodeFile(_ data: Data) -> FileResult? {
        data.withUnsafeBytes { raw in decodeFile(raw.bindMemory(to: UInt8.self)) }
    }

    static func decodeFile(_ bytes: UnsafeBufferPointer<UInt8>) -> FileResult? {
        var reader = ByteReader(bytes: bytes)
        guard reader.byte() == fileMagic, let diagnostics = reader.diagnostics(), let agentCount = reader.int() else {
            return nil
        }
        var result = FileResult(diagnostics: diagnostics)
        for _ in 0..<agentCount {
            guard let agent = reader.agent() else { return nil }
            result.agents.append(agent)
        }
        guard let resources = reader.resources(), let skillName = reader.string(), reader.atEnd else { return nil }
        result.resources = resources
        result.skillName = skillName.isEmpty ? nil : skillName
        return result
    }
}

extension ByteWriter {
    mutating func diagnostics(_ diagnostics: [Diagnostic]) {
        int(diagnostics.count)
        for diagnostic in diagnostics {
            byte(diagnostic.severity == .error ? 0 : 1)
            string(diagnostic.code.rawValue)
            string(diagnostic.file)
            mark(diagnostic.mark)
            string(diagnostic.message)
        }
    }

    mutating func agent(_ agent: AgentSummary) {
        string(agent.name)
        origin(agent.origin)
        string(agent.digest)
        optionalReference(agent.harness)
        optionalReference(agent.model)
        references(agent.fallbackModels)
        optionalReference(agent.environment)
        references(agent.skills)
        optionalReference(agent.instructionsFile)
        string(agent.lifecycle.rawValue)
        string(agent.deletionPolicy.rawValue)
        references(agent.toolProblems)
        string(agent.schedule?.expression ?? "")
        string(agent.schedule?.timeZone ?? "")
    }

    mutating func resources(_ resources: [ResourceSummary]) {
        int(resources.count)
        for resource in resources {
            string(resource.kind.rawValue)
            string(resource.name)
            origin(resource.origin)
            string(resource.digest)
            int(resource.apis.count)
            for api in resource.apis { string(api.rawValue) }
            string(resource.api?.rawValue ?? "")
            string(resource.harnessType?.rawValue ?? "")
        }
    }

    mutating func fields(_ fields: Fields) {
        int(fields.count)
        for (key, value) in fields {
            string(key)
            string(value)
        }
    }
}

extension ByteReader {
    mutating func diagnostics() -> [Diagnostic]? {
        guard let count = int() else { return nil }
        var diagnostics: [Diagnostic] = []
        for _ in 0..<count {
            guard let severity = byte(), let code = string().flatMap(Diagnostic.Code.init(rawValue:)),
                let file = string(), let mark = mark(), let message = string()
            else { return nil }
            diagnostics.append(Diagnostic(severity == 0 ? .error : .warning, code, file: file, at: mark, message))
        }
        return diagnostics
    }

    mutating func agent() -> AgentSummary? {
        guard let name = string(), let origin = origin(), let digest = string(),
            let harness = optionalReference(), let model = optionalReference(), let fallbacks = references(),
            let environment = optionalReference(), let skills = references(), let instructions = optionalReference(),
            let lifecycle = string().flatMap(Lifecycle.init(rawValue:)),
            let deletionPolicy = string().flatMap(DeletionPolicy.init(rawValue:)),
            let toolProblems = references(), let expression = string(), let timeZone = string()
        else { return nil }
        return AgentSummary(
            name: name, origin: origin, digest: digest, harness: harness, model: model, fallbackModels: fallbacks,
            environment: environment, skills: skills, instructionsFile: instructions, lifecycle: lifecycle,
            deletionPolicy: deletionPolicy, toolProblems: toolProblems,
            schedule: expression.isEmpty ? nil : RunSchedule(expression: expression, timeZone: timeZone))
    }

    mutating func resources() -> [ResourceSummary]? {
        guard let count = int() else { return nil }
        var resources: [ResourceSummary] = []
        resources.reserveCapacity(count)
        for _ in 0..<count {
            guard let kind = string().flatMap(Kind.init(rawValue:)), let name = string(), let origin = origin(),
                let digest = string(), let apiCount = int()
            else { return nil }
            var apis: [ModelAPI] = []
            for _ in 0..<apiCount {
                guard let api = string().flatMap(ModelAPI.init(rawValue:)) else { return nil }
                apis.append(api)
            }
            guard let api = string(), let type = string() else { return nil }
            resources.append(
                ResourceSummary(
                    kind: kind, name: name, origin: origin, digest: digest, apis: apis, api: ModelAPI(rawValue: api),
                    harnessType: HarnessType(rawValue: type)))
        }
        return resources
    }

    mutating func fields() -> Fields? {
        guard let count = int() else { return nil }
        var fields: Fields = []
        fields.reserveCapacity(count)
        for _ in 0..<count {
            guard let key = string(), let value = string() else { return nil }
            fields.append((key, value))
        }
        return fields
    }
}

extension ByteWriter {
    mutating func mark(_ mark: SourceMark) {
        int(mark.line)
        int(mark.column)
    }

    mutating func origin(_ origin: Origin) {
        string(origin.file)
        mark(origin.mark)
    }

    mutating func optionalReference(_ reference: Reference?) {
        guard let reference else { return byte(0) }
        byte(1)
        string(reference.name)
        mark(reference.mark)
    }

    mutating func references(_ references: [Reference]) {
        int(references.count)
        for reference in references {
            string(reference.name)
            mark(reference.mark)
        }
    }
}

extension ByteReader {
    mutating func mark() -> SourceMark? {
        guard let line = int(), let column = int() else { return nil }
        return SourceMark(line: line, column: column)
    }

    mutating func origin() -> Origin? {
        guard let file = string(), let mark = mark() else { return nil }
        return Origin(file: file, mark: mark)
    }

    /// `.some(nil)` for an absent reference, nil when the bytes are malformed.
    mutating func optionalReference() -> Reference?? {
        guard let flag = byte() else { return nil }
        if flag == 0 { return .some(nil) }
        guard let name = string(), let mark = mark() else { return nil }
        return .some(Reference(name, mark: mark))
    }

    mutating func references() -> [Reference]? {
        guard let count = int() else { return nil }
        var references: [Reference] = []
        for _ in 0..<count {
            guard let name = string(), let mark = mark() else { return nil }
            references.append(Reference(name, mark: mark))
        }
        return references
    }
}
