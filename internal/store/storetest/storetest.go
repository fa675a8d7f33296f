// Package storetest is the contract every store driver passes: the same
// suite runs against SQLite and PostgreSQL.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Opener opens a fresh, empty store for one test with p's worker settings.
type Opener func(t *testing.T, p store.Params) store.Store

// recorder is a store.Deliver that records which deliveries ran.
type recorder struct {
	mu  sync.Mutex
	ran map[string]int
}

func newRecorder() *recorder { return &recorder{ran: map[string]int{}} }

func (r *recorder) deliver(_ context.Context, _ int64, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		r.ran[id]++
	}
	return nil
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ran[id]
}

func event(id, typ, key string) connectors.Event {
	return connectors.Event{Source: "src", ID: id, Type: typ, Key: key, OccurredAt: time.Now(), Payload: json.RawMessage(`{"n":1}`)}
}

func delivery(id, route, key string, state store.State, runAt time.Time) store.NewDelivery {
	return store.NewDelivery{ID: id, Route: route, Key: key, State: state, RunAt: runAt, MaxAttempts: 3}
}

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	t.Run("AcceptDedupes", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		in := store.Incoming{Event: event("e1", "t", "k"), Deliveries: []store.NewDelivery{delivery("d1", "r", "k", store.Pending, time.Time{})}}
		fresh, err := s.Accept(ctx, []store.Incoming{in})
		require.NoError(t, err)
		require.Equal(t, []bool{true}, fresh)
		fresh, err = s.Accept(ctx, []store.Incoming{in, in})
		require.NoError(t, err)
		require.Equal(t, []bool{false, false}, fresh)
		ds, err := s.Deliveries(ctx, store.DeliveryFilter{})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		require.Equal(t, store.Pending, ds[0].State)
		require.NotZero(t, ds[0].JobID)
		ev, err := s.Event(ctx, "src", "e1")
		require.NoError(t, err)
		require.JSONEq(t, `{"n":1}`, string(ev.Payload))
		_, err = s.Event(ctx, "src", "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("SameEventTwiceInOneBatchIsNewOnce", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		in := store.Incoming{Event: event("e1", "t", "k"), Deliveries: []store.NewDelivery{delivery("d1", "r", "k", store.Pending, time.Time{})}}
		fresh, err := s.Accept(context.Background(), []store.Incoming{in, in})
		require.NoError(t, err)
		require.Equal(t, []bool{true, false}, fresh)
	})

	t.Run("ConcurrentAcceptsGroupCommit", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		var wg sync.WaitGroup
		var newCount atomic.Int64
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Every event is sent twice, concurrently: exactly one is new.
				id := fmt.Sprintf("e%d", i/2)
				in := store.Incoming{Event: event(id, "t", ""), Deliveries: []store.NewDelivery{delivery("d"+id, "r", "", store.Pending, time.Time{})}}
				fresh, err := s.Accept(context.Background(), []store.Incoming{in})
				require.NoError(t, err)
				if fresh[0] {
					newCount.Add(1)
				}
			}()
		}
		wg.Wait()
		require.EqualValues(t, 100, newCount.Load())
		ds, err := s.Deliveries(context.Background(), store.DeliveryFilter{Limit: 1000})
		require.NoError(t, err)
		require.Len(t, ds, 100)
	})

	t.Run("FinalDeliveriesAreNotQueued", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		skipped := delivery("d1", "r", "", store.Skipped, time.Time{})
		skipped.Reason = "when: false"
		_, err := s.Accept(context.Background(), []store.Incoming{{Event: event("e1", "t", ""), Deliveries: []store.NewDelivery{skipped}}})
		require.NoError(t, err)
		d, err := s.Delivery(context.Background(), "d1")
		require.NoError(t, err)
		require.Equal(t, store.Skipped, d.State)
		require.Equal(t, "when: false", d.LastError)
		require.Zero(t, d.JobID)
	})

	t.Run("ConcurrentOutcomesEachLandOnTheirRow", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		const n = 203 // more than the largest group, not a multiple of any
		var in []store.Incoming
		for i := range n {
			id := fmt.Sprintf("e%d", i)
			in = append(in, store.Incoming{Event: event(id, "t", ""), Deliveries: []store.NewDelivery{delivery("d"+id, "r", "", store.Pending, time.Time{})}})
		}
		_, err := s.Accept(ctx, in)
		require.NoError(t, err)
		want := func(i int) store.Outcome {
			id := fmt.Sprintf("de%d", i)
			switch i % 4 {
			case 0, 1:
				return store.Outcome{ID: id, State: store.Succeeded, Attempted: true}
			case 2:
				return store.Outcome{ID: id, State: store.Dead, Error: fmt.Sprintf("http %d", 400+i%3), Attempted: true}
			default:
				return store.Outcome{ID: id, State: store.Succeeded, ExternalID: "x-" + id, Attempted: true}
			}
		}
		// Concurrent callers share commits: alike outcomes are written
		// together, and each must still land on its own row.
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				require.NoError(t, s.Record(ctx, want(i)))
			}()
		}
		wg.Wait()
		for i := range n {
			w := want(i)
			d, err := s.Delivery(ctx, w.ID)
			require.NoError(t, err)
			require.Equal(t, w.State, d.State, w.ID)
			require.Equal(t, w.Error, d.LastError, w.ID)
			require.Equal(t, w.ExternalID, d.ExternalID, w.ID)
			require.Equal(t, 1, d.Attempts, w.ID)
			require.Equal(t, w.State == store.Succeeded, !d.DeliveredAt.IsZero(), w.ID)
		}
	})

	t.Run("WorkerRunsAndRecords", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		s := open(t, store.Params{Deliver: rec.deliver})
		ctx := context.Background()
		require.NoError(t, s.Start(ctx))
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		_, err := s.Accept(ctx, []store.Incoming{{Event: event("e1", "t", ""), Deliveries: []store.NewDelivery{delivery("d1", "r", "", store.Pending, time.Time{})}}})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return rec.count("d1") == 1 }, 10*time.Second, 10*time.Millisecond)
		require.NoError(t, s.Record(ctx, store.Outcome{ID: "d1", State: store.Succeeded, ExternalID: "x-1", Attempted: true}))
		d, err := s.Delivery(ctx, "d1")
		require.NoError(t, err)
		require.Equal(t, store.Succeeded, d.State)
		require.Equal(t, "x-1", d.ExternalID)
		require.Equal(t, 1, d.Attempts)
		require.False(t, d.DeliveredAt.IsZero())
	})

	t.Run("ScheduledCancelAndReplace", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		s := open(t, store.Params{Deliver: rec.deliver})
		ctx := context.Background()
		require.NoError(t, s.Start(ctx))
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		soon := time.Now().Add(1500 * time.Millisecond)
		_, err := s.Accept(ctx, []store.Incoming{
			{Event: event("c1", "created", "b1"), Deliveries: []store.NewDelivery{delivery("r1", "reminder", "b1", store.Scheduled, soon)}},
			{Event: event("c2", "created", "b2"), Deliveries: []store.NewDelivery{delivery("r2", "reminder", "b2", store.Scheduled, soon)}},
			{Event: event("c3", "created", "b3"), Deliveries: []store.NewDelivery{delivery("r3", "reminder", "b3", store.Scheduled, soon)}},
		})
		require.NoError(t, err)
		// b1 is cancelled; b2 is replaced by a newer event for the same key.
		_, err = s.Accept(ctx, []store.Incoming{
			{Event: event("x1", "cancelled", "b1"), Cancels: []store.Cancel{{Route: "reminder", Key: "b1", Reason: "cancelled by x1"}}},
			{Event: event("c2b", "rescheduled", "b2"),
				Cancels:    []store.Cancel{{Route: "reminder", Key: "b2", Reason: "replaced"}},
				Deliveries: []store.NewDelivery{delivery("r2b", "reminder", "b2", store.Scheduled, soon)}},
		})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return rec.count("r3") == 1 && rec.count("r2b") == 1 }, 10*time.Second, 20*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		require.Zero(t, rec.count("r1"), "a cancelled reminder never runs")
		require.Zero(t, rec.count("r2"), "a replaced reminder never runs")
		for id, want := range map[string]store.State{"r1": store.Cancelled, "r2": store.Cancelled, "r2b": store.Scheduled} {
			d, err := s.Delivery(ctx, id)
			require.NoError(t, err)
			require.Equal(t, want, d.State, id)
		}
		d, _ := s.Delivery(ctx, "r1")
		require.Equal(t, "cancelled by x1", d.LastError)
		ok, err := s.Claim(ctx, "r2b")
		require.NoError(t, err)
		require.True(t, ok)
		ok, err = s.Claim(ctx, "r1")
		require.NoError(t, err)
		require.False(t, ok, "a cancelled delivery cannot be claimed")
	})

	t.Run("ReplayDead", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		s := open(t, store.Params{Deliver: rec.deliver})
		ctx := context.Background()
		require.NoError(t, s.Start(ctx))
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		_, err := s.Accept(ctx, []store.Incoming{{Event: event("e1", "t", ""), Deliveries: []store.NewDelivery{delivery("d1", "r", "", store.Pending, time.Time{})}}})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return rec.count("d1") == 1 }, 10*time.Second, 10*time.Millisecond)
		require.NoError(t, s.Record(ctx, store.Outcome{ID: "d1", State: store.Dead, Error: "http 400", Attempted: true}))
		_, err = s.Replay(ctx, store.ReplayFilter{IDs: []string{"nope"}})
		require.ErrorIs(t, err, store.ErrNotFound)
		ids, err := s.Replay(ctx, store.ReplayFilter{Route: "r"})
		require.NoError(t, err)
		require.Equal(t, []string{"d1"}, ids)
		require.Eventually(t, func() bool { return rec.count("d1") == 2 }, 10*time.Second, 10*time.Millisecond)
		d, err := s.Delivery(ctx, "d1")
		require.NoError(t, err)
		require.Equal(t, store.Pending, d.State)
		_, err = s.Replay(ctx, store.ReplayFilter{IDs: []string{"d1"}})
		require.ErrorContains(t, err, "only a finished delivery")
	})

	t.Run("ListsAndStats", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		for i := range 5 {
			st := store.Pending
			if i%2 == 1 {
				st = store.Skipped
			}
			_, err := s.Accept(ctx, []store.Incoming{{Event: event(fmt.Sprint("e", i), "t", ""), Deliveries: []store.NewDelivery{delivery(fmt.Sprint("d", i), "r", "", st, time.Time{})}}})
			require.NoError(t, err)
		}
		evs, err := s.Events(ctx, store.EventFilter{Source: "src", Limit: 3})
		require.NoError(t, err)
		require.Len(t, evs, 3)
		ds, err := s.Deliveries(ctx, store.DeliveryFilter{State: store.Skipped})
		require.NoError(t, err)
		require.Len(t, ds, 2)
		st, err := s.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, st.ByState[store.Pending])
		require.Equal(t, 2, st.ByState[store.Skipped])
		require.NoError(t, s.Ping(ctx))
	})

	t.Run("ConnectorState", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		a, b := s.State("sms"), s.State("books")
		_, ok, err := a.Get(ctx, "optout:+15005550004")
		require.NoError(t, err)
		require.False(t, ok)
		require.NoError(t, a.Put(ctx, "optout:+15005550004", []byte("21610")))
		require.NoError(t, a.Put(ctx, "optout:+15005550004", []byte("STOP")))
		v, ok, err := a.Get(ctx, "optout:+15005550004")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "STOP", string(v))
		_, ok, err = b.Get(ctx, "optout:+15005550004")
		require.NoError(t, err)
		require.False(t, ok, "state is scoped per connector")
		require.NoError(t, a.Delete(ctx, "optout:+15005550004"))
		_, ok, err = a.Get(ctx, "optout:+15005550004")
		require.NoError(t, err)
		require.False(t, ok)
	})

	t.Run("ReceiptsNeverMoveBackwards", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		_, err := s.Accept(ctx, []store.Incoming{{Event: event("e1", "t", ""), Deliveries: []store.NewDelivery{delivery("d1", "r", "", store.Pending, time.Time{})}}})
		require.NoError(t, err)
		require.NoError(t, s.Record(ctx, store.Outcome{ID: "d1", State: store.Succeeded, ExternalID: "SM1", Attempted: true}))
		require.NoError(t, s.UpdateReceipts(ctx, []connectors.ReceiptUpdate{{ExternalID: "SM1", Status: "delivered", Rank: 4}}))
		require.NoError(t, s.UpdateReceipts(ctx, []connectors.ReceiptUpdate{{ExternalID: "SM1", Status: "sent", Rank: 3}, {ExternalID: "SMunknown", Status: "sent", Rank: 3}}))
		d, err := s.Delivery(ctx, "d1")
		require.NoError(t, err)
		require.Equal(t, "delivered", d.ReceiptStatus)
	})

	t.Run("ReconcileRunsAndWatermarks", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		wm, err := s.Watermark(ctx, "bookings")
		require.NoError(t, err)
		require.True(t, wm.IsZero())
		t1 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
		require.NoError(t, s.FinishRun(ctx, store.Run{ID: "r1", Name: "bookings", Trigger: "manual", StartedAt: t1, FinishedAt: t1, Listed: 10, Recovered: 2, WatermarkAfter: t1}))
		// A failed run keeps the old watermark; an older one never moves it back.
		require.NoError(t, s.FinishRun(ctx, store.Run{ID: "r2", Name: "bookings", Trigger: "schedule", StartedAt: t1, FinishedAt: t1, Error: "page 3: 500", WatermarkAfter: t1.Add(time.Hour)}))
		require.NoError(t, s.FinishRun(ctx, store.Run{ID: "r3", Name: "bookings", Trigger: "schedule", StartedAt: t1.Add(time.Minute), FinishedAt: t1, WatermarkAfter: t1.Add(-time.Hour)}))
		wm, err = s.Watermark(ctx, "bookings")
		require.NoError(t, err)
		require.True(t, wm.Equal(t1), wm)
		runs, err := s.Runs(ctx, "bookings", 10)
		require.NoError(t, err)
		require.Len(t, runs, 3)
		require.Equal(t, "r3", runs[0].ID)
		var failed store.Run
		for _, r := range runs {
			if r.ID == "r2" {
				failed = r
			}
		}
		require.Equal(t, "page 3: 500", failed.Error)
		require.Equal(t, "schedule", failed.Trigger)
	})

	t.Run("AuditChain", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		n, err := s.VerifyAudit(ctx)
		require.NoError(t, err)
		require.Zero(t, n)
		for i, action := range []string{"replay", "purge", "reconcile_run"} {
			require.NoError(t, s.Audit(ctx, store.AuditEntry{Actor: "oncall", Action: action, Target: fmt.Sprint("t", i), Outcome: "ok"}))
		}
		n, err = s.VerifyAudit(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		log, err := s.AuditLog(ctx, 10)
		require.NoError(t, err)
		require.Equal(t, int64(3), log[0].Seq)
		require.Equal(t, "reconcile_run", log[0].Action)
		// Tampering is tested where the raw database is at hand (TestAuditTamper).
	})

	t.Run("PurgeRetentionAndSubject", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		mk := func(id, key string, st store.State) store.Incoming {
			ev := event(id, "t", key)
			ev.Payload = json.RawMessage(`{"name":"Jane Example"}`)
			return store.Incoming{Event: ev, Deliveries: []store.NewDelivery{delivery("d"+id, "r", key, st, time.Now().Add(time.Hour))}}
		}
		_, err := s.Accept(ctx, []store.Incoming{mk("old-done", "p1", store.Skipped), mk("old-waiting", "p2", store.Scheduled), mk("other", "p3", store.Skipped)})
		require.NoError(t, err)

		// Retention: finished ones go; one still waiting to be sent keeps its payload.
		n, err := s.Purge(ctx, store.PurgeFilter{Before: time.Now().Add(time.Minute)})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		ev, err := s.Event(ctx, "src", "old-done")
		require.NoError(t, err)
		require.Empty(t, ev.Payload)
		require.False(t, ev.PurgedAt.IsZero())
		ev, err = s.Event(ctx, "src", "old-waiting")
		require.NoError(t, err)
		require.JSONEq(t, `{"name":"Jane Example"}`, string(ev.Payload))
		d, err := s.Delivery(ctx, "dold-done")
		require.NoError(t, err, "the ledger row stays")
		require.Equal(t, store.Skipped, d.State)

		// Erasure: exactly that subject, and its pending send is cancelled.
		n, err = s.Purge(ctx, store.PurgeFilter{Subject: "p2"})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		ev, err = s.Event(ctx, "src", "old-waiting")
		require.NoError(t, err)
		require.Empty(t, ev.Payload)
		d, err = s.Delivery(ctx, "dold-waiting")
		require.NoError(t, err)
		require.Equal(t, store.Cancelled, d.State)
		require.Equal(t, "purged on request", d.LastError)
		_, err = s.Purge(ctx, store.PurgeFilter{})
		require.Error(t, err)
	})

	t.Run("EncryptedRoundTrip", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{EncryptionKeys: []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}})
		ctx := context.Background()
		ev := event("e1", "t", "")
		ev.Payload = json.RawMessage(`{"name":"Jane Example"}`)
		_, err := s.Accept(ctx, []store.Incoming{{Event: ev}})
		require.NoError(t, err)
		require.NoError(t, s.State("sms").Put(ctx, "token", []byte("refresh-me")))
		got, err := s.Event(ctx, "src", "e1")
		require.NoError(t, err)
		require.JSONEq(t, `{"name":"Jane Example"}`, string(got.Payload))
		v, ok, err := s.State("sms").Get(ctx, "token")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "refresh-me", string(v))
	})

	t.Run("EventsInOneBatchTakeEffectInOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		later := time.Now().Add(time.Hour)
		// A booking and its cancellation arrive in the same batch: the reminder never stands.
		fresh, err := s.Accept(ctx, []store.Incoming{
			{Event: event("created", "t", "b1"), Deliveries: []store.NewDelivery{delivery("r1", "reminder", "b1", store.Scheduled, later)}},
			{Event: event("cancelled", "t", "b1"), Cancels: []store.Cancel{{Route: "reminder", Key: "b1", Reason: "cancelled"}}},
		})
		require.NoError(t, err)
		require.Equal(t, []bool{true, true}, fresh)
		d, err := s.Delivery(ctx, "r1")
		require.NoError(t, err)
		require.Equal(t, store.Cancelled, d.State)
		require.Zero(t, d.JobID, "no job for a delivery cancelled before it was stored")
	})

	t.Run("SharedTokenBucket", func(t *testing.T) {
		t.Parallel()
		s := open(t, store.Params{})
		ctx := context.Background()
		if !s.SharesLimits() {
			_, err := s.TakeToken(ctx, "sink", 1, 1)
			require.ErrorIs(t, err, store.ErrNotShared)
			return
		}
		// 2 per second, burst 3: three now, then the fourth must wait ~0.5 s.
		for i := range 3 {
			wait, err := s.TakeToken(ctx, "sink", 2, 3)
			require.NoError(t, err)
			require.Zero(t, wait, "token %d", i)
		}
		wait, err := s.TakeToken(ctx, "sink", 2, 3)
		require.NoError(t, err)
		require.Greater(t, wait, 300*time.Millisecond)
		require.LessOrEqual(t, wait, 500*time.Millisecond)
		other, err := s.TakeToken(ctx, "other-sink", 2, 3)
		require.NoError(t, err)
		require.Zero(t, other, "buckets are per name")
	})
}
