package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// engine implements Store over either driver. TTx is the driver's
// transaction type (River's client is generic over it).
type engine[TTx any] struct {
	client   *river.Client[TTx]
	begin    func(ctx context.Context) (TTx, error)
	commit   func(ctx context.Context, tx TTx) error
	rollback func(ctx context.Context, tx TTx)
	inTx     func(tx TTx) querier
	read     querier // reads outside any transaction
	close    func() error
	// keys seal payloads and connector state (nil: stored in the clear).
	keys *Keyring
	// takeTokenSQL, when set, is the shared token bucket statement (Postgres);
	// seedTokenSQL creates a full bucket the first time, once per name.
	takeTokenSQL, seedTokenSQL string
	seeded                     sync.Map
	// sweep, when set, requeues this agent's orphaned delivery jobs (Postgres).
	sweep     func(ctx context.Context)
	stopSweep context.CancelFunc
	// lockAudit, run first in an audit append, serializes appends across
	// agents (Postgres); SQLite has one writer already.
	lockAudit string
	// unavailable tells connection failures (503) from other errors.
	unavailable func(error) bool

	writer *writer[TTx]
	// writeTimeout bounds a group commit over the network (Postgres). Zero
	// on SQLite: its writes are local and a lock wait ends at busy_timeout,
	// and a context that can end costs its driver a watcher goroutine per
	// statement (modernc's interruptOnDone), on the goroutine every write
	// waits for.
	writeTimeout time.Duration
	// catchUpLog, on SQLite, copies what is left of the write-ahead log into
	// the database on the write connection, between two commits (see
	// checkpointer).
	catchUpLog func()
	// direct, when set (SQLite), runs first attempts from the ledger
	// instead of batch jobs.
	direct *dispatcher
	// fresh holds the rows of first attempts handed to direct, so their
	// attempt does not read them back (nil without direct).
	fresh *freshRows
	// accepting counts Accept calls waiting on the committer: webhooks
	// waiting for their answer, which the dispatcher lets go first when
	// the process is short of CPU (cpu).
	accepting atomic.Int64
	cpu       *cpuPressure
}

// infraAttempts bounds River's own retries of a job, which happen only when
// recording an outcome failed (the store was unreachable): the ledger, not
// River, counts delivery attempts and decides retries.
const infraAttempts = 25

func usec(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromUsec(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func (e *engine[TTx]) wrap(err error) error {
	if err != nil && e.unavailable(err) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Accept goes through the group committer.
func (e *engine[TTx]) Accept(ctx context.Context, in []Incoming) ([]bool, error) {
	if len(in) == 0 {
		return nil, nil
	}
	e.accepting.Add(1)
	defer e.accepting.Add(-1)
	res, err := e.writer.do(ctx, &request[TTx]{accept: in})
	return res, e.wrap(err)
}

func (e *engine[TTx]) Claim(ctx context.Context, id string) (bool, error) {
	var ok bool
	_, err := e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		n, err := e.inTx(tx).exec(ctx, claimSQL,
			string(Pending), usec(time.Now()), id, string(Scheduled))
		ok = n == 1
		return err
	}})
	return ok, e.wrap(err)
}

func (e *engine[TTx]) Record(ctx context.Context, o Outcome) error {
	_, err := e.writer.do(ctx, &request[TTx]{outcome: &o})
	return e.wrap(err)
}

func (e *engine[TTx]) recordOutcome(ctx context.Context, tx TTx, o *Outcome, now time.Time) error {
	if !o.Next.IsZero() {
		res, err := e.client.InsertTx(ctx, tx, DeliveryArgs{DeliveryID: o.ID}, &river.InsertOpts{ScheduledAt: o.Next, MaxAttempts: infraAttempts})
		if err != nil {
			return err
		}
		if _, err := e.inTx(tx).exec(ctx, nextJobSQL, res.Job.ID, usec(o.Next), o.ID); err != nil {
			return err
		}
	}
	return e.updateOutcome(ctx, tx, shapeOf(o), []string{o.ID}, now)
}

