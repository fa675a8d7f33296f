package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/internal/reconcile"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// listing is a source with n items updated a minute apart, listed in pages
// of 10; failPage makes that page fail once.
type listing struct {
	n        int
	base     time.Time
	failPage int
	calls    []connectors.ListParams
}

func (l *listing) List(_ context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	l.calls = append(l.calls, p)
	var page []connectors.Event
	pageNo := 1
	newest := time.Time{}
	flush := func() error {
		if pageNo == l.failPage {
			l.failPage = 0
			return errors.New("page 3: HTTP 500")
		}
		err := yield(connectors.Page{Events: page, Newest: newest})
		page, pageNo = nil, pageNo+1
		return err
	}
	for i := range l.n {
		at := l.base.Add(time.Duration(i) * time.Minute)
		if !at.After(p.Since) {
			continue
		}
		page = append(page, connectors.Event{ID: fmt.Sprintf("evt_%03d", i), Type: "x.updated", OccurredAt: at, Payload: json.RawMessage(`{}`)})
		newest = at
		if len(page) == 10 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(page) > 0 {
		return flush()
	}
	return nil
}

func setup(t *testing.T, l *listing) (*reconcile.Engine, store.Store, *pipeline.Pipeline) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Params{Path: filepath.Join(t.TempDir(), "cb.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	pl := pipeline.New(pipeline.Params{})
	pl.SetStore(st)
	e := reconcile.New([]*reconcile.Reconciler{{Name: "items", From: "src", Lookback: time.Hour, Lister: l}}, pl, zerolog.Nop(), metrics.New(nil))
	e.SetStore(st)
	return e, st, pl
}

func TestRunRecoversWhatWebhooksMissed(t *testing.T) {
	t.Parallel()
	l := &listing{n: 50, base: time.Now().Add(-50 * time.Minute)}
	e, st, pl := setup(t, l)
	ctx := context.Background()
	// Webhooks brought every fifth item.
	var delivered []connectors.Event
	for i := 0; i < 50; i += 5 {
		delivered = append(delivered, connectors.Event{Source: "src", ID: fmt.Sprintf("evt_%03d", i), Type: "x.updated", Payload: json.RawMessage(`{}`)})
	}
	_, err := pl.Accept(ctx, delivered)
	require.NoError(t, err)

	run, err := e.Run(ctx, "items", "manual")
	require.NoError(t, err)
	require.Equal(t, 50, run.Listed)
	require.Equal(t, 10, run.Known)
	require.Equal(t, 40, run.Recovered)
	require.False(t, run.WatermarkAfter.IsZero())

	// The second run starts from the watermark minus the lookback and finds nothing new.
	run2, err := e.Run(ctx, "items", "manual")
	require.NoError(t, err)
	require.Zero(t, run2.Recovered)
	require.True(t, l.calls[1].Since.Equal(run.WatermarkAfter.Truncate(time.Microsecond).Add(-time.Hour)), "since = watermark - lookback")
	runs, err := st.Runs(ctx, "items", 10)
	require.NoError(t, err)
	require.Len(t, runs, 2)

	_, err = e.Run(ctx, "nope", "manual")
	require.ErrorIs(t, err, reconcile.ErrUnknown)
}

func TestFailedRunKeepsTheWatermark(t *testing.T) {
	t.Parallel()
	l := &listing{n: 50, base: time.Now().Add(-50 * time.Minute), failPage: 3}
	e, st, _ := setup(t, l)
	ctx := context.Background()
	run, err := e.Run(ctx, "items", "schedule")
	require.ErrorContains(t, err, "page 3")
	require.Equal(t, 20, run.Recovered, "pages 1 and 2 were stored")
	require.Contains(t, run.Error, "page 3")
	wm, err := st.Watermark(ctx, "items")
	require.NoError(t, err)
	require.True(t, wm.IsZero(), "a failed run keeps the old watermark")

	run, err = e.Run(ctx, "items", "schedule")
	require.NoError(t, err)
	require.Equal(t, 50, run.Listed)
	require.Equal(t, 30, run.Recovered, "the next run recovers everything else")
	require.Equal(t, 20, run.Known)
}
