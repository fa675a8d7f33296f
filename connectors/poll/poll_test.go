package poll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	stdhttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/poll"
	"github.com/clinicbridge/clinicbridge/connectors/poll/pollfake"
)

const (
	token  = "tok_poll_5f3a9c1e"
	apiKey = "MS0xLWNsaW5pa28tYXBpLWtleQ"
)

// listen127 serves h on 127.0.0.1 only.
func listen127(t *testing.T, h stdhttp.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

type bundle struct {
	fake *pollfake.Server
	srv  *httptest.Server
	src  *poll.Source
	// waits records the rate-limit waits the source asked for.
	waits *[]time.Duration
}

// setup serves a fake (with opts) and builds the source from cfg, where
// %URL% is the fake's address.
func setup(t *testing.T, cfg string, opts ...pollfake.Option) bundle {
	t.Helper()
	fake := pollfake.New(opts...)
	srv := listen127(t, fake)
	src, waits := build(t, strings.ReplaceAll(cfg, "%URL%", srv.URL))
	return bundle{fake: fake, srv: srv, src: src, waits: waits}
}

// build goes through config.Check and Type.Build, as the loader does.
func build(t *testing.T, cfg string) (*poll.Source, *[]time.Duration) {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], poll.Type().Fields, "connectors.clinic"))
	c, err := poll.Type().Build(doc.Content[0], connectors.Env{Name: "clinic"})
	require.NoError(t, err)
	src := c.(*poll.Source)
	t.Cleanup(func() { _ = src.Close() })
	var (
		mu    sync.Mutex
		waits []time.Duration
	)
	poll.SetSleep(src, func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, d)
		return ctx.Err()
	})
	return src, &waits
}

// list runs one listing and returns every page it yielded.
func list(t *testing.T, src connectors.Lister, since time.Time) ([]connectors.Page, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pages []connectors.Page
	err := src.List(ctx, connectors.ListParams{Since: since}, func(p connectors.Page) error {
		pages = append(pages, p)
		return nil
	})
	return pages, err
}

func ids(pages []connectors.Page) []string {
	var out []string
	for _, p := range pages {
		for _, ev := range p.Events {
			out = append(out, ev.ID)
		}
	}
	return out
}

func seed(f *pollfake.Server, n int) []map[string]any {
	var out []map[string]any
	for i := range n {
		out = append(out, f.Upsert(map[string]any{"id": fmt.Sprintf("pt_%03d", i), "first_name": "Jane", "last_name": fmt.Sprintf("Example%d", i)}))
	}
	return out
}

func hourAgo() time.Time { return time.Now().Add(-time.Hour) }

const basic = `
url: %URL%/items
items: body.items
event: {id: item.id, updated_at: item.updated_at}
paging: {next: body.links.next}
`

func TestTypeDeclaration(t *testing.T) {
	t.Parallel()
	ty := poll.Type()
	require.Equal(t, "poll", ty.Name)
	require.True(t, ty.Source)
	require.True(t, ty.Lister)
	require.False(t, ty.Sink())
	require.NotNil(t, ty.Fake)
	b := setup(t, basic)
	require.Implements(t, (*connectors.Source)(nil), b.src)
	require.Implements(t, (*connectors.Lister)(nil), b.src)
}

func TestEventShape(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	item := b.fake.Upsert(map[string]any{"id": "pt_1", "first_name": "Jane", "phone": "+447700900123"})
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Len(t, pages, 1)
	require.Len(t, pages[0].Events, 1)
	ev := pages[0].Events[0]
	upd, err := time.Parse(time.RFC3339, item["updated_at"].(string))
	require.NoError(t, err)
	require.Equal(t, "pt_1@"+upd.UTC().Format(time.RFC3339Nano), ev.ID)
	require.Equal(t, poll.EventID("pt_1", upd), ev.ID)
	require.Equal(t, "item.updated", ev.Type, "default type")
	require.Equal(t, "pt_1", ev.Key, "default key is the id")
	require.True(t, upd.Equal(ev.OccurredAt))
	require.True(t, upd.Equal(pages[0].Newest))
	var payload map[string]any
	require.NoError(t, json.Unmarshal(ev.Payload, &payload))
	require.Equal(t, "Jane", payload["first_name"])
	require.Equal(t, "+447700900123", payload["phone"])
}

