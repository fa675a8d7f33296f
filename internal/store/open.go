package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// Open connects, migrates our tables and River's, and returns a Store whose
// queue is ready to Start.
func Open(ctx context.Context, p Params) (Store, error) {
	switch p.Driver {
	case "", "sqlite":
		return openSQLite(ctx, p)
	case "postgres":
		return openPostgres(ctx, p)
	default:
		return nil, fmt.Errorf("unknown store driver %q (sqlite or postgres)", p.Driver)
	}
}

// infraRetry spaces River's own retries of a job. They happen only when the
// store failed mid-attempt (the database was away while an outcome was being
// written); delivery retries are ledger decisions with their own backoff. So
// they are quick and capped: River's default (attempt^4 seconds) would leave
// a delivery idle for minutes after a short database outage.
type infraRetry struct{}

func (infraRetry) NextRetry(job *rivertype.JobRow) time.Time {
	wait := min(time.Duration(1<<min(job.Attempt, 6))*250*time.Millisecond, 10*time.Second)
	return time.Now().Add(wait/2 + time.Duration(rand.Int64N(int64(wait/2)+1)))
}

// JobTimeout bounds one delivery attempt or reconcile page loop in the queue;
// RescueAfter is when the leader gives a dead agent's running job to another.
const (
	JobTimeout  = 2 * time.Minute
	RescueAfter = JobTimeout + time.Minute
)

// RetentionArgs is the hourly job that purges payloads past store.retention.
type RetentionArgs struct{}

// Kind names the River job kind.
func (RetentionArgs) Kind() string { return "cb_retention" }

type retentionWorker struct {
	river.WorkerDefaults[RetentionArgs]
	after time.Duration
	store *Store // set once the engine exists
}

func (w *retentionWorker) Work(ctx context.Context, _ *river.Job[RetentionArgs]) error {
	_, err := (*w.store).Purge(ctx, PurgeFilter{Before: time.Now().Add(-w.after)})
	return err
}

// logger is where the queue and the dispatcher log (warnings and errors).
func (p Params) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func riverConfig(p Params, self *Store, running *working) *river.Config {
	cfg := &river.Config{
		Logger:      p.logger(),
		RetryPolicy: infraRetry{},
		// Fetch soon after work arrives: the default 100 ms cooldown caps draining.
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 200 * time.Millisecond,
		JobTimeout:        JobTimeout,
		// A job still running this long belonged to an agent that died
		// (attempts are bounded by JobTimeout): another agent takes it over.
		RescueStuckJobsAfter: RescueAfter,
		ID:                   p.AgentID,
	}
	if p.Deliver != nil {
		workers := river.NewWorkers()
		river.AddWorker(workers, &deliveryWorker{deliver: p.Deliver, working: running})
		// Batch jobs are Postgres's first attempts; SQLite registers the
		// worker too, for batch jobs queued by an older version.
		river.AddWorker(workers, &batchWorker{deliver: p.Deliver, working: running})
		if p.Reconciler != nil {
			river.AddWorker(workers, p.Reconciler)
			cfg.PeriodicJobs = p.Periodic
		}
		if p.Retention > 0 {
			// The leader purges hourly: one agent does it, whichever leads.
			river.AddWorker(workers, &retentionWorker{after: p.Retention, store: self})
			cfg.PeriodicJobs = append(cfg.PeriodicJobs, river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
				func() (river.JobArgs, *river.InsertOpts) { return RetentionArgs{}, &river.InsertOpts{MaxAttempts: 3} },
				&river.PeriodicJobOpts{ID: "retention", RunOnStart: true}))
		}
		cfg.Workers = workers
		maxWorkers := p.MaxWorkers
		if maxWorkers <= 0 {
			maxWorkers = 200
		}
		cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}}
	}
	return cfg
}