// acceptBatch runs inside the committer's transaction for every Accept
// request in the batch at once: one multi-row insert finds the new events.
//
// It returns the rows of the immediate deliveries it left to the dispatcher,
// as Load would read them, to hand over once the transaction commits.
func (e *engine[TTx]) acceptBatch(ctx context.Context, tx TTx, reqs []*request[TTx]) (direct []Loaded, err error) {
	q := e.inTx(tx)
	now := time.Now()
	type ref struct {
		req *request[TTx]
		i   int
	}
	var all []ref
	for _, r := range reqs {
		r.result = make([]bool, len(r.accept))
		for i := range r.accept {
			all = append(all, ref{r, i})
		}
	}
	// One prepared insert per event: a row affected means it is new.
	argLists := make([][]any, len(all))
	for j, a := range all {
		ev := a.req.accept[a.i].Event
		payload := e.keys.Seal([]byte(ev.Payload), eventAD(ev.Source, ev.ID))
		if payload == nil {
			payload = []byte{}
		}
		argLists[j] = []any{ev.Source, ev.ID, ev.Type, ev.Key, ev.Replaces, usec(ev.OccurredAt), usec(now), payload}
	}
	affected, err := q.execEach(ctx, insertEventSQL, argLists)
	if err != nil {
		return nil, err
	}
	// The first occurrence of a new event in the batch owns it.
	var fresh []*Incoming
	for j, a := range all {
		if affected[j] == 1 {
			a.req.result[a.i] = true
			fresh = append(fresh, &a.req.accept[a.i])
		}
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	// Events take effect in order: each event's cancellations apply to what
	// is stored and to the scheduled deliveries of earlier events in this
	// batch, then its own deliveries join (so a replacement is not cancelled
	// by its own event, and a cancellation in the same batch as the booking
	// still cancels its reminder).
	var planned []*NewDelivery
	var plannedBy []*Incoming
	for _, in := range fresh {
		for _, c := range in.Cancels {
			if err := e.cancel(ctx, tx, c, now); err != nil {
				return nil, err
			}
			for _, d := range planned {
				if d.State == Scheduled && d.Route == c.Route && d.Key == c.Key {
					d.State, d.Reason = Cancelled, c.Reason
				}
			}
		}
		for i := range in.Deliveries {
			planned = append(planned, &in.Deliveries[i])
			plannedBy = append(plannedBy, in)
		}
	}
	// Immediate deliveries go to the dispatcher (SQLite) or share batch
	// jobs (Postgres); scheduled ones get a job each (cancellable by id);
	// final ones (skipped, dead, cancelled in this batch) only a ledger row.
	var params []river.InsertManyParams
	var owner []int // planned index -> params index, -1 for none
	var batch []string
	var batchMembers []int
	var directMembers []int
	flush := func() {
		if len(batch) == 0 {
			return
		}
		params = append(params, river.InsertManyParams{Args: BatchArgs{DeliveryIDs: batch}, InsertOpts: &river.InsertOpts{MaxAttempts: infraAttempts}})
		for _, k := range batchMembers {
			owner[k] = len(params) - 1
		}
		batch, batchMembers = nil, nil
	}
	owner = make([]int, len(planned))
	for k, d := range planned {
		owner[k] = -1
		switch {
		case d.State.Final():
		case d.RunAt.After(now):
			params = append(params, river.InsertManyParams{Args: DeliveryArgs{DeliveryID: d.ID, Route: d.Route},
				InsertOpts: &river.InsertOpts{ScheduledAt: d.RunAt, MaxAttempts: infraAttempts}})
			owner[k] = len(params) - 1
		case e.direct != nil:
			directMembers = append(directMembers, k)
		default:
			batch, batchMembers = append(batch, d.ID), append(batchMembers, k)
			if len(batch) == MaxBatch {
				flush()
			}
		}
	}
	flush()
	jobOf := make(map[int]int64, len(planned))
	if len(params) > 0 {
		jobs, err := e.client.InsertManyTx(ctx, tx, params)
		if err != nil {
			return nil, err
		}
		for k, j := range owner {
			if j >= 0 {
				jobOf[k] = jobs[j].Job.ID
			}
		}
	}
	rowsOut := make([]deliveryRow, len(planned))
	for k, d := range planned {
		rowsOut[k] = deliveryRow{plannedBy[k].Event.Source, plannedBy[k].Event.ID, d, jobOf[k]}
	}
	if err := insertDeliveries(ctx, q, rowsOut, now); err != nil {
		return nil, err
	}
	for _, k := range directMembers {
		direct = append(direct, freshRow(&plannedBy[k].Event, planned[k], now))
	}
	return direct, nil
}

// freshRow is a new first attempt's row and event as Load reads them back:
// times at the ledger's microsecond precision, no job, nothing attempted.
func freshRow(ev *connectors.Event, d *NewDelivery, now time.Time) Loaded {
	at := fromUsec(usec(now))
	runAt := at
	if !d.RunAt.IsZero() {
		runAt = fromUsec(usec(d.RunAt))
	}
	l := Loaded{
		Delivery: Delivery{ID: d.ID, Source: ev.Source, EventID: ev.ID, Route: d.Route, Key: d.Key, State: d.State,
			RunAt: runAt, CreatedAt: at, UpdatedAt: at, LastError: d.Reason},
		Event: EventRecord{Event: connectors.Event{Source: ev.Source, ID: ev.ID, Type: ev.Type, Key: ev.Key,
			OccurredAt: fromUsec(usec(ev.OccurredAt)), Replaces: ev.Replaces}, ReceivedAt: at},
	}
	if len(ev.Payload) > 0 {
		l.Event.Payload = ev.Payload
	}
	return l
}

// pendingFirstAttempts lists the dispatcher's outbox: pending deliveries
// with no queue job, oldest first.
func (e *engine[TTx]) pendingFirstAttempts(ctx context.Context, n int) ([]string, error) {
	ids, err := queryAll(ctx, e.read, func(r rows) (string, error) {
		var id string
		return id, r.Scan(&id)
	}, `SELECT id FROM cb_deliveries WHERE state = $1 AND job_id = 0 ORDER BY run_at, id LIMIT $2`, string(Pending), n)
	return ids, e.wrap(err)
}

type deliveryRow struct {
	source, eventID string
	d               *NewDelivery
	jobID           int64
}

// insertDeliveries writes ledger rows. ON CONFLICT keeps a delivery id
// unique: the ledger row that exists wins.
func insertDeliveries(ctx context.Context, q querier, rs []deliveryRow, now time.Time) error {
	argLists := make([][]any, len(rs))
	for i, r := range rs {
		runAt := r.d.RunAt
		if runAt.IsZero() {
			runAt = now
		}
		argLists[i] = []any{r.d.ID, r.source, r.eventID, r.d.Route, r.d.Key, string(r.d.State), usec(runAt), usec(now), r.d.Reason, r.jobID}
	}
	_, err := q.execEach(ctx, insertDeliverySQL, argLists)
	return err
}

// The hot write statements, prepared once at open (see hotStatements).
const (
	insertEventSQL = `INSERT INTO cb_events (source, id, type, key, replaces, occurred_at, received_at, payload)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (source, id) DO NOTHING`
	insertDeliverySQL = `INSERT INTO cb_deliveries (id, source, event_id, route, key, state, run_at, created_at, updated_at, last_error, job_id)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$8,$9,$10) ON CONFLICT (id) DO NOTHING`
	recordOutcomeSQL = `UPDATE cb_deliveries SET state = $1, attempts = attempts + $2, last_error = $3,
		external_id = CASE WHEN $4 = '' THEN external_id ELSE $4 END,
		delivered_at = CASE WHEN delivered_at = 0 THEN $5 ELSE delivered_at END,
		updated_at = $6 WHERE id = $7`
	nextJobSQL = `UPDATE cb_deliveries SET job_id = $1, run_at = $2 WHERE id = $3`
	claimSQL   = `UPDATE cb_deliveries SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4`
)

// hotStatements are prepared when the store opens, before anything holds
// the write connection.
var hotStatements = []string{insertEventSQL, insertDeliverySQL, recordOutcomeSQL, nextJobSQL, claimSQL,
	outcomeGroups[0].sql, outcomeGroups[1].sql, outcomeGroups[2].sql}

// outcomeGroups are the grouped outcome update for 64, 16 and 4 ids: a few
// shapes, each prepared once, cover any number of ids (with single updates
// for the rest).
var outcomeGroups = [3]struct {
	n   int
	sql string
}{{64, recordOutcomesSQL(64)}, {16, recordOutcomesSQL(16)}, {4, recordOutcomesSQL(4)}}

// recordOutcomesSQL is recordOutcomeSQL for n ids at once.
func recordOutcomesSQL(n int) string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(recordOutcomeSQL, "id = $7"))
	b.WriteString("id IN (")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "$%d", 7+i)
	}
	b.WriteByte(')')
	return b.String()
}

