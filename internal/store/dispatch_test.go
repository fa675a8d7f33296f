package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// ledgerDeliver is a store.Deliver that records a success for each delivery
// it runs (so the row leaves the outbox, as the pipeline's would) and counts
// runs and the job each ran under.
type ledgerDeliver struct {
	s    store.Store
	mu   sync.Mutex
	runs map[string][]int64
	fail map[string]int // fail this many runs of the id before succeeding
	wait time.Duration
}

func newLedgerDeliver() *ledgerDeliver {
	return &ledgerDeliver{runs: map[string][]int64{}, fail: map[string]int{}}
}

func (l *ledgerDeliver) deliver(ctx context.Context, job int64, ids []string) error {
	var errs []error
	for _, id := range ids {
		time.Sleep(l.wait)
		l.mu.Lock()
		l.runs[id] = append(l.runs[id], job)
		failing := l.fail[id] > 0
		if failing {
			l.fail[id]--
		}
		l.mu.Unlock()
		if failing {
			errs = append(errs, fmt.Errorf("%s: store away", id))
			continue
		}
		if err := l.s.Record(ctx, store.Outcome{ID: id, State: store.Succeeded, Attempted: true}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *ledgerDeliver) count(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs[id])
}

func (l *ledgerDeliver) total() (runs, ids int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.runs {
		runs += len(r)
	}
	return runs, len(l.runs)
}

func acceptN(t *testing.T, s store.Store, prefix string, n int) []string {
	t.Helper()
	var in []store.Incoming
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s%d", prefix, i)
		ids = append(ids, "d-"+id)
		in = append(in, store.Incoming{
			Event:      eventFor(id),
			Deliveries: []store.NewDelivery{{ID: "d-" + id, Route: "r", State: store.Pending}},
		})
	}
	_, err := s.Accept(context.Background(), in)
	require.NoError(t, err)
	return ids
}

func openSQLite(t *testing.T, path string, d *ledgerDeliver) store.Store {
	t.Helper()
	p := store.Params{Path: path}
	if d != nil {
		p.Deliver = d.deliver
	}
	s, err := store.Open(context.Background(), p)
	require.NoError(t, err)
	if d != nil {
		d.s = s
	}
	return s
}

