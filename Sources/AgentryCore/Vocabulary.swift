// The modules the core's API speaks in, re-exported so that a caller of the core (the CLI, later
// the server) needs no import past it: shared basics (failures, durations, timestamps), resources,
// diagnostics and their output formats, plans, actions and theirs.
@_exported import AgentryBasics
@_exported import AgentryModel
@_exported import AgentryPlan
