package pipeline

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/mapping"
)

type countingSink struct{ calls atomic.Int64 }

func (s *countingSink) Do(context.Context, connectors.Delivery) (connectors.Receipt, error) {
	s.calls.Add(1)
	return connectors.Receipt{}, nil
}

// A job runs only the deliveries whose ledger row names it: once a delivery
// has been handed on (a retry queued under another job), running the old job
// again must not attempt it.
func TestDeliverRunsOnlyTheJobNamedInTheLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prog, err := mapping.Compile([]byte("fields:\n  n: {from: payload.n}\n"), "m.yaml")
	require.NoError(t, err)
	sink := &countingSink{}
	p := New(Params{Routes: []*Route{{Name: "r", From: "booking", Map: prog, To: "s", Sink: sink, Action: connectors.Action{Name: "request"}, Retry: Retry{MaxAttempts: 3}}}})
	// No Deliver: the store queues a batch job and runs nothing itself.
	st, err := store.Open(ctx, store.Params{Path: filepath.Join(t.TempDir(), "cb.db")})
	require.NoError(t, err)
	defer st.Close()
	p.SetStore(st)
	_, err = p.Accept(ctx, []connectors.Event{event("CREATED", `{"n":1}`)})
	require.NoError(t, err)
	ds, err := st.Deliveries(ctx, store.DeliveryFilter{Route: "r"})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	d, id := ds[0], ds[0].ID
	require.NotZero(t, d.JobID)

	require.NoError(t, p.Deliver(ctx, d.JobID+1, []string{id}))
	require.Zero(t, sink.calls.Load(), "another job's delivery is left alone")
	require.NoError(t, p.Deliver(ctx, d.JobID, []string{id}))
	require.EqualValues(t, 1, sink.calls.Load())
	d, err = st.Delivery(ctx, id)
	require.NoError(t, err)
	require.Equal(t, store.Succeeded, d.State)
	require.NoError(t, p.Deliver(ctx, d.JobID, []string{id}))
	require.EqualValues(t, 1, sink.calls.Load(), "a finished delivery is not attempted again")
}
