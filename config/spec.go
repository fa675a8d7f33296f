package config

// Spec declares every top-level key of a config file. Check enforces it,
// Schema turns it into JSON Schema, and docs/config.md describes it.
var Spec = []Field{
	{Name: "version", Kind: KindInt, Default: "1", Doc: "Config format version. Only 1 exists."},
	{Name: "server", Kind: KindObject, Doc: "The public webhook listener.", Fields: []Field{
		{Name: "listen", Kind: KindString, Default: DefaultListen, Doc: "Address for webhooks (POST /hooks/{connector}) and GET /healthz, /readyz."},
		{Name: "public_url", Kind: KindString, Example: "https://bridge.example.clinic", Doc: "How senders reach this agent; used for signature schemes that sign the URL and for callback URLs."},
		{Name: "max_body", Kind: KindSize, Default: "1MiB", Doc: "Largest webhook body accepted; larger ones get 413."},
		{Name: "tls", Kind: KindObject, Doc: "Serve webhooks over TLS (1.2 or newer). The certificate is re-read when its files change.", Fields: []Field{
			{Name: "cert_file", Kind: KindString, Required: true, Doc: "PEM certificate chain."},
			{Name: "key_file", Kind: KindString, Required: true, Doc: "PEM private key."},
			{Name: "client_ca_file", Kind: KindString, Doc: "PEM CA bundle: when set, senders must present a client certificate it signed (mutual TLS)."},
		}},
	}},
	{Name: "admin", Kind: KindObject, Doc: "The admin API and /metrics; never on the public listener.", Fields: []Field{
		{Name: "listen", Kind: KindString, Default: DefaultAdminListen, Doc: "Address of the admin API. A non-loopback address requires a token."},
		{Name: "token", Kind: KindString, Secret: true, Example: "${CLINICBRIDGE_ADMIN_TOKEN}", Doc: "Bearer token for the admin API and admin CLI verbs, with every scope (its name in the audit log is `admin`)."},
		{Name: "tokens", Kind: KindObjectList, Doc: "More named tokens with scopes: `read` (list and show, metrics, audit verify), `replay` (also replay and reconcile run), `admin` (everything).", Fields: []Field{
			{Name: "name", Kind: KindString, Required: true, Doc: "Who the token is, as the audit log records it."},
			{Name: "token", Kind: KindString, Required: true, Secret: true, Example: "${ONCALL_TOKEN}"},
			{Name: "scopes", Kind: KindStringList, Required: true, Enum: []string{ScopeRead, ScopeReplay, ScopeAdmin}, Example: "[read, replay]"},
		}},
	}},
	{Name: "store", Kind: KindObject, Doc: "Durable state: events, deliveries, the queue.", Fields: []Field{
		{Name: "driver", Kind: KindString, Default: "sqlite", Enum: []string{"sqlite", "postgres"}, Doc: "sqlite for one agent; postgres for several agents sharing one database."},
		{Name: "path", Kind: KindString, Default: DefaultStorePath, Doc: "SQLite database file."},
		{Name: "url", Kind: KindString, Secret: true, Example: "${DATABASE_URL}", Doc: "PostgreSQL connection URL."},
		{Name: "agent_id", Kind: KindString, Example: "${HOSTNAME}", Doc: "Postgres: this agent's name among those sharing the database, stable across restarts, so a restarted agent takes back at once the work its previous process left running (others are rescued after 3 minutes). Two live agents with one id are refused."},
		{Name: "migrate", Kind: KindBool, Default: "true", Doc: "Run schema migrations at start. With false, start only if the schema is this binary's (run `clinicbridge migrate` in your deploy step)."},
		{Name: "retention", Kind: KindDuration, Default: "720h", Doc: "Payloads are purged after this (hourly, once every delivery of the event is finished); the delivery ledger stays."},
		{Name: "encryption_key", Kind: KindString, Secret: true, Example: "${CLINICBRIDGE_ENCRYPTION_KEY}",
			Doc: "Seal payloads and connector state (tokens, opt-out lists) at rest with AES-256-GCM: 32 bytes in base64 (`openssl rand -base64 32`). A list rotates keys: the first seals, all open; `clinicbridge rekey` re-seals old rows.",
			Or:  &Field{Kind: KindStringList}},
	}},
	{Name: "log", Kind: KindObject, Doc: "Logs carry ids, types, routes and states, never payload values.", Fields: []Field{
		{Name: "level", Kind: KindString, Default: "info", Enum: []string{"debug", "info", "warn", "error"}},
		{Name: "format", Kind: KindString, Default: "json", Enum: []string{"json", "console"}},
	}},
	{Name: "connectors", Kind: KindAny, Doc: "Named connectors: `name: {type: TYPE, ...}`; each type's keys are listed under Connector types (docs/reference.md)."},
	{Name: "routes", Kind: KindObjectList, Doc: "What to deliver where.", Fields: RouteSpec},
	{Name: "reconcile", Kind: KindObjectList, Doc: "Cron-driven pulls of sources' list APIs.", Fields: []Field{
		{Name: "name", Kind: KindString, Required: true},
		{Name: "from", Kind: KindString, Required: true, Doc: "A source connector that can list."},
		{Name: "schedule", Kind: KindString, Required: true, Example: "*/15 * * * *", Doc: "Cron spec (robfig/cron; 5 fields, or 6 with seconds)."},
		{Name: "lookback", Kind: KindDuration, Default: "1h", Doc: "How far before the stored watermark each run starts."},
	}},
}

