package calendly_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/calendly"
	"github.com/clinicbridge/clinicbridge/connectors/calendly/calendlyfake"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
)

type bundle struct {
	clock *clock
	fake  *calendlyfake.Server
	srv   *httptest.Server
	conn  *calendly.Connector
	mu    sync.Mutex
	waits []time.Duration
}

func setup(t *testing.T, opts ...calendlyfake.Option) *bundle {
	t.Helper()
	b := &bundle{clock: newClock()}
	b.start(t, opts...)
	return b
}

func (b *bundle) start(t *testing.T, opts ...calendlyfake.Option) {
	t.Helper()
	b.fake = calendlyfake.New(append([]calendlyfake.Option{calendlyfake.WithClock(b.clock.Now), calendlyfake.WithToken(token)}, opts...)...)
	b.srv = httptest.NewServer(b.fake)
	t.Cleanup(b.srv.Close)
	b.conn = b.connector(t, token, org)
}

func (b *bundle) connector(t *testing.T, tok, organization string) *calendly.Connector {
	t.Helper()
	c, err := calendly.New(&calendly.Config{WebhookSecret: secret, APIKey: tok, Organization: organization, BaseURL: b.srv.URL},
		connectors.Env{Name: "calendly", Now: b.clock.Now},
		calendly.WithSleep(func(ctx context.Context, d time.Duration) error {
			b.mu.Lock()
			b.waits = append(b.waits, d)
			b.mu.Unlock()
			b.clock.Advance(d)
			return ctx.Err()
		}))
	require.NoError(t, err)
	return c
}

func (b *bundle) list(t *testing.T, p connectors.ListParams) ([]connectors.Page, error) {
	t.Helper()
	var pages []connectors.Page
	err := b.conn.List(context.Background(), p, func(pg connectors.Page) error {
		pages = append(pages, pg)
		return nil
	})
	return pages, err
}

func allEvents(pages []connectors.Page) []connectors.Event {
	var out []connectors.Event
	for _, p := range pages {
		out = append(out, p.Events...)
	}
	return out
}

func (b *bundle) book(t *testing.T, n int) []string {
	t.Helper()
	var uris []string
	for i := 0; i < n; i++ {
		inv, err := b.fake.Create(calendlyfake.Booking{Start: fixedNow.Add(24*time.Hour + time.Duration(i)*time.Minute), Phone: "+447700900123"})
		require.NoError(t, err)
		uris = append(uris, inv.URI())
	}
	return uris
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.book(t, 250)
	b.clock.Advance(time.Second)
	pages, err := b.list(t, connectors.ListParams{Since: fixedNow.Add(-time.Hour)})
	require.NoError(t, err)
	require.Len(t, pages, 3)
	seen := map[string]bool{}
	for _, ev := range allEvents(pages) {
		require.False(t, seen[ev.ID], "listed twice: %s", ev.ID)
		seen[ev.ID] = true
		require.Equal(t, "invitee.created", ev.Type)
		require.True(t, strings.HasPrefix(ev.ID, "invitee.created:https://api.calendly.com/scheduled_events/"))
	}
	require.Len(t, seen, 250)
	require.Equal(t, fixedNow, pages[0].Newest)

	var eventPages int
	for _, r := range b.fake.Requests() {
		if r.Path == "/scheduled_events" {
			eventPages++
			require.Contains(t, r.Query, "organization=https%3A%2F%2Fapi.calendly.com%2Forganizations%2FAAAAAAAAAAAAAAAA")
			require.Contains(t, r.Query, "count=100")
			require.Contains(t, r.Query, "min_start_time=2026-11-01T08%3A30%3A00.000000Z")
			require.Contains(t, r.Query, "max_start_time=2027-01-31T09%3A30%3A01.000000Z")
		}
	}
	require.Equal(t, 3, eventPages)

	// Nothing changed after the watermark: no invitee is fetched again.
	before := len(b.fake.Requests())
	pages, err = b.list(t, connectors.ListParams{Since: fixedNow.Add(time.Minute)})
	require.NoError(t, err)
	require.Empty(t, pages)
	require.Len(t, b.fake.Requests(), before+3, "only the three pages of events")
}

func TestListWindowAndChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	uris := b.book(t, 3)
	far, err := b.fake.Create(calendlyfake.Booking{Start: fixedNow.Add(100 * 24 * time.Hour)})
	require.NoError(t, err)
	group, err := b.fake.Create(calendlyfake.Booking{Start: fixedNow.Add(72 * time.Hour), GroupLimit: 8})
	require.NoError(t, err)

	b.clock.Advance(time.Hour)
	watermark := b.clock.Now()
	b.clock.Advance(time.Minute)
	require.NoError(t, b.fake.Cancel(uris[1], "feeling better"))
	joined, err := b.fake.Create(calendlyfake.Booking{Event: "https://api.calendly.com/scheduled_events/" + group.EventUUID, Name: "Chen Nguyen"})
	require.NoError(t, err)
	ev, ok := b.fake.Event(group.EventUUID)
	require.True(t, ok)
	require.True(t, ev.UpdatedAt.Before(watermark), "the fake leaves a group event's updated_at alone")

	pages, err := b.list(t, connectors.ListParams{Since: watermark})
	require.NoError(t, err)
	got := map[string]string{}
	for _, e := range allEvents(pages) {
		got[e.ID] = e.Key
	}
	require.Equal(t, map[string]string{
		"invitee.canceled:" + uris[1]:     uris[1],
		"invitee.created:" + joined.URI(): joined.URI(),
	}, got)
	require.Equal(t, watermark.Add(time.Minute), pages[len(pages)-1].Newest)

	// A zero watermark lists everything in the window; the far one is beyond lookahead.
	pages, err = b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	ids := map[string]bool{}
	for _, e := range allEvents(pages) {
		ids[e.ID] = true
	}
	require.Len(t, ids, 5)
	require.False(t, ids["invitee.created:"+far.URI()])
}

func TestListRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, calendlyfake.WithRateLimit(4))
	b.book(t, 10)
	pages, err := b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	require.Len(t, allEvents(pages), 10, "each invitee once despite the 429s")
	b.mu.Lock()
	waits := append([]time.Duration(nil), b.waits...)
	b.mu.Unlock()
	require.Len(t, waits, 2)
	for _, w := range waits {
		require.Equal(t, time.Minute, w, "waited as X-RateLimit-Reset said")
	}
}

func TestListRateLimitGivesUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.book(t, 1)
	b.fake.FailPage(1, http.StatusTooManyRequests)
	_, err := b.list(t, connectors.ListParams{})
	require.Error(t, err)
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Len(t, b.fake.Requests(), 6)
	connectortest.NoLeak(t, err, token, secret)
}

func TestListServerError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.book(t, 250)
	b.fake.FailPage(3, http.StatusInternalServerError)
	pages, err := b.list(t, connectors.ListParams{})
	require.Error(t, err)
	require.Len(t, pages, 2)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusInternalServerError, ce.HTTPStatus)
	connectortest.NoLeak(t, err, token, secret, "sam.taylor@example.com")

	b.fake.ClearFailures()
	pages, err = b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	require.Len(t, allEvents(pages), 250)
}

func TestListAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.book(t, 1)
	for _, tc := range []struct {
		tok, org, want string
	}{
		{"wrong-token-abc123", org, "api_key"},
		{token, "https://api.calendly.com/organizations/BBBBBBBBBBBBBBBB", "admin or owner"},
		{"", org, "api_key is not set"},
		{token, "", "organization is not set"},
	} {
		c := b.connector(t, tc.tok, tc.org)
		err := c.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return nil })
		require.ErrorContains(t, err, tc.want)
		connectortest.NoLeak(t, err, "wrong-token-abc123", token, secret)
	}
}

func TestListYieldErrorStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.book(t, 150)
	calls := 0
	err := b.conn.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error {
		calls++
		return io.ErrClosedPipe
	})
	require.ErrorIs(t, err, io.ErrClosedPipe)
	require.Equal(t, 1, calls)
}

