package calcom_test

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
	"github.com/clinicbridge/clinicbridge/connectors/calcom"
	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
)

// bundle is one test's fake, connector and clock.
type bundle struct {
	clock *clock
	fake  *calcomfake.Server
	srv   *httptest.Server
	conn  *calcom.Connector
	waits []time.Duration
	mu    sync.Mutex
}

func setup(t *testing.T, fakeOpts ...calcomfake.Option) *bundle {
	t.Helper()
	b := &bundle{clock: newClock()}
	opts := append([]calcomfake.Option{calcomfake.WithClock(b.clock.Now), calcomfake.WithAPIKey(apiKey)}, fakeOpts...)
	b.fake = calcomfake.New(opts...)
	b.srv = httptest.NewServer(b.fake)
	t.Cleanup(b.srv.Close)
	b.conn = b.connector(t, apiKey)
	return b
}

// connector builds a connector against the fake whose rate-limit waits move
// the shared clock instead of sleeping.
func (b *bundle) connector(t *testing.T, key string) *calcom.Connector {
	t.Helper()
	c, err := calcom.New(&calcom.Config{WebhookSecret: secret, APIKey: key, BaseURL: b.srv.URL},
		connectors.Env{Name: "booking", Now: b.clock.Now},
		calcom.WithSleep(func(ctx context.Context, d time.Duration) error {
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

func TestListPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := 0; i < 250; i++ {
		_, err := b.fake.Create(calcomfake.Booking{})
		require.NoError(t, err)
		b.clock.Advance(time.Second)
	}
	pages, err := b.list(t, connectors.ListParams{Since: fixedNow.Add(-time.Hour)})
	require.NoError(t, err)
	require.Len(t, pages, 3)
	require.Len(t, pages[0].Events, 100)
	require.Len(t, pages[2].Events, 50)
	seen := map[string]bool{}
	for _, ev := range allEvents(pages) {
		require.False(t, seen[ev.ID], "listed twice: %s", ev.ID)
		seen[ev.ID] = true
		require.Equal(t, "BOOKING_CREATED", ev.Type)
	}
	require.Len(t, seen, 250)
	// Newest is each page's newest updatedAt, and pages come oldest first.
	require.Equal(t, fixedNow.Add(99*time.Second), pages[0].Newest)
	require.Equal(t, fixedNow.Add(249*time.Second), pages[2].Newest)

	reqs := b.fake.Requests()
	require.Len(t, reqs, 3)
	for i, r := range reqs {
		require.Contains(t, r.Query, "sortUpdatedAt=asc")
		require.Contains(t, r.Query, "take=100")
		require.Contains(t, r.Query, "afterUpdatedAt=2026-11-02T08%3A30%3A00.000Z")
		require.Contains(t, r.Query, "skip="+[]string{"0", "100", "200"}[i])
	}

	// Since filters: only what changed at or after it.
	pages, err = b.list(t, connectors.ListParams{Since: fixedNow.Add(200 * time.Second)})
	require.NoError(t, err)
	require.Len(t, allEvents(pages), 50)
}

func TestListRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, calcomfake.WithRateLimit(2))
	for i := 0; i < 450; i++ {
		_, err := b.fake.Create(calcomfake.Booking{})
		require.NoError(t, err)
	}
	pages, err := b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	require.Len(t, allEvents(pages), 450, "every page listed once despite the 429s")
	require.Len(t, pages, 5)
	b.mu.Lock()
	waits := append([]time.Duration(nil), b.waits...)
	b.mu.Unlock()
	require.Equal(t, []time.Duration{time.Minute, time.Minute}, waits, "waited as X-RateLimit-Reset-Default said")
	var limited int
	for _, r := range b.fake.Requests() {
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	require.Equal(t, 2, limited)
}

func TestListRateLimitGivesUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.fake.Create(calcomfake.Booking{})
	require.NoError(t, err)
	b.fake.FailPage(1, http.StatusTooManyRequests)
	_, err = b.list(t, connectors.ListParams{})
	require.Error(t, err)
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Positive(t, connectors.RetryAfterOf(err))
	require.Len(t, b.fake.Requests(), 6, "one try and five retries")
	connectortest.NoLeak(t, err, apiKey, secret)

	// A cancelled context ends the wait.
	c, err := calcom.New(&calcom.Config{WebhookSecret: secret, APIKey: apiKey, BaseURL: b.srv.URL}, connectors.Env{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = c.List(ctx, connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.ErrorIs(t, err, context.Canceled)
}

func TestListServerError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := 0; i < 250; i++ {
		_, err := b.fake.Create(calcomfake.Booking{})
		require.NoError(t, err)
	}
	b.fake.FailPage(3, http.StatusInternalServerError)
	pages, err := b.list(t, connectors.ListParams{})
	require.Error(t, err)
	require.Len(t, pages, 2, "the pages before the failure were yielded")
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusInternalServerError, ce.HTTPStatus)
	connectortest.NoLeak(t, err, apiKey, secret)

	b.fake.ClearFailures()
	pages, err = b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	require.Len(t, allEvents(pages), 250)
}

func TestListAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.fake.Create(calcomfake.Booking{})
	require.NoError(t, err)

	wrong := b.connector(t, "cal_live_wrong_key_123")
	err = wrong.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.ErrorContains(t, err, "api_key")
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	connectortest.NoLeak(t, err, "cal_live_wrong_key_123", apiKey, secret)

	none := b.connector(t, "")
	err = none.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.ErrorContains(t, err, "api_key is not set")
}

func TestListYieldErrorStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := 0; i < 150; i++ {
		_, err := b.fake.Create(calcomfake.Booking{})
		require.NoError(t, err)
	}
	stop := io.ErrClosedPipe
	calls := 0
	err := b.conn.List(context.Background(), connectors.ListParams{}, func(connectors.Page) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
	require.Len(t, b.fake.Requests(), 1)
}

func TestListTypesFilter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, err := b.fake.Create(calcomfake.Booking{})
	require.NoError(t, err)
	_, err = b.fake.Create(calcomfake.Booking{})
	require.NoError(t, err)
	require.NoError(t, b.fake.Cancel(a.UID, "ill"))
	pages, err := b.list(t, connectors.ListParams{Types: []string{"BOOKING_CANCELLED"}})
	require.NoError(t, err)
	evs := allEvents(pages)
	require.Len(t, evs, 1)
	require.Equal(t, "BOOKING_CANCELLED:"+a.UID, evs[0].ID)
}