func riverJobs(t *testing.T, path, kind string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)")
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM river_job WHERE kind = ?`, kind).Scan(&n))
	return n
}

// On SQLite, a first attempt runs straight from the ledger: no queue job.
func TestSQLiteFirstAttemptsRunWithoutAQueueJob(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	d := newLedgerDeliver()
	s := openSQLite(t, path, d)
	defer s.Close()
	require.NoError(t, s.Start(context.Background()))
	defer s.Stop(context.Background())
	ids := acceptN(t, s, "e", 30)
	// A run is counted before its outcome is recorded: wait for the ledger.
	require.Eventually(t, func() bool {
		ds, err := s.Deliveries(context.Background(), store.DeliveryFilter{State: store.Succeeded})
		return err == nil && len(ds) == 30
	}, 10*time.Second, 10*time.Millisecond)
	for _, id := range ids {
		require.Equal(t, []int64{0}, d.runs[id], id)
		got, err := s.Delivery(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, store.Succeeded, got.State)
		require.Zero(t, got.JobID)
	}
	require.Zero(t, riverJobs(t, path, "cb_batch"))
	require.Zero(t, riverJobs(t, path, "cb_delivery"))
}

// Accepted but not attempted when the process died: the next start finds
// the rows in the ledger and runs each once.
func TestSQLiteFirstAttemptsSurviveACrash(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	first := newLedgerDeliver()
	s := openSQLite(t, path, first)
	ids := acceptN(t, s, "e", 40) // handed to a dispatcher that never starts
	require.NoError(t, s.Close())
	runs, _ := first.total()
	require.Zero(t, runs)

	d := newLedgerDeliver()
	s = openSQLite(t, path, d)
	defer s.Close()
	require.NoError(t, s.Start(context.Background()))
	defer s.Stop(context.Background())
	require.Eventually(t, func() bool { _, n := d.total(); return n == 40 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	for _, id := range ids {
		require.Equal(t, 1, d.count(id), id)
	}
}

// More ids than the in-memory queue holds: the rest wait in the ledger and
// every delivery still runs exactly once.
func TestSQLiteDispatchOverflowWaitsInTheLedger(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	d := newLedgerDeliver()
	d.wait = time.Millisecond
	s := openSQLite(t, path, d)
	defer s.Close()
	store.SetDispatchQueue(s, 7)
	require.NoError(t, s.Start(context.Background()))
	defer s.Stop(context.Background())
	var ids []string
	for i := range 5 {
		ids = append(ids, acceptN(t, s, fmt.Sprintf("b%d-", i), 60)...)
	}
	require.Eventually(t, func() bool { _, n := d.total(); return n == len(ids) }, 20*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	runs, n := d.total()
	require.Equal(t, len(ids), n)
	require.Equal(t, len(ids), runs, "each delivery runs once")
}

// An attempt whose outcome could not be written runs again from the ledger.
func TestSQLiteFailedFirstAttemptRunsAgain(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	d := newLedgerDeliver()
	d.fail["d-e1"] = 2
	s := openSQLite(t, path, d)
	defer s.Close()
	require.NoError(t, s.Start(context.Background()))
	defer s.Stop(context.Background())
	acceptN(t, s, "e", 3)
	require.Eventually(t, func() bool {
		got, err := s.Delivery(context.Background(), "d-e1")
		return err == nil && got.State == store.Succeeded
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 1, d.count("d-e0"))
	require.Equal(t, 3, d.count("d-e1"))
}

func eventFor(id string) connectors.Event {
	return connectors.Event{Source: "src", ID: id, Type: "t", OccurredAt: time.Now(), Payload: json.RawMessage(`{"n":1}`)}
}

// A first attempt's rows are held from the commit until its attempt loads
// them, and what Load hands out from memory is exactly what the ledger
// holds: sealed payload opened, times at the ledger's precision, an empty
// payload, a scheduled delivery whose time passed before the commit.
func TestSQLiteFirstAttemptRowsAreHeldUntilLoaded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := store.Open(ctx, store.Params{Path: filepath.Join(t.TempDir(), "cb.db"),
		EncryptionKeys: []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
		Deliver:        newLedgerDeliver().deliver}) // not started: nothing runs
	require.NoError(t, err)
	defer s.Close()

	due := eventFor("due")
	due.Key, due.Replaces = "b1", "b0"
	empty := eventFor("empty")
	empty.Payload = nil
	_, err = s.Accept(ctx, []store.Incoming{
		{Event: eventFor("plain"), Deliveries: []store.NewDelivery{{ID: "d-plain", Route: "r", State: store.Pending}}},
		{Event: empty, Deliveries: []store.NewDelivery{{ID: "d-empty", Route: "r", Key: "k", State: store.Pending}}},
		{Event: due, Deliveries: []store.NewDelivery{{ID: "d-due", Route: "r", Key: "b1", State: store.Scheduled, RunAt: time.Now().Add(-time.Millisecond)}}},
		{Event: eventFor("later"), Deliveries: []store.NewDelivery{{ID: "d-later", Route: "r", State: store.Scheduled, RunAt: time.Now().Add(time.Hour)}}},
		{Event: eventFor("skip"), Deliveries: []store.NewDelivery{{ID: "d-skip", Route: "r", State: store.Skipped, Reason: "when: false"}}},
	})
	require.NoError(t, err)
	require.Equal(t, 3, store.HeldRows(s), "only first attempts handed to the dispatcher are held")

	ids := []string{"d-plain", "d-empty", "d-due"}
	held, err := s.Load(ctx, ids)
	require.NoError(t, err)
	require.Zero(t, store.HeldRows(s), "each is handed out once")
	read, err := s.Load(ctx, ids) // now from the ledger
	require.NoError(t, err)
	byID := func(ls []store.Loaded) map[string]store.Loaded {
		m := map[string]store.Loaded{}
		for _, l := range ls {
			m[l.Delivery.ID] = l
		}
		return m
	}
	require.Len(t, held, 3)
	require.Equal(t, byID(read), byID(held))
}

// An erasure cancels pending first attempts: rows held from before it are
// dropped, so the attempt reads the cancelled row and sends nothing.
func TestSQLitePurgeDropsHeldRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := store.Open(ctx, store.Params{Path: filepath.Join(t.TempDir(), "cb.db"), Deliver: newLedgerDeliver().deliver})
	require.NoError(t, err)
	defer s.Close()
	ev := eventFor("e1")
	ev.Key = "patient-1"
	_, err = s.Accept(ctx, []store.Incoming{{Event: ev, Deliveries: []store.NewDelivery{{ID: "d-e1", Route: "r", Key: "patient-1", State: store.Pending}}}})
	require.NoError(t, err)
	require.Equal(t, 1, store.HeldRows(s))

	_, err = s.Purge(ctx, store.PurgeFilter{Subject: "patient-1"})
	require.NoError(t, err)
	require.Zero(t, store.HeldRows(s))
	ls, err := s.Load(ctx, []string{"d-e1"})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	require.Equal(t, store.Cancelled, ls[0].Delivery.State)
	require.Empty(t, ls[0].Event.Payload)
}