// TestWebhooksAndListingAgree books, reschedules and cancels through the
// fake, which posts signed webhooks to a receiver built on the connector and
// drops a fifth of them. Listing must then give, per invitee, exactly the id
// (and Replaces) of the last webhook about it, dropped or not, with the
// fields a reminder mapping reads equal on both paths.
func TestWebhooksAndListingAgree(t *testing.T) {
	t.Parallel()
	b := &bundle{clock: newClock()}
	var (
		mu       sync.Mutex
		received int
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &connectors.Request{Method: r.Method, Header: r.Header, Body: body}
		if err := b.conn.Verify(req); err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if _, err := b.conn.Parse(req); err != nil {
			http.Error(w, "malformed", http.StatusBadRequest)
			return
		}
		mu.Lock()
		received++
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	b.start(t, calendlyfake.WithWebhook(hook.URL, secret), calendlyfake.WithSeed(11))
	b.fake.DropShare(0.2)
	since := b.clock.Now()

	var uris []string
	for i := 0; i < 30; i++ {
		inv, err := b.fake.Create(calendlyfake.Booking{Start: fixedNow.Add(time.Duration(24+i) * time.Hour), Phone: "+447700900123",
			Questions: []calendlyfake.QA{{Question: "Reason", Answer: "check-up"}}})
		require.NoError(t, err)
		uris = append(uris, inv.URI())
		b.clock.Advance(time.Minute)
	}
	for i := 0; i < 8; i++ {
		_, err := b.fake.Reschedule(uris[i], fixedNow.Add(time.Duration(96+i)*time.Hour))
		require.NoError(t, err)
		b.clock.Advance(time.Minute)
	}
	for i := 8; i < 14; i++ {
		require.NoError(t, b.fake.Cancel(uris[i], "feeling better"))
		b.clock.Advance(time.Minute)
	}

	// Every webhook the fake meant to send (signatures were checked by the
	// receiver for those sent), as the connector parses it.
	last := map[string]connectors.Event{}
	dropped := 0
	for _, d := range b.fake.Deliveries() {
		req := &connectors.Request{Method: http.MethodPost, Header: d.Header, Body: d.Body}
		if d.Dropped {
			dropped++
		} else {
			require.Equal(t, http.StatusOK, d.Status)
		}
		in, err := b.conn.Parse(req)
		require.NoError(t, err)
		for _, ev := range in.Events {
			last[ev.Key] = ev
		}
	}
	require.Len(t, b.fake.Deliveries(), 30+16+6)
	require.Positive(t, dropped)
	require.Equal(t, len(b.fake.Deliveries())-dropped, received)

	pages, err := b.list(t, connectors.ListParams{Since: since})
	require.NoError(t, err)
	listed := map[string]connectors.Event{}
	for _, ev := range allEvents(pages) {
		listed[ev.Key] = ev
	}
	require.Equal(t, ids(last), ids(listed))
	for key, want := range last {
		got := listed[key]
		require.Equal(t, want.Type, got.Type)
		require.Equal(t, want.Replaces, got.Replaces)
		for _, path := range [][]string{{"uri"}, {"status"}, {"name"}, {"email"}, {"timezone"}, {"text_reminder_number"},
			{"rescheduled"}, {"old_invitee"}, {"new_invitee"}, {"questions_and_answers"},
			{"scheduled_event", "start_time"}, {"scheduled_event", "uri"}, {"scheduled_event", "name"}, {"scheduled_event", "location"}} {
			require.Equal(t, lookup(t, want.Payload, path), lookup(t, got.Payload, path), "%s %v", want.ID, path)
		}
	}
}

func ids(m map[string]connectors.Event) []string {
	var out []string
	for _, ev := range m {
		out = append(out, ev.ID)
	}
	sort.Strings(out)
	return out
}

func lookup(t *testing.T, raw json.RawMessage, path []string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(raw, &v))
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