func TestTypeAndKeyExpressions(t *testing.T) {
	t.Parallel()
	b := setup(t, `
url: %URL%/items
items: body.items
event:
  id: item.id
  updated_at: item.updated_at
  type: 'item.archived_at != nil ? "patient.archived" : "patient.updated"'
  key: item.patient_id
`)
	b.fake.Upsert(map[string]any{"id": "a", "patient_id": "p1"})
	b.fake.Upsert(map[string]any{"id": "b", "patient_id": "p2", "archived_at": "2025-01-01T00:00:00Z"})
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Len(t, pages, 1)
	require.Equal(t, "patient.updated", pages[0].Events[0].Type)
	require.Equal(t, "p1", pages[0].Events[0].Key)
	require.Equal(t, "patient.archived", pages[0].Events[1].Type)
	require.Equal(t, "p2", pages[0].Events[1].Key)
}

// TestUpdatesAreNewEventsOnce simulates the reconciler's dedupe on event
// ids: a new item is one event, an update of it one more, and nothing else
// is new on the second run.
func TestUpdatesAreNewEventsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	seed(b.fake, 2)
	since := hourAgo()
	seen := map[string]bool{}
	accept := func(pages []connectors.Page) (fresh []string) {
		for _, id := range ids(pages) {
			if !seen[id] {
				seen[id] = true
				fresh = append(fresh, id)
			}
		}
		return fresh
	}

	first, err := list(t, b.src, since)
	require.NoError(t, err)
	require.Len(t, accept(first), 2)

	updated := b.fake.Upsert(map[string]any{"id": "pt_000", "first_name": "Janet"})
	b.fake.Upsert(map[string]any{"id": "pt_new"})
	second, err := list(t, b.src, since)
	require.NoError(t, err)
	fresh := accept(second)
	upd, _ := time.Parse(time.RFC3339, updated["updated_at"].(string))
	require.ElementsMatch(t, []string{poll.EventID("pt_000", upd), fresh[1]}, fresh, "the update and the new item, nothing else")
	require.True(t, strings.HasPrefix(fresh[1], "pt_new@"))
	require.Len(t, seen, 4, "pt_000 at two times, pt_001, pt_new")

	third, err := list(t, b.src, since)
	require.NoError(t, err)
	require.Empty(t, accept(third), "a third run with nothing changed finds nothing new")
}

func TestSameSinceSameIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	seed(b.fake, 15)
	since := hourAgo()
	a, err := list(t, b.src, since)
	require.NoError(t, err)
	c, err := list(t, b.src, since)
	require.NoError(t, err)
	require.Len(t, ids(a), 15)
	require.Equal(t, ids(a), ids(c))
}

func TestPagingNextInBody(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		cfg  string
		opts []pollfake.Option
	}{
		"absolute link": {cfg: basic},
		"relative link": {cfg: basic, opts: []pollfake.Option{pollfake.WithRelativeLinks()}},
		"cursor": {cfg: `
url: %URL%/items
items: body.items
event: {id: item.id, updated_at: item.updated_at}
paging: {next: body.next_cursor, cursor_param: cursor}
`},
		"link header via links": {cfg: `
url: %URL%/items
items: body.items
event: {id: item.id, updated_at: item.updated_at}
paging: {next: links.next}
`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.cfg, tc.opts...)
			seed(b.fake, 25)
			pages, err := list(t, b.src, hourAgo())
			require.NoError(t, err)
			require.Len(t, pages, 3)
			for i, want := range []int{10, 10, 5} {
				require.Len(t, pages[i].Events, want, "page %d", i+1)
			}
			got := ids(pages)
			require.Len(t, got, 25)
			for i, it := range b.fake.Items() {
				require.True(t, strings.HasPrefix(got[i], it["id"].(string)+"@"), "listing order")
			}
			reqs := b.fake.Requests()
			require.Len(t, reqs, 3)
			for i, r := range reqs {
				require.Equal(t, i+1, r.Page)
				require.NotEmpty(t, r.Query.Get("updated_since"), "the since filter stays on every page")
			}
		})
	}
}