// outcomeShape is what an outcome writes besides which delivery it is for.
type outcomeShape struct {
	state          State
	attempted      bool
	errText, extID string
}

func shapeOf(o *Outcome) outcomeShape {
	return outcomeShape{o.State, o.Attempted, o.Error, o.ExternalID}
}

// recordOutcomes writes outcomes that queue nothing next. Under load most
// are alike (succeeded, no error): one statement per group of alike
// outcomes replaces one per delivery on the single writer.
func (e *engine[TTx]) recordOutcomes(ctx context.Context, tx TTx, outs []*Outcome, now time.Time) error {
	groups := map[outcomeShape][]string{}
	var order []outcomeShape
	seen := make(map[string]bool, len(outs))
	for _, o := range outs {
		if seen[o.ID] {
			// The same delivery twice: the later outcome must win, so keep
			// the order and write them one by one.
			for _, o := range outs {
				if err := e.updateOutcome(ctx, tx, shapeOf(o), []string{o.ID}, now); err != nil {
					return err
				}
			}
			return nil
		}
		seen[o.ID] = true
		k := shapeOf(o)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], o.ID)
	}
	for _, k := range order {
		if err := e.updateOutcome(ctx, tx, k, groups[k], now); err != nil {
			return err
		}
	}
	return nil
}

