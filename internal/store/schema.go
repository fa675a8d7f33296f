package store

import (
	"context"
	"fmt"
	"strings"
)

// migrations are our own tables; River migrates its own with rivermigrate.
// Each runs once, in order, recorded in cb_schema. Columns are portable:
// times are unix microseconds, payloads are bytes ({{bytes}} per dialect).
var migrations = []string{
	`CREATE TABLE cb_events (
		source      TEXT NOT NULL,
		id          TEXT NOT NULL,
		type        TEXT NOT NULL,
		key         TEXT NOT NULL DEFAULT '',
		replaces    TEXT NOT NULL DEFAULT '',
		occurred_at BIGINT NOT NULL,
		received_at BIGINT NOT NULL,
		payload     {{bytes}},
		PRIMARY KEY (source, id)
	);
	CREATE INDEX cb_events_received ON cb_events (received_at);
	CREATE TABLE cb_deliveries (
		id           TEXT PRIMARY KEY,
		source       TEXT NOT NULL,
		event_id     TEXT NOT NULL,
		route        TEXT NOT NULL,
		key          TEXT NOT NULL DEFAULT '',
		state        TEXT NOT NULL,
		attempts     INTEGER NOT NULL DEFAULT 0,
		run_at       BIGINT NOT NULL,
		created_at   BIGINT NOT NULL,
		updated_at   BIGINT NOT NULL,
		last_error   TEXT NOT NULL DEFAULT '',
		external_id  TEXT NOT NULL DEFAULT '',
		delivered_at BIGINT NOT NULL DEFAULT 0,
		job_id       BIGINT NOT NULL DEFAULT 0
	);
	CREATE INDEX cb_deliveries_route_key ON cb_deliveries (route, key, state);
	CREATE INDEX cb_deliveries_state ON cb_deliveries (state, run_at);
	CREATE INDEX cb_deliveries_event ON cb_deliveries (source, event_id);
	CREATE INDEX cb_deliveries_created ON cb_deliveries (created_at);`,

	// Receipt status from delivery callbacks, and connector state (opt-out
	// lists, OAuth tokens).
	`ALTER TABLE cb_deliveries ADD COLUMN receipt_status TEXT NOT NULL DEFAULT '';
	ALTER TABLE cb_deliveries ADD COLUMN receipt_rank INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX cb_deliveries_external ON cb_deliveries (external_id);
	CREATE TABLE cb_kv (
		scope      TEXT NOT NULL,
		key        TEXT NOT NULL,
		value      {{bytes}} NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (scope, key)
	);`,

	// Reconciliation: one watermark per reconciler and a record of each run.
	`CREATE TABLE cb_watermarks (
		name TEXT PRIMARY KEY,
		at   BIGINT NOT NULL
	);
	CREATE TABLE cb_reconcile_runs (
		id              TEXT PRIMARY KEY,
		name            TEXT NOT NULL,
		cause           TEXT NOT NULL,
		started_at      BIGINT NOT NULL,
		finished_at     BIGINT NOT NULL,
		listed          INTEGER NOT NULL,
		known           INTEGER NOT NULL,
		recovered       INTEGER NOT NULL,
		error           TEXT NOT NULL DEFAULT '',
		watermark_before BIGINT NOT NULL,
		watermark_after  BIGINT NOT NULL
	);
	CREATE INDEX cb_reconcile_runs_name ON cb_reconcile_runs (name, started_at);`,

	// The audit log: every admin action, hash-chained so an edit shows.
	`CREATE TABLE cb_audit (
		seq       BIGINT PRIMARY KEY,
		at        BIGINT NOT NULL,
		actor     TEXT NOT NULL,
		action    TEXT NOT NULL,
		target    TEXT NOT NULL,
		outcome   TEXT NOT NULL,
		prev_hash TEXT NOT NULL,
		hash      TEXT NOT NULL
	);`,

	// Retention and erasure: a purged event keeps its row (the ledger refers
	// to it) without its payload.
	`ALTER TABLE cb_events ADD COLUMN purged_at BIGINT NOT NULL DEFAULT 0;
	CREATE INDEX cb_events_key ON cb_events (key);`,

	// Shared token buckets: sink rate limits that hold across agents.
	`CREATE TABLE cb_limits (
		name       TEXT PRIMARY KEY,
		tokens     DOUBLE PRECISION NOT NULL,
		updated_at BIGINT NOT NULL
	);`,
}

// SchemaVersion is the newest schema this binary knows.
var SchemaVersion = len(migrations)

// checkSchema refuses a database whose schema is not this binary's.
func checkSchema(ctx context.Context, q querier) error {
	v, err := queryOne(ctx, q, func(r rows) (int, error) {
		var v int
		return v, r.Scan(&v)
	}, `SELECT COALESCE(MAX(version), 0) FROM cb_schema`)
	if err != nil {
		return fmt.Errorf("reading the schema version (run `clinicbridge migrate`): %w", err)
	}
	if v != SchemaVersion {
		return fmt.Errorf("the database schema is version %d and this binary needs %d: run `clinicbridge migrate` (store.migrate is false)", v, SchemaVersion)
	}
	return nil
}

func migrate(ctx context.Context, q querier, bytesType string) error {
	if _, err := q.exec(ctx, `CREATE TABLE IF NOT EXISTS cb_schema (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	v, err := queryOne(ctx, q, func(r rows) (int, error) {
		var v int
		return v, r.Scan(&v)
	}, `SELECT COALESCE(MAX(version), 0) FROM cb_schema`)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("the database schema is version %d, newer than this binary knows (%d): upgrade clinicbridge", v, SchemaVersion)
	}
	for i := v; i < len(migrations); i++ {
		for _, stmt := range strings.Split(strings.ReplaceAll(migrations[i], "{{bytes}}", bytesType), ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := q.exec(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		if _, err := q.exec(ctx, `INSERT INTO cb_schema (version) VALUES ($1)`, i+1); err != nil {
			return err
		}
	}
	return nil
}
