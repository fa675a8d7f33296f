// Package mapping implements clinicbridge's mapping language: YAML documents
// that turn the mapping input document
//
//	{"event": {"id", "type", "source", "key", "received_at", "occurred_at"}, "payload": <provider body>}
//
// into the document a sink action receives, plus the expressions routes use
// (when, key, at). Expressions use expr-lang/expr syntax everywhere.
//
// The package is pure: no I/O and no mutable globals. A mapping is compiled once
// when the config is loaded (Compile, CompileNode) and applied per event
// (Program.Apply), concurrently if need be. Compile errors carry file:line:col and
// the path of the offending key; apply errors are *ApplyError so the pipeline can
// treat them as permanent.
//
// Member access on the input (payload.a.b[0].c, also inside larger expressions)
// is nil-safe: a missing key, a nil member, an out-of-range index or a member of
// a non-object all yield nil instead of an error. Integrators write
// `payload.attendees[0].phoneNumber != nil` and mean exactly that.
package mapping