// SQLite: one write connection (SQLite has one writer; more only adds
// SQLITE_BUSY), synchronous=FULL so a 2xx survives power loss, and a separate
// read-only pool so admin reads and the workers' lookups never queue behind
// a commit.
func openSQLite(ctx context.Context, p Params) (Store, error) {
	if p.Path == "" {
		return nil, errors.New("store.path is required for sqlite")
	}
	if err := os.MkdirAll(filepath.Dir(p.Path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// SQLite serves one agent: the lock makes a second one fail loudly
	// instead of sharing the file, and lets us treat jobs left `running` as
	// orphans of a crash (below).
	lock, err := lockFile(p.Path + ".lock")
	if err != nil {
		return nil, err
	}
	dsn := "file:" + p.Path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(0)&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(67108864)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		lock.Close()
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		lock.Close()
		return nil, fmt.Errorf("store: open %s: %w", p.Path, err)
	}
	_ = os.Chmod(p.Path, 0o600)
	readDSN := "file:" + p.Path + "?_pragma=busy_timeout(10000)&_pragma=query_only(1)"
	rdb, err := sql.Open("sqlite", readDSN)
	if err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	rdb.SetMaxOpenConns(4)

	driver := riversqlite.New(db)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return nil, closeAll(err, db, rdb, lock)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, closeAll(fmt.Errorf("store: river migrations: %w", err), db, rdb, lock)
	}
	if err := migrateSQL(ctx, db, "BLOB"); err != nil {
		return nil, closeAll(fmt.Errorf("store: %w", err), db, rdb, lock)
	}
	// A job still `running` belonged to this agent's previous process, which
	// died mid-attempt (we hold the lock, so no one else runs it). Make it
	// available now rather than waiting for River's stuck-job rescuer (an
	// hour by default): at least once, without the hour.
	if _, err := db.ExecContext(ctx, `UPDATE river_job SET state = 'available' WHERE state = 'running'`); err != nil {
		return nil, closeAll(fmt.Errorf("store: requeue interrupted jobs: %w", err), db, rdb, lock)
	}
	keys, err := NewKeyring(p.EncryptionKeys)
	if err != nil {
		return nil, closeAll(err, db, rdb, lock)
	}
	var self Store
	running := &working{}
	client, err := river.NewClient(driver, riverConfig(p, &self, running))
	if err != nil {
		return nil, closeAll(err, db, rdb, lock)
	}
	writeStmts, readStmts := newStmtCache(db), newStmtCache(rdb)
	var ckpt *checkpointer
	for _, q := range hotStatements {
		if _, err := writeStmts.get(ctx, q, true); err != nil {
			return nil, closeAll(fmt.Errorf("store: prepare: %w", err), db, rdb, lock)
		}
	}
	e := &engine[*sql.Tx]{
		keys:     keys,
		client:   client,
		begin:    func(ctx context.Context) (*sql.Tx, error) { return db.BeginTx(ctx, nil) },
		commit:   func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
		rollback: func(_ context.Context, tx *sql.Tx) { _ = tx.Rollback() },
		inTx:     func(tx *sql.Tx) querier { return sqlQuerier{stmts: writeStmts, tx: tx} },
		read:     sqlQuerier{stmts: readStmts},
		close: func() error {
			readStmts.close()
			writeStmts.close()
			return errors.Join(ckpt.close(), rdb.Close(), db.Close(), lock.Close())
		},
		// A local file is either there or it is not: disk errors are 503 too.
		unavailable: func(err error) bool {
			return !errors.Is(err, ErrNotFound) && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrSealed) && !errors.Is(err, ErrTampered)
		},
	}
	e.writer = newWriter(e, p.Linger)
	e.catchUpLog = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
			p.logger().Warn("could not checkpoint the SQLite log on the write connection", "error", err)
		}
	}
	if ckpt, err = startCheckpointer(p.Path, e.writer.commits.Load, func() { e.writer.catchUp.Store(true) }, p.logger()); err != nil {
		return nil, closeAll(err, db, rdb, lock)
	}
	if p.Deliver != nil {
		cpu := &cpuPressure{}
		e.cpu = cpu
		busy := func() bool { return e.accepting.Load() > 0 && cpu.saturated.Load() }
		e.direct = newDispatcher(p.Deliver, e.pendingFirstAttempts, busy, p.logger())
		e.fresh = newFreshRows()
	}
	self = e
	return e, nil
}

