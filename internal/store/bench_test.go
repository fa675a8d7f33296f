package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// BenchmarkSQLiteAcceptAndDeliver is the store's share of a webhook: 64
// concurrent accepts of one ~1 KB event with one immediate delivery, whose
// first attempt (dispatcher, held row, a succeeded outcome) runs as the
// agent's would, all on a real file with synchronous=FULL. One op is one
// event accepted and its outcome recorded. No HTTP: run it to compare
// changes to the store without the load tool's noise.
//
//	go test ./internal/store -run XXX -bench AcceptAndDeliver -benchtime 20000x -count 5
func BenchmarkSQLiteAcceptAndDeliver(b *testing.B) {
	ctx := context.Background()
	var s store.Store
	var delivered atomic.Int64
	deliver := func(ctx context.Context, _ int64, ids []string) error {
		ls, err := s.Load(ctx, ids)
		if err != nil {
			return err
		}
		// In parallel, as the pipeline runs a batch: each waits for a commit.
		errs := make(chan error, len(ls))
		for _, l := range ls {
			go func() {
				errs <- s.Record(ctx, store.Outcome{ID: l.Delivery.ID, State: store.Succeeded, Attempted: true})
			}()
		}
		for range ls {
			if err := <-errs; err != nil {
				return err
			}
			delivered.Add(1)
		}
		return nil
	}
	var err error
	s, err = store.Open(ctx, store.Params{Path: filepath.Join(b.TempDir(), "cb.db"), Deliver: deliver})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Stop(ctx)
	payload := json.RawMessage(`{"type":"load.test","data":{"seq":1,"filler":"` + strings.Repeat("x", 950) + `"}}`)
	var seq atomic.Int64
	b.SetParallelism(32) // 64 on two cores: the load tool's concurrency
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			id := fmt.Sprintf("evt_%012d", n)
			in := store.Incoming{
				Event:      connectors.Event{Source: "inbox", ID: id, Type: "load.test", OccurredAt: time.Now(), Payload: payload},
				Deliveries: []store.NewDelivery{{ID: fmt.Sprintf("dlv_%012d", n), Route: "load", State: store.Pending}},
			}
			if _, err := s.Accept(ctx, []store.Incoming{in}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	// A failed accept never delivers: stop waiting rather than hang.
	for delivered.Load() < int64(b.N) && !b.Failed() {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
}
