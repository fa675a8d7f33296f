// Package store is clinicbridge's durable state: the events it accepted, the
// delivery ledger, and the River queue that drives deliveries, on SQLite (one
// agent) or PostgreSQL (several). Everything else reaches the database only
// through the Store interface, so the drivers stay interchangeable.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// State is where a delivery stands.
type State string

const (
	Scheduled State = "scheduled" // waiting for its `at`
	Pending   State = "pending"   // queued, or between attempts
	Succeeded State = "succeeded"
	Skipped   State = "skipped" // filtered out by `when`, or not needed (opted out, stale)
	Cancelled State = "cancelled"
	Dead      State = "dead" // permanent error or retries exhausted
)

// States lists every state, for metrics and filters.
var States = []State{Scheduled, Pending, Succeeded, Skipped, Cancelled, Dead}

// Final reports whether no further attempt will be made without a replay.
func (s State) Final() bool { return s != Scheduled && s != Pending }

// ErrNotFound is returned for an unknown event or delivery.
var ErrNotFound = errors.New("not found")

// ErrNotShared is returned by TakeToken on a store that serves one agent.
var ErrNotShared = errors.New("this store serves one agent: limits are local")

// ErrUnavailable wraps failures to reach the database: the server answers 503.
var ErrUnavailable = errors.New("store unavailable")

// Incoming is an event with what accepting it must do, planned by the pipeline.
// The store applies Cancels and then Deliveries only if the event is new.
type Incoming struct {
	Event      connectors.Event
	Cancels    []Cancel
	Deliveries []NewDelivery
}

// Cancel cancels the scheduled deliveries of Route for Key.
type Cancel struct {
	Route  string
	Key    string
	Reason string
}

// NewDelivery is one (event, route) pair to record and, unless it is already
// final (skipped, dead), to queue.
type NewDelivery struct {
	ID          string
	Route       string
	Key         string
	State       State // Pending, Scheduled, Skipped or Dead
	RunAt       time.Time
	Reason      string // why it is skipped or dead
	MaxAttempts int
}

// EventRecord is a stored event.
type EventRecord struct {
	connectors.Event
	ReceivedAt time.Time `json:"received_at"`
	// PurgedAt is set once retention or an erasure request removed the payload.
	PurgedAt time.Time `json:"purged_at,omitzero"`
}