func migrateSQL(ctx context.Context, db *sql.DB, bytesType string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	stmts := newStmtCache(db)
	defer stmts.close()
	if err := migrate(ctx, sqlQuerier{stmts: stmts, tx: tx}, bytesType); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func closeAll(err error, dbs ...io.Closer) error {
	for _, db := range dbs {
		db.Close()
	}
	return err
}

// lockFile takes an exclusive, non-blocking lock on path; the kernel drops
// it if the process dies, so a crash never leaves the store locked.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %s is in use by another clinicbridge process (SQLite serves one agent; use store.driver: postgres for several)", strings.TrimSuffix(path, ".lock"))
	}
	return f, nil
}

func openPostgres(ctx context.Context, p Params) (Store, error) {
	if p.URL == "" {
		return nil, errors.New("store.url is required for postgres")
	}
	pcfg, err := pgxpool.ParseConfig(p.URL)
	if err != nil {
		return nil, fmt.Errorf("store: invalid postgres url: %w", redactURL(err))
	}
	if p.Schema != "" {
		if err := createSchema(ctx, pcfg.ConnConfig, p.Schema); err != nil {
			return nil, err
		}
		pcfg.ConnConfig.RuntimeParams["search_path"] = p.Schema
	}
	if pcfg.MaxConns < 16 {
		pcfg.MaxConns = 16
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w: cannot reach postgres at %s: %v", ErrUnavailable, pcfg.ConnConfig.Host, err)
	}
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		pool.Close()
		return nil, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: river migrations: %w", err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// One migrator at a time when several agents start together.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7243001)`); err != nil {
			return err
		}
		if p.NoMigrate {
			return checkSchema(ctx, pgxQuerier{tx})
		}
		return migrate(ctx, pgxQuerier{tx}, "BYTEA")
	}); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	var agentLock *pgx.Conn
	if p.AgentID != "" {
		if agentLock, err = claimAgentID(ctx, pcfg.ConnConfig, p.AgentID); err != nil {
			pool.Close()
			return nil, err
		}
		// Jobs this agent's previous process left running are orphans: we
		// hold its id, so no live process is working them.
		if _, err := pool.Exec(ctx, `UPDATE river_job SET state = 'available'
			WHERE state = 'running' AND attempted_by[array_length(attempted_by, 1)] = $1`, p.AgentID); err != nil {
			agentLock.Close(ctx)
			pool.Close()
			return nil, fmt.Errorf("store: requeue interrupted jobs: %w", err)
		}
	}
	keys, err := NewKeyring(p.EncryptionKeys)
	if err != nil {
		pool.Close()
		return nil, err
	}
	var self Store
	running := &working{}
	client, err := river.NewClient(driver, riverConfig(p, &self, running))
	if err != nil {
		pool.Close()
		return nil, err
	}
	e := &engine[pgx.Tx]{
		keys:         keys,
		client:       client,
		begin:        func(ctx context.Context) (pgx.Tx, error) { return pool.Begin(ctx) },
		writeTimeout: 30 * time.Second,
		commit:       func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
		rollback:     func(ctx context.Context, tx pgx.Tx) { _ = tx.Rollback(ctx) },
		inTx:         func(tx pgx.Tx) querier { return pgxQuerier{tx} },
		read:         pgxQuerier{pool},
		close: func() error {
			if agentLock != nil {
				agentLock.Close(context.Background())
			}
			pool.Close()
			return nil
		},
		unavailable:  pgUnavailable,
		lockAudit:    `SELECT pg_advisory_xact_lock(7243002)`,
		takeTokenSQL: takeTokenPostgres,
		seedTokenSQL: `INSERT INTO cb_limits (name, tokens, updated_at)
			VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint) ON CONFLICT (name) DO NOTHING`,
	}
	e.writer = newWriter(e, p.Linger)
	if p.AgentID != "" && p.Deliver != nil {
		e.sweep = func(ctx context.Context) { sweepOrphans(ctx, pool, p.AgentID, running.ids) }
	}
	self = e
	return e, nil
}