// updateOutcome writes one outcome to the ledger rows ids, in as few
// statements as the prepared shapes allow.
func (e *engine[TTx]) updateOutcome(ctx context.Context, tx TTx, k outcomeShape, ids []string, now time.Time) error {
	attempted, delivered := 0, int64(0)
	if k.attempted {
		attempted = 1
	}
	if k.state == Succeeded {
		delivered = usec(now)
	}
	q := e.inTx(tx)
	for len(ids) > 0 {
		n, stmt := 1, recordOutcomeSQL
		for _, g := range outcomeGroups {
			if len(ids) >= g.n {
				n, stmt = g.n, g.sql
				break
			}
		}
		args := append(make([]any, 0, 6+n), string(k.state), attempted, k.errText, k.extID, delivered, usec(now))
		for _, id := range ids[:n] {
			args = append(args, id)
		}
		if _, err := q.exec(ctx, stmt, args...); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func (e *engine[TTx]) cancel(ctx context.Context, tx TTx, c Cancel, now time.Time) error {
	q := e.inTx(tx)
	jobIDs, err := queryAll(ctx, q, func(r rows) (int64, error) {
		var id int64
		return id, r.Scan(&id)
	}, `UPDATE cb_deliveries SET state = $1, last_error = $2, updated_at = $3
		WHERE route = $4 AND key = $5 AND state = $6 RETURNING job_id`,
		string(Cancelled), c.Reason, usec(now), c.Route, c.Key, string(Scheduled))
	if err != nil {
		return err
	}
	for _, id := range jobIDs {
		if id == 0 {
			continue
		}
		if _, err := e.client.JobCancelTx(ctx, tx, id); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (e *engine[TTx]) Replay(ctx context.Context, f ReplayFilter) ([]string, error) {
	var ids []string
	_, err := e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		q := e.inTx(tx)
		var targets []Delivery
		var err error
		if len(f.IDs) > 0 {
			for _, id := range f.IDs {
				d, err := queryOne(ctx, q, scanDelivery, selectDelivery+` WHERE id = $1`, id)
				if err != nil {
					return fmt.Errorf("delivery %s: %w", id, err)
				}
				if !d.State.Final() {
					return fmt.Errorf("delivery %s is %s: only a finished delivery can be replayed", id, d.State)
				}
				targets = append(targets, d)
			}
		} else {
			state := f.State
			if state == "" {
				state = Dead
			}
			targets, err = queryAll(ctx, q, scanDelivery, selectDelivery+` WHERE route = $1 AND state = $2 AND created_at >= $3 ORDER BY created_at`,
				f.Route, string(state), usec(f.Since))
			if err != nil {
				return err
			}
		}
		now := time.Now()
		ids = ids[:0]
		for _, d := range targets {
			res, err := e.client.InsertTx(ctx, tx, DeliveryArgs{DeliveryID: d.ID, Route: d.Route}, &river.InsertOpts{MaxAttempts: infraAttempts})
			if err != nil {
				return err
			}
			if _, err := q.exec(ctx, `UPDATE cb_deliveries SET state = $1, job_id = $2, run_at = $3, updated_at = $3 WHERE id = $4`,
				string(Pending), res.Job.ID, usec(now), d.ID); err != nil {
				return err
			}
			ids = append(ids, d.ID)
		}
		return nil
	}})
	return ids, e.wrap(err)
}

const selectDelivery = `SELECT id, source, event_id, route, key, state, attempts, run_at, created_at, updated_at, last_error, external_id, delivered_at, receipt_status, job_id FROM cb_deliveries`

func scanDelivery(r rows) (Delivery, error) {
	var d Delivery
	var state string
	var runAt, created, updated, delivered int64
	err := r.Scan(&d.ID, &d.Source, &d.EventID, &d.Route, &d.Key, &state, &d.Attempts, &runAt, &created, &updated, &d.LastError, &d.ExternalID, &delivered, &d.ReceiptStatus, &d.JobID)
	d.State = State(state)
	d.RunAt, d.CreatedAt, d.UpdatedAt, d.DeliveredAt = fromUsec(runAt), fromUsec(created), fromUsec(updated), fromUsec(delivered)
	return d, err
}

func (e *engine[TTx]) UpdateReceipts(ctx context.Context, us []connectors.ReceiptUpdate) error {
	if len(us) == 0 {
		return nil
	}
	_, err := e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		now := usec(time.Now())
		for _, u := range us {
			if _, err := e.inTx(tx).exec(ctx, `UPDATE cb_deliveries SET receipt_status = $1, receipt_rank = $2, updated_at = $3
				WHERE external_id = $4 AND external_id <> '' AND receipt_rank < $2`, u.Status, u.Rank, now, u.ExternalID); err != nil {
				return err
			}
		}
		return nil
	}})
	return e.wrap(err)
}

// State returns the key-value store of one connector.
func (e *engine[TTx]) State(scope string) connectors.State { return kv[TTx]{e, scope} }

type kv[TTx any] struct {
	e     *engine[TTx]
	scope string
}

func (k kv[TTx]) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := queryOne(ctx, k.e.read, func(r rows) ([]byte, error) {
		var b []byte
		return b, r.Scan(&b)
	}, `SELECT value FROM cb_kv WHERE scope = $1 AND key = $2`, k.scope, key)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, k.e.wrap(err)
	}
	plain, err := k.e.keys.Open(v, kvAD(k.scope, key))
	if err != nil {
		return nil, false, fmt.Errorf("connector state %s: %w", k.scope, err)
	}
	return plain, true, nil
}

