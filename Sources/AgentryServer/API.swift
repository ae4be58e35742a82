import AgentryBasics
import AgentryCore
import AgentryModel
import Foundation
import HTTPTypes
import Hummingbird

/// The wire forms of the /v1 API: JSON bodies, errors, runs, request input.
enum API {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let hubSignature = HTTPField.Name("X-Hub-Signature-256")!
    static let githubEvent = HTTPField.Name("X-GitHub-Event")!
    static let gitlabToken = HTTPField.Name("X-Gitlab-Token")!
    static let gitlabEvent = HTTPField.Name("X-Gitlab-Event")!
    /// Request bodies are small JSON documents; a prompt is at most 1 MiB.
    static let largestBody = (1 << 20) + 4096

    static func json(_ value: JSON, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: value.rendered() + "\n")))
    }

    /// `{"error": {"code", "message"}}` with its status.
    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        json(.object([("error", .object([("code", .string(code)), ("message", .string(message))]))]), status: status)
    }

    /// A failure of the core, at the status its category means (the one mapping of the service).
    static func error(_ failure: any AgentryFailure) -> Response {
        switch failure.category {
        case .invalidInput: return error(.unprocessableContent, "invalidRequest", failure.message)
        case .notFound: return error(.notFound, "notFound", failure.message)
        case .conflict: return error(.conflict, "conflict", failure.message)
        case .locked: return retryLater(error(.tooManyRequests, "busy", failure.message))
        case .unavailable, .timeout, .io: return retryLater(error(.serviceUnavailable, "unavailable", failure.message))
        case .internalFailure: return error(.internalServerError, "internal", failure.message)
        }
    }

    /// A 429 or 503 says when to try again.
    static func retryLater(_ response: Response) -> Response {
        var response = response
        response.headers[.retryAfter] = "5"
        return response
    }

    struct BadRequest: Error {
        var message: String
    }

    /// The body, read up to `largestBody`; an error to report when it is larger or unreadable.
    static func body(_ request: inout Request) async -> Result<[UInt8], BadRequest> {
        do {
            let buffer = try await request.collectBody(upTo: largestBody)
            return .success(Array(buffer.readableBytesView))
        } catch {
            return .failure(BadRequest(message: "the request body is over \(largestBody) bytes or could not be read"))
        }
    }

    static func time(_ date: Date) -> String { Timestamp.rfc3339(date.timeIntervalSince1970) }

    static func run(_ run: ServiceRun) -> JSON {
        func optional(_ value: String?) -> JSON { value.map(JSON.string) ?? .null }
        return .object([
            ("id", .string(run.id)),
            ("agent", .string(run.agent)),
            ("status", .string(run.status.rawValue)),
            ("prompt", optional(run.prompt)),
            (
                "timeout",
                run.timeoutSeconds.map { .string(DurationText.format(milliseconds: UInt64($0) * 1000)) } ?? .null
            ),
            ("continue", .bool(run.continueSession)),
            ("requestedBy", .string(run.requestedBy)),
            ("trigger", .string(run.trigger)),
            ("createdAt", .string(time(run.createdAt))),
            ("startedAt", optional(run.startedAt.map(time))),
            ("finishedAt", optional(run.finishedAt.map(time))),
            ("exitStatus", run.exitStatus.map(JSON.int) ?? .null),
            ("message", optional(run.message)),
            ("recordId", optional(run.recordID)),
            ("historyCommit", optional(run.historyCommit)),
            (
                "links",
                .object([
                    ("self", .string("/v1/runs/\(run.id)")), ("cancel", .string("/v1/runs/\(run.id)/cancel")),
                    ("agent", .string("/v1/agents/\(run.agent)")),
                ])
            ),
        ])
    }

    /// A listing's `limit`: 1 to 100, 20 when not given.
    static func pageLimit(_ text: Substring?) throws -> Int {
        guard let text else { return 20 }
        guard let value = Int(text), (1...100).contains(value) else {
            throw BadRequest(message: "limit must be a number from 1 to 100")
        }
        return value
    }

    /// A page of a listing read one past `limit`: its first `limit` items under `key`, and
    /// `nextCursor`, the last one's id when there are more.
    static func page<Item>(
        _ key: String, _ items: [Item], limit: Int, id: (Item) -> String, _ render: (Item) -> JSON
    ) -> JSON {
        let shown = items.prefix(limit)
        return .object([
            (key, .array(shown.map(render))),
            ("nextCursor", items.count > limit ? shown.last.map { .string(id($0)) } ?? .null : .null),
        ])
    }

    /// A webhook out and how its delivery went (not its body).
    static func delivery(_ delivery: Delivery) -> JSON {
        func optional(_ value: String?) -> JSON { value.map(JSON.string) ?? .null }
        return .object([
            ("id", .string(delivery.id)), ("url", .string(WebhookDeliveries.shown(delivery.url))),
            ("type", .string(delivery.type)),
            ("status", .string(delivery.status.rawValue)), ("attempts", .int(delivery.attempts)),
            ("lastStatus", delivery.lastStatus.map(JSON.int) ?? .null), ("lastError", optional(delivery.lastError)),
            ("createdAt", .string(time(delivery.createdAt))),
            ("nextAttemptAt", optional(delivery.nextAttemptAt.map(time))),
            ("deliveredAt", optional(delivery.deliveredAt.map(time))),
        ])
    }

    /// Who suspended what, why, since when (`agent` null: the whole service).
    static func suspension(_ suspension: Suspension) -> JSON {
        .object([
            ("agent", suspension.agent.map(JSON.string) ?? .null), ("actor", .string(suspension.actor)),
            ("reason", .string(suspension.reason)), ("since", .string(time(suspension.since))),
        ])
    }

    /// The remote repository the service follows, as last fetched.
    static func source(_ source: Reconciler.SourceStatus) -> JSON {
        .object([
            ("url", .string(source.upstream.url)), ("branch", .string(source.upstream.branch)),
            ("commit", source.commit.map(JSON.string) ?? .null),
            ("fetchedAt", source.fetchedAt.map { .string(time($0)) } ?? .null),
            ("attemptedAt", source.attemptedAt.map { .string(time($0)) } ?? .null),
            ("fetchingSince", source.fetchingSince.map { .string(time($0)) } ?? .null),
            ("error", source.error.map(JSON.string) ?? .null),
        ])
    }

    /// `POST /v1/agents/{name}/runs`: `{"prompt"?: string, "timeout"?: "15m", "continue"?: bool}`.
    struct RunInput {
        var prompt: String?
        var timeout: Duration?
        var continueSession = false

        static func parse(_ body: [UInt8]) throws -> RunInput {
            var input = RunInput()
            guard !body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else { return input }
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
                throw BadRequest(message: "the body must be a JSON object: {\"prompt\", \"timeout\", \"continue\"}")
            }
            for (key, value) in object {
                switch key {
                case "prompt":
                    guard let text = value as? String else { throw BadRequest(message: "prompt must be a string") }
                    input.prompt = text
                case "timeout":
                    guard let text = value as? String, let milliseconds = DurationText.parse(text), milliseconds > 0
                    else {
                        throw BadRequest(message: "timeout must be a duration such as \"90s\", \"15m\" or \"1h30m\"")
                    }
                    input.timeout = .milliseconds(Int64(clamping: milliseconds))
                case "continue":
                    // A JSON true or false, not a number that would also read as one.
                    guard let flag = value as? Bool, (value as? NSNumber).map({ String(cString: $0.objCType) }) == "c"
                    else {
                        throw BadRequest(message: "continue must be true or false")
                    }
                    input.continueSession = flag
                default:
                    throw BadRequest(message: "unknown field \(key); a run takes prompt, timeout and continue")
                }
            }
            return input
        }
    }
}