func TestPagingPageNumbers(t *testing.T) {
	t.Parallel()
	const known = `
url: %URL%/items
items: body.items
event: {id: item.id, updated_at: item.updated_at}
paging: {page_param: page, per_page_param: per_page, per_page: 10}
`
	for name, tc := range map[string]struct {
		cfg      string
		items    int
		requests int
	}{
		"short last page":            {cfg: known, items: 25, requests: 3},
		"full last page then empty":  {cfg: known, items: 20, requests: 3},
		"no items":                   {cfg: known, items: 0, requests: 1},
		"page size unknown":          {cfg: strings.Replace(known, "per_page_param: per_page, per_page: 10", "start: 1", 1), items: 25, requests: 4},
		"page size known, not sent":  {cfg: strings.Replace(known, "per_page_param: per_page, ", "", 1), items: 25, requests: 3},
		"per_page_param default 100": {cfg: strings.Replace(known, ", per_page: 10", "", 1), items: 25, requests: 1},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.cfg)
			seed(b.fake, tc.items)
			pages, err := list(t, b.src, hourAgo())
			require.NoError(t, err)
			require.Len(t, ids(pages), tc.items)
			reqs := b.fake.Requests()
			require.Len(t, reqs, tc.requests)
			for i, r := range reqs {
				require.Equal(t, fmt.Sprint(i+1), r.Query.Get("page"))
			}
		})
	}
}

func TestLinkHeaderByDefault(t *testing.T) {
	t.Parallel()
	// A bare array (items defaults to body) and no paging config: the
	// Link header's rel="next" is followed.
	b := setup(t, `
url: '%URL%/items/array?per_page=10'
event: {id: item.id, updated_at: item.updated_at}
`)
	seed(b.fake, 25)
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Len(t, pages, 3)
	require.Len(t, ids(pages), 25)
	require.Len(t, b.fake.Requests(), 3)
}

func TestObjectResponseNeedsItems(t *testing.T) {
	t.Parallel()
	b := setup(t, `
url: '%URL%/items'
event: {id: item.id, updated_at: item.updated_at}
`)
	seed(b.fake, 1)
	_, err := list(t, b.src, hourAgo())
	require.ErrorContains(t, err, "set `items`")
}

func TestServerErrorOnPage3FailsTheRun(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	seed(b.fake, 35)
	b.fake.FailPage(3, stdhttp.StatusInternalServerError)
	pages, err := list(t, b.src, hourAgo())
	require.Error(t, err)
	require.ErrorContains(t, err, "500")
	require.ErrorContains(t, err, "page 3")
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 500, ce.HTTPStatus)
	require.Len(t, pages, 2, "pages before the failure were yielded")
	require.NotContains(t, err.Error(), "Internal Server Error\"", "no response body")
	require.NotContains(t, err.Error(), b.srv.URL, "no URL")
}

func TestRateLimitHonoured(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	seed(b.fake, 15)
	b.fake.RateLimitOnce(7 * time.Second)
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Len(t, ids(pages), 15)
	require.Equal(t, []time.Duration{7 * time.Second}, *b.waits, "waited Retry-After once")
	reqs := b.fake.Requests()
	require.Len(t, reqs, 3)
	require.Equal(t, stdhttp.StatusTooManyRequests, reqs[0].Status)
	require.Equal(t, 1, reqs[1].Page, "the same page again")

	b = setup(t, basic)
	b.fake.RateLimitOnce(0)
	_, err = list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Equal(t, []time.Duration{poll.DefaultRetryWait}, *b.waits, "no Retry-After: the default wait")
}

func TestRateLimitGivesUp(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	for range poll.MaxRateLimitRetries + 1 {
		b.fake.RateLimitOnce(time.Second)
	}
	_, err := list(t, b.src, hourAgo())
	require.Error(t, err)
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Len(t, *b.waits, poll.MaxRateLimitRetries)

	b = setup(t, basic)
	b.fake.RateLimitOnce(time.Hour)
	_, err = list(t, b.src, hourAgo())
	require.ErrorContains(t, err, "next run")
	require.Empty(t, *b.waits, "an hour is not waited out inside a run")
}

