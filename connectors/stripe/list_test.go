package stripe_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/stripe"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
)

// listBundle is a connector whose webhooks go to a receiver that verifies
// and parses them, and whose listing goes to the same fake.
type listBundle struct {
	fake *stripefake.Server
	conn *stripe.Connector

	mu       sync.Mutex
	received []connectors.Event
}

func setupList(t *testing.T, opts ...stripefake.Option) *listBundle {
	t.Helper()
	b := &listBundle{}
	api := listen127(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.fake.ServeHTTP(w, r) }))
	b.conn = build(t, "{webhook_secret: "+secret+", api_key: "+apiKey+", base_url: '"+api.URL+"'}", connectors.Env{})
	hook := listen127(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &connectors.Request{Method: r.Method, Header: r.Header, Body: body}
		if err := b.conn.Verify(req); err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		in, err := b.conn.Parse(req)
		if err != nil {
			http.Error(w, "malformed", http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.received = append(b.received, in.Events...)
		b.mu.Unlock()
	}))
	b.fake = stripefake.New(append([]stripefake.Option{stripefake.WithAPIKey(apiKey), stripefake.WithWebhook(hook.URL, secret)}, opts...)...)
	return b
}

func (b *listBundle) emit(t *testing.T, n int, types ...string) {
	t.Helper()
	for i := 0; i < n; i++ {
		typ := types[i%len(types)]
		_, err := b.fake.Emit(context.Background(), typ, map[string]any{"id": "pi_" + strconv.Itoa(i), "object": "payment_intent", "amount": 100 + i})
		require.NoError(t, err)
	}
}

func (b *listBundle) list(t *testing.T, p connectors.ListParams) ([]connectors.Page, error) {
	t.Helper()
	var pages []connectors.Page
	err := b.conn.List(context.Background(), p, func(pg connectors.Page) error {
		pages = append(pages, pg)
		return nil
	})
	return pages, err
}

func ids(evs []connectors.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	sort.Strings(out)
	return out
}

func flatten(pages []connectors.Page) []connectors.Event {
	var out []connectors.Event
	for _, p := range pages {
		out = append(out, p.Events...)
	}
	return out
}

// TestListFindsDroppedWebhooks: a fifth of the webhooks never arrive;
// listing finds every event, with the same ids, types, keys and payloads
// the webhooks gave, so the store's dedupe makes reconciliation idempotent.
func TestListFindsDroppedWebhooks(t *testing.T) {
	t.Parallel()
	b := setupList(t, stripefake.WithSeed(7))
	b.fake.DropShare(0.2)
	b.emit(t, 250, "payment_intent.succeeded", "charge.refunded")

	dropped := b.fake.Dropped()
	require.NotEmpty(t, dropped, "some webhooks were dropped")
	require.Len(t, b.received, 250-len(dropped))

	pages, err := b.list(t, connectors.ListParams{Since: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	require.Len(t, pages, 3, "250 events in pages of 100")
	listed := flatten(pages)
	require.Len(t, listed, 250)

	byID := map[string]connectors.Event{}
	for _, e := range listed {
		byID[e.ID] = e
	}
	for _, w := range b.received {
		l, ok := byID[w.ID]
		require.True(t, ok, "webhook %s is listed", w.ID)
		require.Equal(t, w.Type, l.Type)
		require.Equal(t, w.Key, l.Key)
		require.Equal(t, w.OccurredAt, l.OccurredAt)
		require.JSONEq(t, string(w.Payload), string(l.Payload))
	}
	for _, id := range dropped {
		require.Contains(t, byID, id, "a dropped webhook is found by listing")
	}

	// Newest first, pages toward older events with starting_after.
	reqs := b.fake.Requests()
	require.Len(t, reqs, 3)
	require.Empty(t, reqs[0].Query.Get("starting_after"))
	require.Equal(t, "100", reqs[0].Query.Get("limit"))
	require.Equal(t, pages[0].Events[99].ID, reqs[1].Query.Get("starting_after"))
	require.Equal(t, pages[1].Events[99].ID, reqs[2].Query.Get("starting_after"))
	all := b.fake.Events()
	require.Equal(t, all[len(all)-1].ID, listed[0].ID, "newest first")
	require.Equal(t, all[0].ID, listed[len(listed)-1].ID)
	require.Equal(t, all[len(all)-1].Created.UTC(), pages[0].Newest)
}

func TestListDropShareIsReproducible(t *testing.T) {
	t.Parallel()
	run := func() []int {
		b := setupList(t, stripefake.WithSeed(42))
		b.fake.DropShare(0.2)
		b.emit(t, 50, "invoice.paid")
		var idx []int
		for i, e := range b.fake.Events() {
			if e.Dropped {
				idx = append(idx, i)
			}
		}
		return idx
	}
	first := run()
	require.NotEmpty(t, first)
	require.Equal(t, first, run())
}

func TestListTypes(t *testing.T) {
	t.Parallel()
	b := setupList(t)
	b.emit(t, 30, "payment_intent.succeeded", "charge.refunded", "invoice.paid")

	pages, err := b.list(t, connectors.ListParams{Types: []string{"charge.refunded", "invoice.paid"}})
	require.NoError(t, err)
	got := flatten(pages)
	require.Len(t, got, 20)
	for _, e := range got {
		require.Contains(t, []string{"charge.refunded", "invoice.paid"}, e.Type)
	}
	q := b.fake.Requests()[0].Query
	require.Equal(t, []string{"charge.refunded", "invoice.paid"}, q["types[]"])

	// More than Stripe's 20 types[]: list everything, filter here.
	many := []string{"charge.refunded"}
	for i := 0; i < 20; i++ {
		many = append(many, "x.type"+strconv.Itoa(i))
	}
	pages, err = b.list(t, connectors.ListParams{Types: many})
	require.NoError(t, err)
	got = flatten(pages)
	require.Len(t, got, 10)
	for _, e := range got {
		require.Equal(t, "charge.refunded", e.Type)
	}
	reqs := b.fake.Requests()
	require.Empty(t, reqs[len(reqs)-1].Query["types[]"])
	require.False(t, pages[0].Newest.IsZero(), "the watermark covers filtered-out events too")
}

func TestListFailureOnPage3(t *testing.T) {
	t.Parallel()
	b := setupList(t)
	b.emit(t, 250, "payment_intent.succeeded")
	b.fake.FailPage(3, http.StatusInternalServerError)

	pages, err := b.list(t, connectors.ListParams{})
	require.Error(t, err)
	require.Len(t, pages, 2, "pages before the failure were yielded")
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusInternalServerError, ce.HTTPStatus)
	require.Equal(t, "api_error", ce.Msg[len(ce.Msg)-len("api_error"):])

	// The next run succeeds and lists everything.
	pages, err = b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	require.Len(t, flatten(pages), 250)
}

func TestListHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := setupList(t)
	b.emit(t, 3, "invoice.paid")
	var waits []time.Duration
	b.conn.SetSleep(func(d time.Duration) { waits = append(waits, d) })
	b.fake.FailNext(stripefake.Failure{Status: 429, RetryAfter: 7 * time.Second}, stripefake.Failure{Status: 429, RetryAfter: 120 * time.Second})
	pages, err := b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	require.Len(t, flatten(pages), 3)
	require.Equal(t, []time.Duration{7 * time.Second, 30 * time.Second}, waits, "Retry-After honoured, bounded to 30 s")

	// Persistent 429s: the run gives up, rate limited.
	waits = nil
	for i := 0; i < 6; i++ {
		b.fake.FailNext(stripefake.Failure{Status: 429, RetryAfter: time.Second})
	}
	_, err = b.list(t, connectors.ListParams{})
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Len(t, waits, 5)
}

func TestListCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	b := setupList(t)
	b.fake.FailNext(stripefake.Failure{Status: 429, RetryAfter: 20 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.conn.List(ctx, connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.ErrorIs(t, err, context.Canceled)
}

func TestListClampsTo30Days(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)
	b := setupList(t, stripefake.WithClock(func() time.Time { return fixed }))
	b.conn = build(t, "{webhook_secret: "+secret+", api_key: "+apiKey+", base_url: '"+baseURLOf(t, b)+"'}", connectors.Env{Now: func() time.Time { return fixed }})
	b.emit(t, 1, "invoice.paid")
	for _, since := range []time.Time{{}, fixed.Add(-90 * 24 * time.Hour)} {
		pages, err := b.list(t, connectors.ListParams{Since: since})
		require.NoError(t, err)
		require.Len(t, flatten(pages), 1)
		reqs := b.fake.Requests()
		require.Equal(t, strconv.FormatInt(fixed.Add(-30*24*time.Hour).Unix(), 10), reqs[len(reqs)-1].Query.Get("created[gte]"))
	}
	_, err := b.list(t, connectors.ListParams{Since: fixed.Add(-time.Hour)})
	require.NoError(t, err)
	reqs := b.fake.Requests()
	require.Equal(t, strconv.FormatInt(fixed.Add(-time.Hour).Unix(), 10), reqs[len(reqs)-1].Query.Get("created[gte]"))
}

func baseURLOf(t *testing.T, b *listBundle) string {
	t.Helper()
	srv := listen127(t, b.fake)
	return srv.URL
}

func TestListErrors(t *testing.T) {
	t.Parallel()
	b := setupList(t)
	b.emit(t, 1, "invoice.paid")

	wrong := build(t, "{webhook_secret: "+secret+", api_key: sk_test_wrongkey1234, base_url: '"+baseURLOf(t, b)+"'}", connectors.Env{})
	err := wrong.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	require.NotContains(t, err.Error(), "1234", "Stripe's message quotes the key; it is left out")

	noKey := build(t, "webhook_secret: "+secret, connectors.Env{})
	err = noKey.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))

	stop := errors.New("stop")
	err = b.conn.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return stop })
	require.ErrorIs(t, err, stop)

	down := build(t, "{webhook_secret: "+secret+", api_key: "+apiKey+", base_url: 'http://127.0.0.1:1'}", connectors.Env{})
	err = down.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
}