// RouteSpec declares a route's keys.
var RouteSpec = []Field{
	{Name: "name", Kind: KindString, Required: true, Doc: "Unique route name; part of each delivery's identity."},
	{Name: "from", Kind: KindString, Required: true, Doc: "Source connector name."},
	{Name: "events", Kind: KindStringList, Doc: "Event types this route takes; empty means all."},
	{Name: "when", Kind: KindString, Example: "payload.score <= 2", Doc: "Filter expression; false -> the delivery is `skipped`."},
	{Name: "key", Kind: KindString, Example: "payload.uid", Doc: "Business key expression; defaults to the event's key. Scheduling and cancellation work per key."},
	{Name: "at", Kind: KindString, Example: `date(payload.startTime) - duration("24h")`, Doc: "Deliver later, at this time."},
	{Name: "late", Kind: KindString, Default: "send", Enum: []string{"send", "skip"}, Doc: "When `at` is already past at planning time: send now, or record the delivery as skipped (reason `late`)."},
	{Name: "quiet_hours", Kind: KindObject, Doc: "Never send inside this daily window: a send that falls in it moves to the window's end.", Fields: []Field{
		{Name: "start", Kind: KindString, Required: true, Example: "21:00", Doc: "Start of the window, HH:MM."},
		{Name: "end", Kind: KindString, Required: true, Example: "08:00", Doc: "End of the window, HH:MM (may be on the next day)."},
		{Name: "tz", Kind: KindString, Required: true, Example: "Europe/London", Doc: "IANA time zone the times are in."},
	}},
	{Name: "cancel_on", Kind: KindStringList, Doc: "Event types that cancel this route's scheduled deliveries with the same key."},
	{Name: "map", Kind: KindAny, Required: true, Doc: "Mapping file (relative to this config) or an inline mapping."},
	{Name: "to", Kind: KindString, Required: true, Doc: "Sink connector name, or {connector, action}.",
		Or: &Field{Kind: KindObject, Fields: []Field{
			{Name: "connector", Kind: KindString, Required: true},
			{Name: "action", Kind: KindString, Doc: "Defaults to the sink's first action."},
		}}},
	{Name: "needs", Kind: KindObject, Doc: "Wait until another route has delivered for a key (a payment waits for its invoice); the mapping reads that delivery's receipt as `needs.external_id`.", Fields: []Field{
		{Name: "route", Kind: KindString, Required: true, Doc: "The route whose success this one needs."},
		{Name: "key", Kind: KindString, Required: true, Example: "payload.data.object.invoice", Doc: "Expression for the key of the needed delivery."},
		{Name: "wait", Kind: KindDuration, Default: "24h", Doc: "How long to wait before the delivery is dead with the reason."},
	}},
	{Name: "retry", Kind: KindObject, Doc: "Retry bounds for transient failures.", Fields: []Field{
		{Name: "max_attempts", Kind: KindInt, Default: "8", Doc: "Attempts in all, the first included."},
		{Name: "max_age", Kind: KindDuration, Doc: "Give up (dead) once the event is older than this."},
		{Name: "backoff", Kind: KindStringList, Example: "[5s, 5m, 30m]", Doc: "Waits between attempts, each jittered; the last repeats. Default 5s, 5m, 30m, 2h, 5h, 10h, 10h."},
	}},
}