func TestRateLimitWaitEndsWithTheContext(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	b.fake.RateLimitOnce(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.src.List(ctx, connectors.ListParams{Since: hourAgo()}, func(connectors.Page) error { return nil })
	require.Error(t, err)
}

func TestBadItemFailsWithoutValues(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		event string
		want  []string
	}{
		"id expression errors": {
			event: `{id: 'int(item.last_name)', updated_at: item.updated_at}`,
			want:  []string{"items[1]", "event.id", "int(item.last_name)", "page 1"},
		},
		"id is empty": {
			event: `{id: item.mrn, updated_at: item.updated_at}`,
			want:  []string{"items[1]", "event.id", "item.mrn", "empty"},
		},
		"updated_at is not a time": {
			event: `{id: item.id, updated_at: item.first_name}`,
			want:  []string{"items[1]", "event.updated_at", "item.first_name", "RFC 3339"},
		},
		"updated_at is missing": {
			event: `{id: item.id, updated_at: item.modified}`,
			want:  []string{"items[1]", "event.updated_at", "empty"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, "url: %URL%/items\nitems: body.items\nevent: "+tc.event)
			// The first item is fine; the second is the bad one.
			now := time.Now().UTC().Format(time.RFC3339)
			b.fake.Put(map[string]any{"id": "1", "mrn": "MRN-1", "last_name": "7", "first_name": now, "modified": now, "updated_at": now})
			bad := map[string]any{"id": "2", "first_name": "Jane", "last_name": "Doe-Smithson", "phone": "+447700900123",
				"updated_at": time.Now().UTC().Add(time.Second).Format(time.RFC3339)}
			b.fake.Put(bad)
			pages, err := list(t, b.src, hourAgo())
			require.Error(t, err)
			require.Empty(t, pages, "nothing of the failing page is yielded")
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			connectortest.NoLeak(t, err, connectortest.StringLeaves(bad, 4)...)
			connectortest.NoLeak(t, err, "Doe", "Jane")
		})
	}
}

func TestVerifyRefusesWebhooks(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	err := b.src.Verify(&connectors.Request{Method: "POST", Header: stdhttp.Header{}, Body: []byte(`{"id":"x"}`)})
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.ErrorContains(t, err, "reconcile:")
	_, err = b.src.Parse(&connectors.Request{Body: []byte(`{}`)})
	require.ErrorIs(t, err, connectors.ErrMalformed)
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, basic+"auth: {bearer: "+token+"}\n", pollfake.WithBearer(token))
	seed(b.fake, 1)
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Len(t, ids(pages), 1)
	require.Equal(t, "Bearer "+token, b.fake.Requests()[0].Header.Get("Authorization"))

	b = setup(t, basic+"auth: {bearer: wrong-"+token+"}\nheaders: {X-Tenant: tenant-secret-42}\n", pollfake.WithBearer(token))
	_, err = list(t, b.src, hourAgo())
	require.Error(t, err)
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	require.ErrorContains(t, err, "401")
	connectortest.NoLeak(t, err, token, "tenant-secret-42")
}

// TestClinikoStyle lists the way docs/connectors/poll.md configures
// Cliniko: a q[] filter, Basic auth with the key as user, links.next.
func TestClinikoStyle(t *testing.T) {
	t.Parallel()
	b := setup(t, `
url: '%URL%/items?sort=updated_at&per_page=10'
since_param: q[]
since_template: 'updated_at:>{{since}}'
items: body.items
event: {id: item.id, updated_at: item.updated_at, type: '"patient.updated"'}
paging: {next: body.links.next}
auth: {basic: {username: `+apiKey+`, password: ""}}
headers: {User-Agent: "clinicbridge (it@example.clinic)"}
`, pollfake.WithBasic(apiKey, ""))
	b.fake.Put(map[string]any{"id": "old", "updated_at": "2020-01-01T00:00:00.000Z"})
	seed(b.fake, 12)
	since := time.Date(2024, 5, 6, 7, 8, 9, 500, time.UTC)
	pages, err := list(t, b.src, since)
	require.NoError(t, err)
	require.Len(t, ids(pages), 12, "the old item is filtered by the API")
	reqs := b.fake.Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, []string{"updated_at:>2024-05-06T07:08:09Z"}, reqs[0].Query["q[]"])
	require.Equal(t, "updated_at", reqs[0].Query.Get("sort"), "the URL's own query is kept")
	require.Equal(t, "clinicbridge (it@example.clinic)", reqs[0].Header.Get("User-Agent"))
	require.Equal(t, "patient.updated", pages[0].Events[0].Type)
}