// Delivery is a row of the delivery ledger.
type Delivery struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"`
	EventID    string    `json:"event_id"`
	Route      string    `json:"route"`
	Key        string    `json:"key,omitempty"`
	State      State     `json:"state"`
	Attempts   int       `json:"attempts"`
	RunAt      time.Time `json:"run_at"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	LastError  string    `json:"last_error,omitempty"`
	ExternalID string    `json:"external_id,omitempty"`
	// DeliveredAt is set at the first success and kept across replays: the
	// ledger's proof that a non-idempotent sink must not be called again.
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// ReceiptStatus is the remote's latest word on a delivered message
	// (queued, sent, delivered, undelivered), from delivery callbacks.
	ReceiptStatus string `json:"receipt_status,omitempty"`
	JobID         int64  `json:"job_id,omitempty"`
}

// Outcome is the result of one attempt, written to the ledger.
type Outcome struct {
	ID         string
	State      State // Succeeded, Pending (will retry), Dead, Skipped, Cancelled
	Error      string
	ExternalID string
	// Attempted counts the attempt; waiting, a skip or a 429 does not.
	Attempted bool
	// Next, when set, queues another attempt at that time, in the same
	// transaction as the outcome: a retry, or a wait (rate limit, open
	// circuit, a needed route).
	Next time.Time
}

// Loaded is a delivery with its event, read together for an attempt.
type Loaded struct {
	Delivery Delivery
	Event    EventRecord
}

// DeliveryFilter selects ledger rows, newest first.
type DeliveryFilter struct {
	Route   string
	State   State
	Source  string
	EventID string
	Since   time.Time
	Limit   int
}

// EventFilter selects events, newest first.
type EventFilter struct {
	Source string
	Type   string
	Since  time.Time
	Limit  int
}

// ReplayFilter selects deliveries to run again with the current config.
type ReplayFilter struct {
	IDs   []string // these deliveries, whatever their final state
	Route string   // or: every dead delivery of this route...
	Since time.Time
	State State // ...in this state (default Dead)
}

// PurgeFilter selects payloads to remove: set exactly one field.
type PurgeFilter struct {
	Before  time.Time // retention: received before this, all deliveries finished
	Subject string    // erasure: events whose key, or whose deliveries' key, is this
}

// Stats feeds /metrics.
type Stats struct {
	ByState       map[State]int
	OldestPending time.Duration // age of the oldest due, not yet delivered delivery
}

// Store is the database seam.
type Store interface {
	// Accept records events and, for each new one, its cancellations and
	// deliveries, in one durable transaction shared with concurrent callers
	// (group commit). It returns, per event, whether it was new.
	Accept(ctx context.Context, in []Incoming) ([]bool, error)

	Event(ctx context.Context, source, id string) (EventRecord, error)
	Events(ctx context.Context, f EventFilter) ([]EventRecord, error)
	Delivery(ctx context.Context, id string) (Delivery, error)
	// Load reads deliveries with their events in one query (the worker's
	// read); ids not in the ledger are left out.
	Load(ctx context.Context, ids []string) ([]Loaded, error)
	Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)

	// Claim moves a scheduled delivery to pending as its time comes; false
	// means it was cancelled or replaced first and must not be sent.
	Claim(ctx context.Context, id string) (bool, error)
	Record(ctx context.Context, o Outcome) error
	// Replay queues the selected deliveries again and returns their ids.
	Replay(ctx context.Context, f ReplayFilter) ([]string, error)
	// Succeeded returns the newest succeeded delivery of route for key, or ErrNotFound.
	Succeeded(ctx context.Context, route, key string) (Delivery, error)
	// UpdateReceipts applies delivery callbacks; an update never lowers a
	// receipt's rank. Unknown external ids are ignored.
	UpdateReceipts(ctx context.Context, us []connectors.ReceiptUpdate) error
	// State is durable key-value storage for the connector called scope.
	State(scope string) connectors.State

	// Watermark is where reconciler name's last successful run got to (zero: never ran).
	Watermark(ctx context.Context, name string) (time.Time, error)
	// FinishRun records a reconcile run and, when it succeeded, advances the
	// watermark to run.WatermarkAfter (never backwards), in one transaction.
	FinishRun(ctx context.Context, run Run) error
	// Runs lists reconcile runs, newest first (name "" for all).
	Runs(ctx context.Context, name string, limit int) ([]Run, error)

	// Audit appends an entry to the hash-chained audit log.
	Audit(ctx context.Context, a AuditEntry) error
	// AuditLog lists entries, newest first.
	AuditLog(ctx context.Context, limit int) ([]AuditEntry, error)
	// VerifyAudit recomputes the chain; a broken link returns *AuditBroken.
	VerifyAudit(ctx context.Context) (int, error)

	// Purge removes payloads: of events received before f.Before whose
	// deliveries are all finished (retention), or of every event about
	// f.Subject, cancelling what was still to be sent (an erasure request).
	// Ledger rows stay, without PHI. It returns how many events it purged.
	Purge(ctx context.Context, f PurgeFilter) (int, error)
	// Rekey re-seals every stored payload and connector value with the
	// newest encryption key and returns how many it rewrote.
	Rekey(ctx context.Context) (int, error)

	// TakeToken takes one token from the shared bucket name (refilled at
	// perSecond, holding at most burst) and returns 0, or how long until a
	// token will be there. Only stores that serve several agents share
	// buckets (SharesLimits); the others answer ErrNotShared.
	TakeToken(ctx context.Context, name string, perSecond float64, burst int) (time.Duration, error)
	SharesLimits() bool

	Stats(ctx context.Context) (Stats, error)
	Ping(ctx context.Context) error

	// Start runs the queue's workers; Stop waits for in-flight work until ctx ends.
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Close() error
}

// Run is one reconciliation run.
type Run struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Trigger         string    `json:"trigger"` // schedule | manual | gap
	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at"`
	Listed          int       `json:"listed"`    // items the source listed
	Known           int       `json:"known"`     // already stored (webhook arrived)
	Recovered       int       `json:"recovered"` // new: the webhook was missed
	Error           string    `json:"error,omitempty"`
	WatermarkBefore time.Time `json:"watermark_before,omitzero"`
	WatermarkAfter  time.Time `json:"watermark_after,omitzero"`
}