func (k kv[TTx]) Put(ctx context.Context, key string, value []byte) error {
	value = k.e.keys.Seal(value, kvAD(k.scope, key))
	if value == nil {
		value = []byte{}
	}
	_, err := k.e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		_, err := k.e.inTx(tx).exec(ctx, `INSERT INTO cb_kv (scope, key, value, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			k.scope, key, value, usec(time.Now()))
		return err
	}})
	return k.e.wrap(err)
}

func (k kv[TTx]) Delete(ctx context.Context, key string) error {
	_, err := k.e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		_, err := k.e.inTx(tx).exec(ctx, `DELETE FROM cb_kv WHERE scope = $1 AND key = $2`, k.scope, key)
		return err
	}})
	return k.e.wrap(err)
}

const selectEvent = `SELECT source, id, type, key, replaces, occurred_at, received_at, purged_at, payload FROM cb_events`

// scanEvent reads an event row and opens its payload.
func (e *engine[TTx]) scanEvent(r rows) (EventRecord, error) {
	var ev EventRecord
	var occurred, received, purged int64
	var payload []byte
	if err := r.Scan(&ev.Source, &ev.ID, &ev.Type, &ev.Key, &ev.Replaces, &occurred, &received, &purged, &payload); err != nil {
		return ev, err
	}
	ev.OccurredAt, ev.ReceivedAt, ev.PurgedAt = fromUsec(occurred), fromUsec(received), fromUsec(purged)
	plain, err := e.keys.Open(payload, eventAD(ev.Source, ev.ID))
	if err != nil {
		return ev, fmt.Errorf("event %s/%s: %w", ev.Source, ev.ID, err)
	}
	if len(plain) > 0 {
		ev.Payload = plain
	}
	return ev, nil
}

func (e *engine[TTx]) Event(ctx context.Context, source, id string) (EventRecord, error) {
	ev, err := queryOne(ctx, e.read, e.scanEvent, selectEvent+` WHERE source = $1 AND id = $2`, source, id)
	return ev, e.wrap(err)
}

func (e *engine[TTx]) Events(ctx context.Context, f EventFilter) ([]EventRecord, error) {
	where, args := filters{}.
		add(f.Source != "", "source = ", f.Source).
		add(f.Type != "", "type = ", f.Type).
		add(!f.Since.IsZero(), "received_at >= ", usec(f.Since)).
		build()
	evs, err := queryAll(ctx, e.read, e.scanEvent, selectEvent+where+` ORDER BY received_at DESC LIMIT `+limit(f.Limit), args...)
	return evs, e.wrap(err)
}

func (e *engine[TTx]) Delivery(ctx context.Context, id string) (Delivery, error) {
	d, err := queryOne(ctx, e.read, scanDelivery, selectDelivery+` WHERE id = $1`, id)
	return d, e.wrap(err)
}

func (e *engine[TTx]) Load(ctx context.Context, ids []string) ([]Loaded, error) {
	var held []Loaded
	if e.fresh != nil {
		held, ids = e.fresh.take(ids)
	}
	if len(ids) == 0 {
		return held, nil
	}
	var sb strings.Builder
	args := make([]any, len(ids))
	for i, id := range ids {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "$%d", i+1)
		args[i] = id
	}
	out, err := queryAll(ctx, e.read, func(r rows) (Loaded, error) {
		var l Loaded
		var state string
		var runAt, created, updated, delivered, occurred, received, purged int64
		var payload []byte
		d, ev := &l.Delivery, &l.Event
		if err := r.Scan(&d.ID, &d.Source, &d.EventID, &d.Route, &d.Key, &state, &d.Attempts, &runAt, &created, &updated, &d.LastError,
			&d.ExternalID, &delivered, &d.ReceiptStatus, &d.JobID,
			&ev.Type, &ev.Key, &ev.Replaces, &occurred, &received, &purged, &payload); err != nil {
			return l, err
		}
		d.State = State(state)
		d.RunAt, d.CreatedAt, d.UpdatedAt, d.DeliveredAt = fromUsec(runAt), fromUsec(created), fromUsec(updated), fromUsec(delivered)
		ev.Source, ev.ID = d.Source, d.EventID
		ev.OccurredAt, ev.ReceivedAt, ev.PurgedAt = fromUsec(occurred), fromUsec(received), fromUsec(purged)
		plain, err := e.keys.Open(payload, eventAD(ev.Source, ev.ID))
		if err != nil {
			return l, fmt.Errorf("event %s/%s: %w", ev.Source, ev.ID, err)
		}
		if len(plain) > 0 {
			ev.Payload = plain
		}
		return l, nil
	}, `SELECT d.id, d.source, d.event_id, d.route, d.key, d.state, d.attempts, d.run_at, d.created_at, d.updated_at, d.last_error,
		d.external_id, d.delivered_at, d.receipt_status, d.job_id,
		e.type, e.key, e.replaces, e.occurred_at, e.received_at, e.purged_at, e.payload
		FROM cb_deliveries d JOIN cb_events e ON e.source = d.source AND e.id = d.event_id WHERE d.id IN (`+sb.String()+`)`, args...)
	if err != nil {
		return nil, e.wrap(err) // the held rows are still pending in the ledger
	}
	return append(held, out...), nil
}

func (e *engine[TTx]) Succeeded(ctx context.Context, route, key string) (Delivery, error) {
	d, err := queryOne(ctx, e.read, scanDelivery, selectDelivery+` WHERE route = $1 AND key = $2 AND state = $3 ORDER BY delivered_at DESC LIMIT 1`,
		route, key, string(Succeeded))
	return d, e.wrap(err)
}

func (e *engine[TTx]) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	where, args := filters{}.
		add(f.Route != "", "route = ", f.Route).
		add(f.State != "", "state = ", string(f.State)).
		add(f.Source != "", "source = ", f.Source).
		add(f.EventID != "", "event_id = ", f.EventID).
		add(!f.Since.IsZero(), "created_at >= ", usec(f.Since)).
		build()
	ds, err := queryAll(ctx, e.read, scanDelivery, selectDelivery+where+` ORDER BY created_at DESC, id LIMIT `+limit(f.Limit), args...)
	return ds, e.wrap(err)
}

func (e *engine[TTx]) Watermark(ctx context.Context, name string) (time.Time, error) {
	v, err := queryOne(ctx, e.read, scanInt64, `SELECT at FROM cb_watermarks WHERE name = $1`, name)
	if errors.Is(err, ErrNotFound) {
		return time.Time{}, nil
	}
	return fromUsec(v), e.wrap(err)
}

func (e *engine[TTx]) FinishRun(ctx context.Context, r Run) error {
	_, err := e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		q := e.inTx(tx)
		if _, err := q.exec(ctx, `INSERT INTO cb_reconcile_runs (id, name, cause, started_at, finished_at, listed, known, recovered, error, watermark_before, watermark_after)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`, r.ID, r.Name, r.Trigger, usec(r.StartedAt), usec(r.FinishedAt),
			r.Listed, r.Known, r.Recovered, r.Error, usec(r.WatermarkBefore), usec(r.WatermarkAfter)); err != nil {
			return err
		}
		if r.Error != "" || r.WatermarkAfter.IsZero() {
			return nil // a failed run keeps the old watermark
		}
		_, err := q.exec(ctx, `INSERT INTO cb_watermarks (name, at) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET at = CASE WHEN excluded.at > cb_watermarks.at THEN excluded.at ELSE cb_watermarks.at END`,
			r.Name, usec(r.WatermarkAfter))
		return err
	}})
	return e.wrap(err)
}

const selectRun = `SELECT id, name, cause, started_at, finished_at, listed, known, recovered, error, watermark_before, watermark_after FROM cb_reconcile_runs`

func scanRun(r rows) (Run, error) {
	var run Run
	var started, finished, before, after int64
	err := r.Scan(&run.ID, &run.Name, &run.Trigger, &started, &finished, &run.Listed, &run.Known, &run.Recovered, &run.Error, &before, &after)
	run.StartedAt, run.FinishedAt, run.WatermarkBefore, run.WatermarkAfter = fromUsec(started), fromUsec(finished), fromUsec(before), fromUsec(after)
	return run, err
}

func (e *engine[TTx]) Runs(ctx context.Context, name string, n int) ([]Run, error) {
	where, args := filters{}.add(name != "", "name = ", name).build()
	runs, err := queryAll(ctx, e.read, scanRun, selectRun+where+` ORDER BY started_at DESC LIMIT `+limit(n), args...)
	return runs, e.wrap(err)
}

// auditHash links an entry to the one before it.
func auditHash(prev string, a AuditEntry) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n%d\n%s\n%s\n%s\n%s", prev, a.Seq, usec(a.At), a.Actor, a.Action, a.Target, a.Outcome)
	return hex.EncodeToString(h.Sum(nil))
}

func (e *engine[TTx]) Audit(ctx context.Context, a AuditEntry) error {
	_, err := e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		q := e.inTx(tx)
		if e.lockAudit != "" {
			if _, err := q.exec(ctx, e.lockAudit); err != nil {
				return err
			}
		}
		type last struct {
			seq  int64
			hash string
		}
		prev, err := queryOne(ctx, q, func(r rows) (last, error) {
			var l last
			return l, r.Scan(&l.seq, &l.hash)
		}, `SELECT seq, hash FROM cb_audit ORDER BY seq DESC LIMIT 1`)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		entry := a
		entry.Seq, entry.At = prev.seq+1, time.Now().UTC().Truncate(time.Microsecond)
		entry.Hash = auditHash(prev.hash, entry)
		_, err = q.exec(ctx, `INSERT INTO cb_audit (seq, at, actor, action, target, outcome, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
			entry.Seq, usec(entry.At), entry.Actor, entry.Action, entry.Target, entry.Outcome, prev.hash, entry.Hash)
		return err
	}})
	return e.wrap(err)
}