// takeTokenPostgres refills the bucket for the time since it was last
// touched (the database's clock), then takes a token if a whole one is there.
// It returns the tokens left after taking (>= 0), or, when there was no whole
// token, how far short the bucket is (< 0), and leaves it unchanged then.
// The row lock serializes agents taking from one bucket.
const takeTokenPostgres = `WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint AS us),
	cur AS (SELECT l.tokens, l.updated_at FROM cb_limits l WHERE l.name = $1 FOR UPDATE),
	level AS (SELECT LEAST($3::double precision, (SELECT tokens FROM cur) + GREATEST(0, (SELECT us FROM now) - (SELECT updated_at FROM cur)) * $2::double precision / 1e6) AS t),
	took AS (UPDATE cb_limits SET tokens = (SELECT t FROM level) - 1, updated_at = (SELECT us FROM now)
		WHERE name = $1 AND (SELECT t FROM level) >= 1 RETURNING tokens)
	SELECT COALESCE((SELECT tokens FROM took), (SELECT t FROM level) - 1)`

// claimAgentID holds a session advisory lock named by the agent id for the
// life of the store, so two live agents cannot share an id. Postgres drops the
// lock when the session dies, so a killed agent's id is free again at once.
func claimAgentID(ctx context.Context, cc *pgx.ConnConfig, id string) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(7243003, hashtext(current_schema() || ':' || $1))`, id).Scan(&ok); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	if !ok {
		conn.Close(ctx)
		return nil, fmt.Errorf("store: another running agent uses store.agent_id %q: give each agent its own", id)
	}
	return conn, nil
}

// sweepOrphans requeues, every few seconds, delivery jobs the database says
// this agent is running while the agent is not: an attempt whose outcome
// could not be written (the database was away) can end with the job still
// marked running, which River would otherwise leave to its stuck-job rescue
// (RescueAfter). A delivery is guarded by its ledger row, so running it again
// never repeats a recorded success.
func sweepOrphans(ctx context.Context, pool *pgxpool.Pool, agentID string, running func() map[int64]bool) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sweepOnce(ctx, pool, agentID, running)
	}
}

func sweepOnce(ctx context.Context, pool *pgxpool.Pool, agentID string, running func() map[int64]bool) {
	// Bounded: after an outage the pool may be slow to hand out a
	// connection, and a sweeper stuck waiting sweeps nothing.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT id FROM river_job WHERE state = 'running' AND kind IN ('cb_delivery', 'cb_batch')
		AND attempted_by[array_length(attempted_by, 1)] = $1 AND attempted_at < now() - interval '5 seconds'`, agentID)
	if err != nil {
		return // the database is still away
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(ids) == 0 {
		return
	}
	busy := running()
	var orphans []int64
	for _, id := range ids {
		if !busy[id] {
			orphans = append(orphans, id)
		}
	}
	if len(orphans) > 0 {
		_, _ = pool.Exec(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now() WHERE state = 'running' AND id = ANY($1)`, orphans)
	}
}

func createSchema(ctx context.Context, cc *pgx.ConnConfig, schema string) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize())
	return err
}

// pgUnavailable tells "the database is not there" (503, the sender retries)
// from a query that is wrong (500).
func pgUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08 connection exceptions, 57P0x shutdown, 53xxx resources.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || strings.HasPrefix(pe.Code, "53")
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.SafeToRetry(err) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "closed pool") || strings.Contains(err.Error(), "conn closed")
}

// redactURL keeps passwords out of errors pgx may echo the URL in.
func redactURL(err error) error {
	return errors.New(strings.Split(err.Error(), "://")[0] + " (details withheld: the URL may hold a password)")
}