// AuditEntry is one admin action.
type AuditEntry struct {
	Seq     int64     `json:"seq"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`  // admin token name, or "system"
	Action  string    `json:"action"` // replay, purge, rekey, reconcile_run, reload
	Target  string    `json:"target"` // what it acted on (ids, names; no payload values)
	Outcome string    `json:"outcome"`
	Hash    string    `json:"hash"`
}

// AuditBroken says where the audit chain fails to verify.
type AuditBroken struct {
	Seq    int64
	Reason string
}

func (e *AuditBroken) Error() string {
	return fmt.Sprintf("audit log entry %d does not verify: %s", e.Seq, e.Reason)
}

// ReconcileArgs is the queue job for one scheduled reconcile run.
type ReconcileArgs struct {
	Name string `json:"name"`
}

// Kind names the River job kind.
func (ReconcileArgs) Kind() string { return "cb_reconcile" }

// Deliver attempts the deliveries ids and records each outcome. job is the
// queue job running them, or 0 for a first attempt run straight from the
// ledger (SQLite, see dispatcher). A delivery whose ledger row names another
// job has been handed on (a retry is queued) and must be left to that job,
// so a job run twice never attempts a delivery twice. An error means the
// store failed and the attempts must run again.
type Deliver func(ctx context.Context, job int64, ids []string) error

// BatchArgs is the queue job for the first attempt of the immediate
// deliveries accepted in one commit: one River job for many deliveries keeps
// the queue's own per-job work (fetch, complete) off the hot path. Retries,
// waits and scheduled deliveries get a DeliveryArgs job each.
type BatchArgs struct {
	DeliveryIDs []string `json:"d"`
}

// Kind names the River job kind.
func (BatchArgs) Kind() string { return "cb_batch" }

// MaxBatch bounds the deliveries in one batch job.
const MaxBatch = 100

// DeliveryArgs is the queue job for one delivery attempt.
type DeliveryArgs struct {
	DeliveryID string `json:"d"`
	Route      string `json:"r"`
}

// Kind names the River job kind.
func (DeliveryArgs) Kind() string { return "cb_delivery" }

// Params configure Open.
type Params struct {
	Driver string // sqlite | postgres
	Path   string // sqlite file
	URL    string // postgres URL
	// Schema, for postgres, puts every table in this schema (tests use one per run).
	Schema string
	// AgentID names this agent among several sharing Postgres (River's
	// client id). It must be stable across restarts: a restarted agent takes
	// back the jobs its previous process left running, at once. Two live
	// agents with one id are refused. Empty: a random id (no take-back; jobs
	// of a dead agent are rescued after RescueAfter).
	AgentID string
	// Migrate, when false, skips migrations and refuses to start unless the
	// schema is exactly this binary's (`clinicbridge migrate` runs them).
	NoMigrate bool

	// Deliver makes delivery attempts; with nil the store queues work but
	// runs none (tools, tests).
	Deliver Deliver
	// Reconciler runs reconcile jobs, which Periodic schedules (on the River
	// leader only, so several agents run each slot once).
	Reconciler river.Worker[ReconcileArgs]
	Periodic   []*river.PeriodicJob
	MaxWorkers int // default 200
	// EncryptionKeys (base64, 32 bytes each, newest first) seal payloads and
	// connector state with AES-256-GCM; none stores them in the clear.
	EncryptionKeys []string
	// Retention, when set, purges payloads older than this hourly (on the
	// River leader), keeping the ledger.
	Retention time.Duration
	// Linger is how long the group committer waits for company before committing
	// a small batch (default 1ms).
	Linger time.Duration
	// Logger receives River's own logs (warnings and errors).
	Logger *slog.Logger
}