type auditRow struct {
	AuditEntry
	prev string
}

func scanAudit(r rows) (auditRow, error) {
	var a auditRow
	var at int64
	err := r.Scan(&a.Seq, &at, &a.Actor, &a.Action, &a.Target, &a.Outcome, &a.prev, &a.Hash)
	a.At = fromUsec(at)
	return a, err
}

const selectAudit = `SELECT seq, at, actor, action, target, outcome, prev_hash, hash FROM cb_audit`

func (e *engine[TTx]) AuditLog(ctx context.Context, n int) ([]AuditEntry, error) {
	rs, err := queryAll(ctx, e.read, scanAudit, selectAudit+` ORDER BY seq DESC LIMIT `+limit(n))
	out := make([]AuditEntry, len(rs))
	for i, r := range rs {
		out[i] = r.AuditEntry
	}
	return out, e.wrap(err)
}

// VerifyAudit walks the chain in order. Each entry must follow the previous
// one (seq without gaps, prev_hash equal to the previous hash) and its hash
// must match its contents, so editing, deleting or inserting a row shows.
func (e *engine[TTx]) VerifyAudit(ctx context.Context) (int, error) {
	rs, err := queryAll(ctx, e.read, scanAudit, selectAudit+` ORDER BY seq`)
	if err != nil {
		return 0, e.wrap(err)
	}
	prev, seq := "", int64(0)
	for _, r := range rs {
		switch {
		case r.Seq != seq+1:
			return 0, &AuditBroken{Seq: r.Seq, Reason: fmt.Sprintf("expected entry %d next: an entry was removed or inserted", seq+1)}
		case r.prev != prev:
			return 0, &AuditBroken{Seq: r.Seq, Reason: "it does not link to the entry before it"}
		case auditHash(prev, r.AuditEntry) != r.Hash:
			return 0, &AuditBroken{Seq: r.Seq, Reason: "its contents do not match its hash: it was edited"}
		}
		prev, seq = r.Hash, r.Seq
	}
	return len(rs), nil
}