// TestWebhooksAndListingAgree creates, reschedules and cancels bookings
// through the fake, which posts signed webhooks to a receiver built on the
// connector and drops a fifth of them. Listing then must give, for every
// booking, exactly the event id (and Replaces) of the last webhook about it,
// dropped or not, with a payload one mapping reads the same way.
func TestWebhooksAndListingAgree(t *testing.T) {
	t.Parallel()
	var (
		mu       sync.Mutex
		received []connectors.Event
	)
	b := &bundle{clock: newClock()}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		mu.Lock()
		received = append(received, in.Events...)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	b.fake = calcomfake.New(calcomfake.WithClock(b.clock.Now), calcomfake.WithAPIKey(apiKey),
		calcomfake.WithWebhook(hook.URL, secret), calcomfake.WithSeed(7))
	b.srv = httptest.NewServer(b.fake)
	t.Cleanup(b.srv.Close)
	b.conn = b.connector(t, apiKey)
	b.fake.DropShare(0.2)

	var uids []string
	for i := 0; i < 30; i++ {
		bk, err := b.fake.Create(calcomfake.Booking{Start: fixedNow.Add(time.Duration(24+i) * time.Hour)})
		require.NoError(t, err)
		uids = append(uids, bk.UID)
		b.clock.Advance(time.Minute)
	}
	var moved []string
	for i := 0; i < 8; i++ {
		nu, err := b.fake.Reschedule(uids[i], fixedNow.Add(time.Duration(72+i)*time.Hour))
		require.NoError(t, err)
		moved = append(moved, nu)
		b.clock.Advance(time.Minute)
	}
	for i := 0; i < 3; i++ { // moved twice: A -> B -> C
		_, err := b.fake.Reschedule(moved[i], fixedNow.Add(time.Duration(120+i)*time.Hour))
		require.NoError(t, err)
		if i == 0 {
			continue // the same updatedAt for B and C: the page must still list B first
		}
		b.clock.Advance(time.Minute)
	}
	for i := 8; i < 14; i++ {
		require.NoError(t, b.fake.Cancel(uids[i], "feeling better"))
		b.clock.Advance(time.Minute)
	}

	// Every webhook the fake meant to send, as the connector parses it.
	dropped := 0
	var sent []connectors.Event
	for _, d := range b.fake.Deliveries() {
		req := &connectors.Request{Method: http.MethodPost, Header: d.Header, Body: d.Body}
		require.NoError(t, b.conn.Verify(req))
		in, err := b.conn.Parse(req)
		require.NoError(t, err)
		sent = append(sent, in.Events...)
		if d.Dropped {
			dropped++
		} else {
			require.Equal(t, http.StatusOK, d.Status)
		}
	}
	require.Len(t, sent, 47)
	require.Positive(t, dropped, "the seed drops some")
	require.Len(t, received, len(sent)-dropped)
	require.Len(t, b.fake.Dropped(), dropped)

	// The last webhook per booking, except for a first booking a reschedule
	// replaced: its successor's Replaces carries it. (An intermediate one,
	// itself a reschedule, is listed: it carries the chain to the first.)
	last := map[string]connectors.Event{}
	for _, ev := range sent {
		last[ev.Key] = ev
	}
	for _, ev := range sent {
		if old, ok := last[ev.Replaces]; ok && old.Replaces == "" {
			delete(last, ev.Replaces)
		}
	}

	pages, err := b.list(t, connectors.ListParams{Since: fixedNow.Add(-time.Hour)})
	require.NoError(t, err)
	listed := map[string]connectors.Event{}
	pos := map[string]int{}
	for i, ev := range allEvents(pages) {
		listed[ev.Key] = ev
		pos[ev.Key] = i
	}
	require.Equal(t, ids(last), ids(listed))
	for key, ev := range listed {
		if p, ok := pos[ev.Replaces]; ok {
			require.Less(t, p, pos[key], "a replaced booking is listed before its successor")
		}
	}
	for key, want := range last {
		got := listed[key]
		require.Equal(t, want.Type, got.Type)
		require.Equal(t, want.Replaces, got.Replaces)
		// The fields a reminder mapping reads are the same on both paths.
		for _, path := range [][]string{{"uid"}, {"startTime"}, {"endTime"}, {"status"}, {"title"}, {"location"},
			{"attendees", "0", "phoneNumber"}, {"attendees", "0", "name"}, {"attendees", "0", "email"}, {"attendees", "0", "timeZone"},
			{"organizer", "name"}, {"responses", "attendeePhoneNumber", "value"}, {"rescheduleUid"}} {
			if path[0] == "status" && lookup(t, got.Payload, path) == "CANCELLED" && got.Type == "BOOKING_RESCHEDULED" {
				continue // moved again since: listed as it is now
			}
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
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i := int(p[0] - '0')
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func TestListedPayloadShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bk, err := b.fake.Create(calcomfake.Booking{
		Start:      fixedNow.Add(26 * time.Hour),
		Attendees:  []calcomfake.Attendee{{Name: "Priya Patel", Email: "priya@example.com", TimeZone: "Europe/London", PhoneNumber: "+447700900456"}},
		MeetingURL: "https://cal.com/video/abc",
	})
	require.NoError(t, err)
	b.clock.Advance(time.Minute)
	newUID, err := b.fake.Reschedule(bk.UID, fixedNow.Add(50*time.Hour))
	require.NoError(t, err)

	pages, err := b.list(t, connectors.ListParams{})
	require.NoError(t, err)
	evs := allEvents(pages)
	require.Len(t, evs, 1, "the replaced booking yields nothing")
	ev := evs[0]
	require.Equal(t, "BOOKING_RESCHEDULED:"+newUID, ev.ID)
	require.Equal(t, bk.UID, ev.Replaces)
	require.Equal(t, fixedNow.Add(time.Minute), ev.OccurredAt)
	require.Equal(t, "2026-11-04T11:30:00Z", lookup(t, ev.Payload, []string{"startTime"}))
	require.Equal(t, "+447700900456", lookup(t, ev.Payload, []string{"attendees", "0", "phoneNumber"}))
	require.Equal(t, "Priya", lookup(t, ev.Payload, []string{"attendees", "0", "firstName"}))
	require.Equal(t, "ACCEPTED", lookup(t, ev.Payload, []string{"status"}))
	require.Equal(t, "https://cal.com/video/abc", lookup(t, ev.Payload, []string{"metadata", "videoCallUrl"}))
	require.Equal(t, bk.UID, lookup(t, ev.Payload, []string{"rescheduleUid"}))
	require.False(t, strings.Contains(string(ev.Payload), `"start"`), "API field names are not leaked into the webhook shape")
}

// TestListOrdersSupersededFirst serves a page where the successor comes
// before the booking it replaced (equal updatedAt, any order is Cal.com's
// right): the listed events must still put the replaced one first.
func TestListOrdersSupersededFirst(t *testing.T) {
	t.Parallel()
	page := `{"status":"success","data":[` +
		`{"id":3,"uid":"C","status":"accepted","rescheduledFromUid":"B","start":"2026-11-06T10:00:00.000Z","end":"2026-11-06T10:30:00.000Z","attendees":[],"hosts":[],"createdAt":"2026-11-02T09:00:00.000Z","updatedAt":"2026-11-02T09:00:00.000Z"},` +
		`{"id":2,"uid":"B","status":"cancelled","rescheduledFromUid":"A","rescheduledToUid":"C","start":"2026-11-05T10:00:00.000Z","end":"2026-11-05T10:30:00.000Z","attendees":[],"hosts":[],"createdAt":"2026-11-02T08:00:00.000Z","updatedAt":"2026-11-02T09:00:00.000Z"},` +
		`{"id":1,"uid":"A","status":"cancelled","rescheduledToUid":"B","start":"2026-11-04T10:00:00.000Z","end":"2026-11-04T10:30:00.000Z","attendees":[],"hosts":[],"createdAt":"2026-11-02T07:00:00.000Z","updatedAt":"2026-11-02T08:00:00.000Z"}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, page)
	}))
	t.Cleanup(srv.Close)
	c, err := calcom.New(&calcom.Config{WebhookSecret: secret, APIKey: apiKey, BaseURL: srv.URL}, connectors.Env{})
	require.NoError(t, err)
	var evs []connectors.Event
	require.NoError(t, c.List(context.Background(), connectors.ListParams{}, func(p connectors.Page) error {
		evs = append(evs, p.Events...)
		require.Equal(t, time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC), p.Newest)
		return nil
	}))
	require.Len(t, evs, 2, "A, the first booking, yields nothing")
	require.Equal(t, "BOOKING_RESCHEDULED:B", evs[0].ID)
	require.Equal(t, "A", evs[0].Replaces)
	require.Equal(t, "BOOKING_RESCHEDULED:C", evs[1].ID)
	require.Equal(t, "B", evs[1].Replaces)
}