func TestSinceFormats(t *testing.T) {
	t.Parallel()
	since := time.Date(2025, 1, 31, 9, 30, 15, 999_000_000, time.FixedZone("x", 3600))
	for format, want := range map[string]string{
		"":        "2025-01-31T08:30:15Z",
		"rfc3339": "2025-01-31T08:30:15Z",
		"unix":    "1738312215",
		"unix_ms": "1738312215999",
		"date":    "2025-01-31",
	} {
		t.Run("format "+format, func(t *testing.T) {
			t.Parallel()
			cfg := basic
			if format != "" {
				cfg += "since_format: " + format + "\n"
			}
			b := setup(t, cfg)
			_, err := list(t, b.src, since)
			require.NoError(t, err)
			require.Equal(t, want, b.fake.Requests()[0].Query.Get("updated_since"))
		})
	}
	t.Run("no since parameter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, basic+"since_param: \"\"\n")
		_, err := list(t, b.src, since)
		require.NoError(t, err)
		require.Empty(t, b.fake.Requests()[0].Query)
	})
	t.Run("zero since sends none", func(t *testing.T) {
		t.Parallel()
		b := setup(t, basic)
		_, err := list(t, b.src, time.Time{})
		require.NoError(t, err)
		require.Empty(t, b.fake.Requests()[0].Query)
	})
}

// TestItemsBeforeSinceAreLeftOut: an API that ignores the since parameter
// (or has none) must not turn its whole history into events.
func TestItemsBeforeSinceAreLeftOut(t *testing.T) {
	t.Parallel()
	b := setup(t, basic+"since_param: \"\"\n")
	b.fake.Put(map[string]any{"id": "ancient", "updated_at": "2019-03-04T05:06:07Z"})
	seed(b.fake, 3)
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	got := ids(pages)
	require.Len(t, got, 3)
	for _, id := range got {
		require.False(t, strings.HasPrefix(id, "ancient@"))
	}
}

func TestUnixUpdatedAtAndLargeIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, basic)
	now := time.Now().Unix()
	b.fake.Put(map[string]any{"id": json.Number("9007199254740993"), "updated_at": json.Number(fmt.Sprint(now)), "score": json.Number("1.50")})
	pages, err := list(t, b.src, hourAgo())
	require.NoError(t, err)
	require.Equal(t, []string{poll.EventID("9007199254740993", time.Unix(now, 0))}, ids(pages), "ids beyond 2^53 stay exact")
	require.Contains(t, string(pages[0].Events[0].Payload), `"id":9007199254740993`)
}

func TestNextLinkToAnotherHostIsRefused(t *testing.T) {
	t.Parallel()
	srv := listen127(t, stdhttp.HandlerFunc(func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(401)
			return
		}
		_, _ = fmt.Fprint(w, `{"items": [], "links": {"next": "http://localhost:1/steal"}}`)
	}))
	src, _ := build(t, strings.ReplaceAll(basic, "%URL%", srv.URL)+"auth: {bearer: "+token+"}\n")
	_, err := list(t, src, hourAgo())
	require.ErrorContains(t, err, "another host")
}

func TestNextLinkLoopAndMaxPages(t *testing.T) {
	t.Parallel()
	srv := listen127(t, stdhttp.HandlerFunc(func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		_, _ = fmt.Fprint(w, `{"items": [], "links": {"next": "/items?updated_since=x"}}`)
	}))
	src, _ := build(t, "url: "+srv.URL+"/items?updated_since=x\nsince_param: \"\"\nitems: body.items\nevent: {id: item.id, updated_at: item.updated_at}\npaging: {next: body.links.next}\n")
	_, err := list(t, src, hourAgo())
	require.ErrorContains(t, err, "same URL")

	b := setup(t, basic+"max_pages: 2\n")
	seed(b.fake, 25)
	pages, err := list(t, b.src, hourAgo())
	require.ErrorContains(t, err, "max_pages (2)")
	require.Len(t, pages, 2)
}