func (e *engine[TTx]) Purge(ctx context.Context, f PurgeFilter) (int, error) {
	if (f.Subject == "") == f.Before.IsZero() {
		return 0, errors.New("purge: give a subject or a time, not both")
	}
	var n int
	_, err := e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
		q := e.inTx(tx)
		now := usec(time.Now())
		live := []any{string(Scheduled), string(Pending)}
		if e.fresh != nil {
			// Erasure cancels pending first attempts and blanks payloads: a
			// held row could be either. (Rows committed after this one are
			// put after it, by this same goroutine.)
			e.fresh.drop()
		}
		if f.Subject != "" {
			// An erasure request also stops what was still to be sent about the subject.
			jobIDs, err := queryAll(ctx, q, scanInt64, `UPDATE cb_deliveries SET state = $1, last_error = $2, updated_at = $3
				WHERE state IN ($4, $5) AND (key = $6 OR EXISTS (SELECT 1 FROM cb_events ev WHERE ev.source = cb_deliveries.source AND ev.id = cb_deliveries.event_id AND ev.key = $6))
				RETURNING job_id`, string(Cancelled), "purged on request", now, live[0], live[1], f.Subject)
			if err != nil {
				return err
			}
			for _, id := range jobIDs {
				if id == 0 {
					continue
				}
				if _, err := e.client.JobCancelTx(ctx, tx, id); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
					return err
				}
			}
			c, err := q.exec(ctx, `UPDATE cb_events SET payload = $1, purged_at = $2
				WHERE purged_at = 0 AND (key = $3 OR EXISTS (SELECT 1 FROM cb_deliveries d WHERE d.source = cb_events.source AND d.event_id = cb_events.id AND d.key = $3))`,
				[]byte{}, now, f.Subject)
			n = int(c)
			return err
		}
		c, err := q.exec(ctx, `UPDATE cb_events SET payload = $1, purged_at = $2
			WHERE purged_at = 0 AND received_at < $3
			AND NOT EXISTS (SELECT 1 FROM cb_deliveries d WHERE d.source = cb_events.source AND d.event_id = cb_events.id AND d.state IN ($4, $5))`,
			[]byte{}, now, usec(f.Before), live[0], live[1])
		n = int(c)
		return err
	}})
	return n, e.wrap(err)
}

// Rekey walks events and connector state in batches (keyset pages, one
// transaction each) and re-seals whatever is not under the newest key.
func (e *engine[TTx]) Rekey(ctx context.Context) (int, error) {
	total := 0
	type row struct {
		a, b    string
		payload []byte
	}
	scan := func(r rows) (row, error) {
		var x row
		return x, r.Scan(&x.a, &x.b, &x.payload)
	}
	for _, t := range []struct {
		sel, upd string
		ad       func(a, b string) []byte
	}{
		{`SELECT source, id, payload FROM cb_events WHERE (source > $1 OR (source = $1 AND id > $2)) ORDER BY source, id LIMIT 500`,
			`UPDATE cb_events SET payload = $1 WHERE source = $2 AND id = $3`, eventAD},
		{`SELECT scope, key, value FROM cb_kv WHERE (scope > $1 OR (scope = $1 AND key > $2)) ORDER BY scope, key LIMIT 500`,
			`UPDATE cb_kv SET value = $1 WHERE scope = $2 AND key = $3`, kvAD},
	} {
		lastA, lastB := "", ""
		for {
			batch, err := queryAll(ctx, e.read, scan, t.sel, lastA, lastB)
			if err != nil {
				return total, e.wrap(err)
			}
			if len(batch) == 0 {
				break
			}
			lastA, lastB = batch[len(batch)-1].a, batch[len(batch)-1].b
			var stale []row
			for _, r := range batch {
				if len(r.payload) > 0 && !e.keys.Current(r.payload) {
					plain, err := e.keys.Open(r.payload, t.ad(r.a, r.b))
					if err != nil {
						return total, err
					}
					r.payload = e.keys.Seal(plain, t.ad(r.a, r.b))
					stale = append(stale, r)
				}
			}
			if len(stale) == 0 {
				continue
			}
			_, err = e.writer.do(ctx, &request[TTx]{fn: func(ctx context.Context, tx TTx) error {
				for _, r := range stale {
					if _, err := e.inTx(tx).exec(ctx, t.upd, r.payload, r.a, r.b); err != nil {
						return err
					}
				}
				return nil
			}})
			if err != nil {
				return total, e.wrap(err)
			}
			total += len(stale)
		}
	}
	return total, nil
}

