/// The OpenAPI 3.1 document of the /v1 API: served at `/v1/openapi.yaml`, printed by
/// `agentry schema --openapi`, committed as schemas/openapi.yaml (a test keeps them equal), and
/// checked against the real service's answers by the end-to-end test.
public enum OpenAPIDocument {
    public static let yaml = #"""
        openapi: 3.1.0
        info:
          title: agentry serve
          version: "1"
          summary: The run surface of agentry, the GitOps reconciler for AI agents.
          description: >-
            Runs, their events and artifacts, agents' status and the reconcile loop. Every /v1 route but
            the webhooks takes a bearer token from `agentry token create`; scopes include each other
            (`admin` > `run` > `read`), and a token limited to some agents sees only those (a run of any
            other agent is 404). Errors are `{"error": {"code", "message"}}`.
          license:
            name: Apache-2.0
        servers:
          - url: http://127.0.0.1:8484
        security:
          - bearer: []
        tags:
          - name: agents
          - name: runs
          - name: service
        paths:
          /healthz:
            get:
              tags: [service]
              operationId: health
              summary: Alive.
              security: []
              responses:
                "200":
                  description: The process answers.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
          /readyz:
            get:
              tags: [service]
              operationId: ready
              summary: Ready (the state and the service's database are readable).
              security: []
              responses:
                "200":
                  description: Ready.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
                "503": {$ref: "#/components/responses/Error"}
          /metrics:
            get:
              tags: [service]
              operationId: metrics
              summary: Prometheus metrics (a read token for every agent).
              description: >-
                `agentry_runs_total{agent,status}`, `agentry_run_duration_seconds{agent}` (histogram),
                `agentry_runs_queued`, `agentry_runs_active`, `agentry_reconcile_passes_total{result}`,
                `agentry_reconcile_duration_seconds` (histogram), `agentry_machines{state}`,
                `agentry_model_tokens_total{model,direction}`, `agentry_schedule_events_total{outcome}`,
                `agentry_webhooks_received_total{provider,status}`, and the HTTP server's
                `hb_requests`, `http_server_request_duration` (histogram) by route, method and status.
              responses:
                "200":
                  description: Prometheus text exposition format 0.0.4.
                  content:
                    text/plain:
                      schema: {type: string}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
          /v1/deliveries:
            get:
              tags: [service]
              operationId: listDeliveries
              summary: Webhooks out and how their delivery went, newest first (admin, every agent).
              description: >-
                With `--notify-url`, each run's end (`run.completed`, the Run as data) and each agent turning
                Stalled (`agent.stalled`) is POSTed to every URL as `{"type", "timestamp", "data"}` with the
                Standard Webhooks headers `webhook-id`, `webhook-timestamp` and `webhook-signature`
                (`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`), and retried after 5 s, 30 s,
                2 m, 10 m, 30 m and 2 h until answered 2xx (410 stops at once).
              parameters:
                - name: limit
                  in: query
                  schema: {type: integer, minimum: 1, maximum: 100, default: 20}
                - name: cursor
                  in: query
                  schema: {type: string}
              responses:
                "200":
                  description: A page.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/DeliveryPage"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
          /v1/openapi.yaml:
            get:
              tags: [service]
              operationId: openapi
              summary: This document.
              security: []
              responses:
                "200":
                  description: OpenAPI 3.1, YAML.
                  content:
                    application/yaml:
                      schema: {type: string}
          /v1/agents:
            get:
              tags: [agents]
              operationId: listAgents
              summary: The agents of the repository and of the state (those the token covers).
              responses:
                "200":
                  description: Every agent.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/AgentList"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
          /v1/agents/{name}:
            parameters:
              - {$ref: "#/components/parameters/AgentName"}
            get:
              tags: [agents]
              operationId: getAgent
              summary: One agent; revisions, sync, health, conditions, kill switch, schedule, last run.
              responses:
                "200":
                  description: The agent.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Agent"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
          /v1/agents/{name}/runs:
            parameters:
              - {$ref: "#/components/parameters/AgentName"}
            post:
              tags: [runs]
              operationId: startRun
              summary: Accepts a run; it is stored before the answer.
              description: >-
                The run waits its turn: one at a time per agent, in order; at most `--max-concurrent-runs`
                at once. The same `Idempotency-Key` from the same token gives back the same run (200).
              parameters:
                - name: Idempotency-Key
                  in: header
                  required: false
                  schema: {type: string, minLength: 1, maxLength: 255}
              requestBody:
                required: false
                content:
                  application/json:
                    schema: {$ref: "#/components/schemas/RunInput"}
              responses:
                "201":
                  description: Accepted and stored.
                  headers:
                    Location:
                      schema: {type: string}
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Run"}
                "200":
                  description: The run first accepted for this Idempotency-Key.
                  headers:
                    Location:
                      schema: {type: string}
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Run"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "409": {$ref: "#/components/responses/Error"}
                "422": {$ref: "#/components/responses/Error"}
                "429": {$ref: "#/components/responses/Busy"}
                "503": {$ref: "#/components/responses/Error"}
            get:
              tags: [runs]
              operationId: listRuns
              summary: The agent's runs, newest first, a page at a time.
              parameters:
                - name: status
                  in: query
                  description: Comma-separated statuses.
                  schema: {type: string}
                - name: limit
                  in: query
                  schema: {type: integer, minimum: 1, maximum: 100, default: 20}
                - name: cursor
                  in: query
                  description: The `nextCursor` of the page before.
                  schema: {type: string}
              responses:
                "200":
                  description: A page.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/RunPage"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
          /v1/runs/{id}:
            parameters:
              - {$ref: "#/components/parameters/RunID"}
            get:
              tags: [runs]
              operationId: getRun
              summary: One run.
              responses:
                "200":
                  description: The run.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Run"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
          /v1/runs/{id}/events:
            parameters:
              - {$ref: "#/components/parameters/RunID"}
            get:
              tags: [runs]
              operationId: runEvents
              summary: Server-Sent Events of a run, live or replayed from history.
              description: >-
                Events `status` (a Run, when the stream sees its status change, every 250 ms), `output` (`{"text"}`, redacted),
                `end` (the final Run) last, `shutdown` when the service stops, and a `: keepalive` comment
                every 15 s. Each event's `id` is how many bytes of output came before it; `Last-Event-ID`
                resumes there.
              parameters:
                - name: Last-Event-ID
                  in: header
                  required: false
                  schema: {type: string, pattern: "^[0-9]+$"}
              responses:
                "200":
                  description: The stream.
                  content:
                    text/event-stream:
                      schema: {type: string}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "429": {$ref: "#/components/responses/Busy"}
          /v1/runs/{id}/artifacts:
            parameters:
              - {$ref: "#/components/parameters/RunID"}
            get:
              tags: [runs]
              operationId: listArtifacts
              summary: A finished run's artifacts, from history.
              responses:
                "200":
                  description: The artifacts.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/ArtifactList"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "409": {$ref: "#/components/responses/Error"}
          /v1/runs/{id}/artifacts/{path}:
            parameters:
              - {$ref: "#/components/parameters/RunID"}
              - name: path
                in: path
                required: true
                description: The artifact's path; it may hold `/`.
                schema: {type: string}
            get:
              tags: [runs]
              operationId: getArtifact
              summary: One artifact's bytes, with its SHA-256 as the ETag.
              parameters:
                - name: If-None-Match
                  in: header
                  required: false
                  schema: {type: string}
              responses:
                "200":
                  description: The bytes, checked against the recorded SHA-256.
                  headers:
                    ETag:
                      schema: {type: string}
                  content:
                    application/octet-stream:
                      schema: {type: string, contentEncoding: binary}
                "304":
                  description: The client's copy is current.
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "409": {$ref: "#/components/responses/Error"}
          /v1/runs/{id}/cancel:
            parameters:
              - {$ref: "#/components/parameters/RunID"}
            post:
              tags: [runs]
              operationId: cancelRun
              summary: Cancels a run; a live one has its harness's process tree killed.
              responses:
                "202":
                  description: Cancelling (a queued run is cancelled at once).
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Run"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "409": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
          /v1/agents/{name}/kill:
            parameters:
              - {$ref: "#/components/parameters/AgentName"}
            post:
              tags: [agents]
              operationId: killAgent
              summary: Sets the kill switch (admin), recorded as `agentry kill` records it.
              requestBody:
                required: true
                content:
                  application/json:
                    schema:
                      type: object
                      required: [reason]
                      additionalProperties: false
                      properties:
                        reason: {type: string, minLength: 1}
              responses:
                "200":
                  description: Killed.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/KillResult"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "429": {$ref: "#/components/responses/Busy"}
          /v1/agents/{name}/unkill:
            parameters:
              - {$ref: "#/components/parameters/AgentName"}
            post:
              tags: [agents]
              operationId: unkillAgent
              summary: Lifts the kill switch (admin).
              responses:
                "200":
                  description: Lifted (or there was none).
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/KillResult"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "429": {$ref: "#/components/responses/Busy"}
          /v1/agents/{name}/suspend:
            parameters:
              - {$ref: "#/components/parameters/AgentName"}
            post:
              tags: [agents]
              operationId: suspendAgent
              summary: The loop leaves the agent as it is, and its schedule does not fire, until resumed (admin).
              requestBody:
                required: false
                content:
                  application/json:
                    schema: {$ref: "#/components/schemas/SuspendInput"}
              responses:
                "200":
                  description: Suspended (or already, by whoever did first).
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/SuspendResult"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
          /v1/agents/{name}/resume:
            parameters:
              - {$ref: "#/components/parameters/AgentName"}
            post:
              tags: [agents]
              operationId: resumeAgent
              summary: Lifts the agent's suspension and reconciles now (admin).
              responses:
                "200":
                  description: Resumed (or was not suspended).
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/SuspendResult"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
          /v1/suspend:
            post:
              tags: [service]
              operationId: suspendService
              summary: The loop reconciles nothing and no schedule fires, until resumed (admin, every agent).
              requestBody:
                required: false
                content:
                  application/json:
                    schema: {$ref: "#/components/schemas/SuspendInput"}
              responses:
                "200":
                  description: Suspended.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/SuspendResult"}
                "400": {$ref: "#/components/responses/Error"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
          /v1/resume:
            post:
              tags: [service]
              operationId: resumeService
              summary: Lifts the service's suspension and reconciles now (admin, every agent).
              responses:
                "200":
                  description: Resumed.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/SuspendResult"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
          /v1/reconcile:
            post:
              tags: [service]
              operationId: reconcile
              summary: Reconciles now (admin, a token for every agent).
              responses:
                "202":
                  description: The pass starts at once, or right after the one under way.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
            get:
              tags: [service]
              operationId: reconcileStatus
              summary: The last pass of the reconcile loop (a token for every agent).
              responses:
                "200":
                  description: The last pass.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/ReconcileStatus"}
                "401": {$ref: "#/components/responses/Error"}
                "400": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
                "403": {$ref: "#/components/responses/Error"}
          /v1/hooks/github:
            post:
              tags: [service]
              operationId: githubHook
              summary: A GitHub push to the branch reconciles now.
              description: Signed with `X-Hub-Signature-256` (HMAC-SHA256 of the body with `--webhook-secret`).
              security: []
              parameters:
                - {name: X-Hub-Signature-256, in: header, required: true, schema: {type: string}}
                - {name: X-GitHub-Event, in: header, required: true, schema: {type: string}}
              requestBody:
                required: true
                content:
                  application/json:
                    schema: {type: object}
              responses:
                "200":
                  description: A ping, answered.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
                "202":
                  description: Reconciling, or ignored (saying why).
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "413": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
          /v1/hooks/gitlab:
            post:
              tags: [service]
              operationId: gitlabHook
              summary: A GitLab push to the branch reconciles now.
              description: Carries `X-Gitlab-Token`, equal to the `--webhook-secret`.
              security: []
              parameters:
                - {name: X-Gitlab-Token, in: header, required: true, schema: {type: string}}
                - {name: X-Gitlab-Event, in: header, required: true, schema: {type: string}}
              requestBody:
                required: true
                content:
                  application/json:
                    schema: {type: object}
              responses:
                "200":
                  description: A ping, answered.
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
                "202":
                  description: Reconciling, or ignored (saying why).
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Status"}
                "401": {$ref: "#/components/responses/Error"}
                "500": {$ref: "#/components/responses/Error"}
                "404": {$ref: "#/components/responses/Error"}
                "413": {$ref: "#/components/responses/Error"}
                "503": {$ref: "#/components/responses/Error"}
        components:
          securitySchemes:
            bearer:
              type: http
              scheme: bearer
              description: A token from `agentry token create`.
          parameters:
            AgentName:
              name: name
              in: path
              required: true
              schema: {$ref: "#/components/schemas/Name"}
            RunID:
              name: id
              in: path
              required: true
              schema: {type: string, pattern: "^run_[0-9a-f]+$"}
          responses:
            Error:
              description: What went wrong.
              content:
                application/json:
                  schema: {$ref: "#/components/schemas/Error"}
            Busy:
              description: Too many requests or runs waiting; try again after `Retry-After` seconds (when given).
              headers:
                Retry-After:
                  schema: {type: integer}
              content:
                application/json:
                  schema: {$ref: "#/components/schemas/Error"}
          schemas:
            Name:
              type: string
              pattern: "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
            Time:
              type: string
              format: date-time
            NullableString:
              type: [string, "null"]
            Error:
              type: object
              required: [error]
              additionalProperties: false
              properties:
                error:
                  type: object
                  required: [code, message]
                  additionalProperties: false
                  properties:
                    code:
                      type: string
                      enum: [invalidRequest, unauthenticated, forbidden, notFound, conflict, busy, unavailable, internal]
                    message: {type: string}
            Status:
              type: object
              required: [status]
              additionalProperties: false
              properties:
                status:
                  type: string
                  enum: [ok, ready, triggered, pong, reconciling, ignored]
                reason: {type: string}
            RunInput:
              type: object
              additionalProperties: false
              properties:
                prompt: {type: string, maxLength: 1048576}
                timeout:
                  type: string
                  description: A duration such as `90s`, `15m` or `1h30m`, at most 24h.
                  pattern: "^([0-9]+(ms|s|m|h))+$"
                continue:
                  type: boolean
                  description: Continue the harness's last session (`agentry run --continue`).
            RunStatus:
              type: string
              enum: [queued, starting, running, succeeded, failed, timedOut, cancelled, interrupted]
            Run:
              type: object
              required: [id, agent, status, prompt, timeout, continue, requestedBy, trigger, createdAt, startedAt,
                finishedAt, exitStatus, message, recordId, historyCommit, links]
              additionalProperties: false
              properties:
                id: {type: string, pattern: "^run_[0-9a-f]+$"}
                agent: {$ref: "#/components/schemas/Name"}
                status: {$ref: "#/components/schemas/RunStatus"}
                prompt:
                  description: The prompt asked for; null runs the agent's default (`spec.run.prompt`).
                  type: [string, "null"]
                timeout: {$ref: "#/components/schemas/NullableString"}
                continue: {type: boolean}
                requestedBy:
                  description: "`token tok_…`, or `schedule`."
                  type: string
                trigger:
                  type: string
                  enum: [api, schedule]
                createdAt: {$ref: "#/components/schemas/Time"}
                startedAt:
                  oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]
                finishedAt:
                  oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]
                exitStatus: {type: [integer, "null"]}
                message:
                  description: Why it ended as it did.
                  type: [string, "null"]
                recordId:
                  description: The run's record in history (`runs/AGENT/ID/record.yaml` on the history branch).
                  type: [string, "null"]
                historyCommit: {$ref: "#/components/schemas/NullableString"}
                links:
                  type: object
                  required: [self, cancel, agent]
                  additionalProperties: false
                  properties:
                    self: {type: string}
                    cancel: {type: string}
                    agent: {type: string}
            RunPage:
              type: object
              required: [runs, nextCursor]
              additionalProperties: false
              properties:
                runs:
                  type: array
                  items: {$ref: "#/components/schemas/Run"}
                nextCursor: {$ref: "#/components/schemas/NullableString"}
            Condition:
              type: object
              required: [type, status, reason, message, observedCommit, lastTransitionTime]
              additionalProperties: false
              properties:
                type:
                  type: string
                  enum: [Ready, Reconciling, Stalled]
                status:
                  type: string
                  enum: ["True", "False"]
                reason: {type: string}
                message: {type: string}
                observedCommit: {$ref: "#/components/schemas/NullableString"}
                lastTransitionTime: {$ref: "#/components/schemas/Time"}
            KillSwitch:
              type: object
              required: [reason, actor, since]
              additionalProperties: false
              properties:
                reason: {type: string}
                actor: {type: string}
                since: {$ref: "#/components/schemas/Time"}
            Schedule:
              type: object
              required: [expression, timeZone, nextAt, last, skipped]
              additionalProperties: false
              properties:
                expression: {type: string}
                timeZone: {type: string}
                nextAt:
                  oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]
                last:
                  oneOf:
                    - type: "null"
                    - type: object
                      required: [dueAt, outcome, runId, message]
                      additionalProperties: false
                      properties:
                        dueAt: {$ref: "#/components/schemas/Time"}
                        outcome:
                          type: string
                          enum: [started, skipped, refused]
                        runId: {$ref: "#/components/schemas/NullableString"}
                        message: {type: string}
                skipped:
                  description: How many due times were skipped because a run was still going or waiting.
                  type: integer
                  minimum: 0
            Agent:
              type: object
              required: [name, desiredRevision, appliedRevision, commit, sync, lifecycle, health, healthDetail,
                machineState, killSwitch, suspension, conditions, schedule, lastRun, links]
              additionalProperties: false
              properties:
                name: {$ref: "#/components/schemas/Name"}
                desiredRevision: {$ref: "#/components/schemas/NullableString"}
                appliedRevision: {$ref: "#/components/schemas/NullableString"}
                commit: {$ref: "#/components/schemas/NullableString"}
                sync:
                  type: string
                  enum: [inSync, outOfSync, notApplied, notInRepository, unknown]
                lifecycle: {type: string}
                health:
                  oneOf:
                    - type: "null"
                    - type: string
                      enum: [running, starting, drifted, died, failed, stopped, paused, revoked, killed, absent]
                healthDetail: {$ref: "#/components/schemas/NullableString"}
                machineState: {$ref: "#/components/schemas/NullableString"}
                killSwitch:
                  oneOf: [{$ref: "#/components/schemas/KillSwitch"}, {type: "null"}]
                suspension:
                  description: The agent's suspension, or the service's.
                  oneOf: [{$ref: "#/components/schemas/Suspension"}, {type: "null"}]
                conditions:
                  type: array
                  items: {$ref: "#/components/schemas/Condition"}
                schedule:
                  oneOf: [{$ref: "#/components/schemas/Schedule"}, {type: "null"}]
                lastRun:
                  oneOf: [{$ref: "#/components/schemas/Run"}, {type: "null"}]
                links:
                  type: object
                  required: [runs]
                  additionalProperties: false
                  properties:
                    runs: {type: string}
            AgentList:
              type: object
              required: [commit, agents]
              additionalProperties: false
              properties:
                commit: {$ref: "#/components/schemas/NullableString"}
                agents:
                  type: array
                  items: {$ref: "#/components/schemas/Agent"}
            ArtifactList:
              type: object
              required: [artifacts, omitted]
              additionalProperties: false
              properties:
                artifacts:
                  type: array
                  items:
                    type: object
                    required: [path, size, sha256, stored, link]
                    additionalProperties: false
                    properties:
                      path: {type: string}
                      size: {type: integer, minimum: 0}
                      sha256: {type: string, pattern: "^[0-9a-f]{64}$"}
                      stored:
                        description: False when the artifact was too large to keep in history.
                        type: boolean
                      link: {$ref: "#/components/schemas/NullableString"}
                omitted:
                  description: Artifacts not listed (past the record's limit).
                  type: integer
                  minimum: 0
            Suspension:
              type: object
              required: [agent, actor, reason, since]
              additionalProperties: false
              properties:
                agent:
                  description: Null for the whole service.
                  oneOf: [{$ref: "#/components/schemas/Name"}, {type: "null"}]
                actor: {type: string}
                reason: {type: string}
                since: {$ref: "#/components/schemas/Time"}
            SuspendInput:
              type: object
              additionalProperties: false
              properties:
                reason: {type: string, minLength: 1, maxLength: 1024}
            SuspendResult:
              type: object
              required: [suspended, changed]
              additionalProperties: false
              properties:
                agent: {$ref: "#/components/schemas/Name"}
                suspended: {type: boolean}
                changed: {type: boolean}
                suspension: {$ref: "#/components/schemas/Suspension"}
            DeliveryPage:
              type: object
              required: [deliveries, nextCursor]
              additionalProperties: false
              properties:
                deliveries:
                  type: array
                  items:
                    type: object
                    required: [id, url, type, status, attempts, lastStatus, lastError, createdAt, nextAttemptAt,
                      deliveredAt]
                    additionalProperties: false
                    properties:
                      id: {type: string, pattern: "^msg_[0-9a-f]+$"}
                      url: {type: string}
                      type:
                        type: string
                        enum: [run.completed, agent.stalled]
                      status:
                        type: string
                        enum: [pending, delivered, failed]
                      attempts: {type: integer, minimum: 0}
                      lastStatus: {type: [integer, "null"]}
                      lastError: {$ref: "#/components/schemas/NullableString"}
                      createdAt: {$ref: "#/components/schemas/Time"}
                      nextAttemptAt:
                        oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]
                      deliveredAt:
                        oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]
                nextCursor: {$ref: "#/components/schemas/NullableString"}
            KillResult:
              type: object
              required: [agent, killed, changed]
              additionalProperties: false
              properties:
                agent: {$ref: "#/components/schemas/Name"}
                killed: {type: boolean}
                changed: {type: boolean}
            ReconcileStatus:
              type: object
              required: [passes, suspension, source, lastPass]
              additionalProperties: false
              properties:
                passes: {type: integer, minimum: 0}
                suspension:
                  oneOf: [{$ref: "#/components/schemas/Suspension"}, {type: "null"}]
                source:
                  description: >-
                    The remote repository the service follows (`--repo URL`), as last fetched into its
                    mirror; null when it reads a local repository. `commit` and `fetchedAt` are of the last
                    fetch that worked; `error` is why the last attempt failed (null when it worked);
                    `fetchingSince` is set while a fetch is under way.
                  oneOf:
                    - type: "null"
                    - type: object
                      required: [url, branch, commit, fetchedAt, attemptedAt, fetchingSince, error]
                      additionalProperties: false
                      properties:
                        url: {type: string}
                        branch: {type: string}
                        commit: {$ref: "#/components/schemas/NullableString"}
                        fetchedAt: {oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]}
                        attemptedAt: {oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]}
                        fetchingSince: {oneOf: [{$ref: "#/components/schemas/Time"}, {type: "null"}]}
                        error: {$ref: "#/components/schemas/NullableString"}
                lastPass:
                  oneOf:
                    - type: "null"
                    - type: object
                      required: [startedAt, durationMs, commit, result, message]
                      additionalProperties: false
                      properties:
                        startedAt: {$ref: "#/components/schemas/Time"}
                        durationMs: {type: integer, minimum: 0}
                        commit: {$ref: "#/components/schemas/NullableString"}
                        result:
                          type: string
                          enum: [applied, noChanges, partlyFailed, invalid, refused, failed, suspended, fetchFailed]
                        message: {type: string}

        """#
}