func TestNotJSONAndYieldErrors(t *testing.T) {
	t.Parallel()
	srv := listen127(t, stdhttp.HandlerFunc(func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		_, _ = fmt.Fprint(w, `<html>Jane Example's chart</html>`)
	}))
	src, _ := build(t, strings.ReplaceAll(basic, "%URL%", srv.URL))
	_, err := list(t, src, hourAgo())
	require.ErrorContains(t, err, "not JSON")
	connectortest.NoLeak(t, err, "Jane")

	b := setup(t, basic)
	seed(b.fake, 25)
	stop := fmt.Errorf("store down")
	calls := 0
	err = b.src.List(context.Background(), connectors.ListParams{Since: hourAgo()}, func(connectors.Page) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
	require.Len(t, b.fake.Requests(), 1, "no page is fetched after yield fails")
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	const ev = "event: {id: item.id, updated_at: item.updated_at}\n"
	for name, tc := range map[string]struct {
		cfg  string
		want string
	}{
		"url scheme":            {"url: ftp://x/items\n" + ev, "url:"},
		"url missing":           {ev, "url: required"},
		"event.id missing":      {"url: http://x/\nevent: {updated_at: item.updated_at}\n", "event.id: required"},
		"event.updated_at":      {"url: http://x/\nevent: {id: item.id}\n", "event.updated_at: required"},
		"event.type bad expr":   {"url: http://x/\nevent: {id: item.id, updated_at: item.updated_at, type: patient.updated}\n", "event.type:"},
		"items bad expr":        {"url: http://x/\nitems: 'body.('\n" + ev, "items:"},
		"since_format":          {"url: http://x/\nsince_format: iso\n" + ev, "since_format:"},
		"since_template":        {"url: http://x/\nsince_template: 'updated_at:>'\n" + ev, "since_template:"},
		"since_template no par": {"url: http://x/\nsince_param: \"\"\nsince_template: '>{{since}}'\n" + ev, "since_template:"},
		"paging both":           {"url: http://x/\npaging: {next: body.next, page_param: page}\n" + ev, "paging:"},
		"paging.next":           {"url: http://x/\npaging: {next: 'headers +'}\n" + ev, "paging.next:"},
		"paging.per_page alone": {"url: http://x/\npaging: {per_page: 10}\n" + ev, "paging.per_page:"},
		"paging.cursor_param":   {"url: http://x/\npaging: {cursor_param: c}\n" + ev, "paging.cursor_param:"},
		"timeout":               {"url: http://x/\ntimeout: -1s\n" + ev, "timeout:"},
		"max_pages":             {"url: http://x/\nmax_pages: 0\n" + ev, "max_pages:"},
		"headers":               {"url: http://x/\nheaders: {'bad header': v}\n" + ev, "headers:"},
		"auth":                  {"url: http://x/\nauth: {header: {name: 'X Key', value: v}}\n" + ev, "auth.header.name:"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var doc yaml.Node
			require.NoError(t, yaml.Unmarshal([]byte(tc.cfg), &doc))
			_, err := poll.Type().Build(doc.Content[0], connectors.Env{Name: "clinic"})
			require.ErrorContains(t, err, tc.want)
		})
	}

	// Strict decoding: an unknown key and a missing required one.
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("url: http://x/\nsince_parm: q\n"), &doc))
	errs := config.Check("c.yaml", doc.Content[0], poll.Type().Fields, "connectors.clinic")
	require.Len(t, errs, 2)
	require.ErrorContains(t, errs[0], "connectors.clinic.since_parm")
	require.ErrorContains(t, errs[0], `did you mean "since_param"`)
	require.ErrorContains(t, errs[1], `missing required key "event"`)
}

func TestFakeLogsWithoutValues(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var log strings.Builder
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return log.Write(p)
	})
	srv := listen127(t, poll.Type().Fake(w))
	src, _ := build(t, strings.ReplaceAll(basic, "%URL%", srv.URL))
	pages, err := list(t, src, hourAgo())
	require.NoError(t, err)
	require.Len(t, ids(pages), 3, "the fake starts with sample items")
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, log.String(), "GET /items page=1 items=3 -> 200")
	require.NotContains(t, log.String(), "Ada")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