func (e *engine[TTx]) SharesLimits() bool { return e.takeTokenSQL != "" }

// TakeToken runs outside the group committer: it is one statement that
// must not wait behind ingest batches, and it uses the database's clock so
// agents with skewed clocks still share one rate.
func (e *engine[TTx]) TakeToken(ctx context.Context, name string, perSecond float64, burst int) (time.Duration, error) {
	if e.takeTokenSQL == "" {
		return 0, ErrNotShared
	}
	if _, ok := e.seeded.Load(name); !ok {
		if _, err := e.read.exec(ctx, e.seedTokenSQL, name, float64(burst)); err != nil {
			return 0, e.wrap(err)
		}
		e.seeded.Store(name, true)
	}
	v, err := queryOne(ctx, e.read, func(r rows) (float64, error) {
		var left float64
		return left, r.Scan(&left)
	}, e.takeTokenSQL, name, perSecond, float64(burst))
	if err != nil {
		return 0, e.wrap(err)
	}
	// v >= 0: a token was taken. v < 0: the bucket holds 1+v tokens, so a
	// whole one arrives in -v/rate seconds.
	if v >= 0 {
		return 0, nil
	}
	return time.Duration(-v / perSecond * float64(time.Second)), nil
}

func (e *engine[TTx]) Stats(ctx context.Context) (Stats, error) {
	st := Stats{ByState: map[State]int{}}
	type row struct {
		state string
		n     int
	}
	rs, err := queryAll(ctx, e.read, func(r rows) (row, error) {
		var x row
		return x, r.Scan(&x.state, &x.n)
	}, `SELECT state, COUNT(*) FROM cb_deliveries GROUP BY state`)
	if err != nil {
		return st, e.wrap(err)
	}
	for _, r := range rs {
		st.ByState[State(r.state)] = r.n
	}
	now := time.Now()
	oldest, err := queryOne(ctx, e.read, func(r rows) (int64, error) {
		var v int64
		return v, r.Scan(&v)
	}, `SELECT COALESCE(MIN(run_at), 0) FROM cb_deliveries WHERE state = $1 AND run_at <= $2`,
		string(Pending), usec(now))
	if err != nil {
		return st, e.wrap(err)
	}
	if oldest > 0 {
		st.OldestPending = now.Sub(fromUsec(oldest))
	}
	return st, nil
}

func (e *engine[TTx]) Ping(ctx context.Context) error {
	_, err := queryOne(ctx, e.read, func(r rows) (int, error) {
		var v int
		return v, r.Scan(&v)
	}, `SELECT 1`)
	return e.wrap(err)
}

func (e *engine[TTx]) Start(ctx context.Context) error {
	if e.client == nil {
		return nil
	}
	if e.sweep != nil {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		e.stopSweep = cancel
		go e.sweep(sctx)
	}
	if err := e.client.Start(ctx); err != nil {
		return err
	}
	if e.direct != nil {
		e.cpu.start()
		e.direct.start()
	}
	return nil
}

func (e *engine[TTx]) Stop(ctx context.Context) error {
	if e.client == nil {
		return nil
	}
	if e.stopSweep != nil {
		e.stopSweep()
	}
	// First attempts first: their outcomes may queue retries.
	var err error
	if e.direct != nil {
		err = e.direct.stop(ctx)
		e.cpu.stop()
	}
	return errors.Join(err, e.client.Stop(ctx))
}

func (e *engine[TTx]) Close() error {
	e.writer.stop()
	return e.close()
}

// filters builds a WHERE clause with numbered placeholders.
type filters struct {
	conds []string
	args  []any
}

func (f filters) add(on bool, cond string, arg any) filters {
	if on {
		f.args = append(f.args, arg)
		f.conds = append(f.conds, fmt.Sprintf("%s$%d", cond, len(f.args)))
	}
	return f
}

func (f filters) build() (string, []any) {
	if len(f.conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(f.conds, " AND "), f.args
}

func limit(n int) string {
	if n <= 0 || n > 10000 {
		n = 100
	}
	return fmt.Sprint(n)
}
