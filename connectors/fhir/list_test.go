package fhir_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

func listAll(t *testing.T, c *fhir.Connector, p connectors.ListParams) ([]connectors.Page, []connectors.Event) {
	t.Helper()
	var pages []connectors.Page
	var events []connectors.Event
	require.NoError(t, c.List(ctx(t), p, func(pg connectors.Page) error {
		pages = append(pages, pg)
		events = append(events, pg.Events...)
		return nil
	}))
	return pages, events
}

// 250 resources come back in three pages, each once; a second listing
// from the newest time lists only what changed after it.
func TestListPages(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	src := build(t, `{base_url: "`+base+`", auth: {bearer: `+apiToken+`}, resources: [Patient, Appointment]}`, connectors.Env{})
	stored := map[string]map[string]any{}
	for i := range 250 {
		p, err := fake.Create(patient(fmt.Sprintf("MRN-%03d", i), "Family"))
		require.NoError(t, err)
		stored[p["id"].(string)] = p
	}

	pages, events := listAll(t, src, connectors.ListParams{})
	require.Len(t, pages, 3)
	require.Len(t, pages[0].Events, 100)
	require.Len(t, pages[2].Events, 50)
	ids := map[string]bool{}
	var newest time.Time
	for _, ev := range events {
		require.False(t, ids[ev.ID], "listed twice: %s", ev.ID)
		ids[ev.ID] = true
		id := strings.Split(ev.Key, "/")[1]
		checkEvent(t, ev, stored[id])
		if ev.OccurredAt.After(newest) {
			newest = ev.OccurredAt
		}
	}
	require.Len(t, ids, 250)
	require.True(t, pages[2].Newest.Equal(newest))
	for i := 1; i < len(pages); i++ {
		require.True(t, pages[i].Newest.After(pages[i-1].Newest), "sorted by _lastUpdated")
	}

	// The paging links are opaque: no offsets in plain sight.
	var searches []fhirfake.Recorded
	for _, r := range fake.Requests() {
		if r.Method == http.MethodGet {
			searches = append(searches, r)
		}
	}
	require.Len(t, searches, 4, "two Patient pages after the first, one empty Appointment search")
	q, err := url.ParseQuery(searches[0].Query)
	require.NoError(t, err)
	require.Equal(t, "_lastUpdated", q.Get("_sort"))
	require.Equal(t, "100", q.Get("_count"))
	next, err := url.ParseQuery(searches[1].Query)
	require.NoError(t, err)
	require.Len(t, next, 1, "only an opaque token")
	require.Regexp(t, `^[0-9a-f]{32}$`, next.Get("_getpages"))

	_, events = listAll(t, src, connectors.ListParams{Since: newest})
	require.Empty(t, events, "nothing changed after the newest")

	// Change 5 and add 3: exactly those come back.
	n := 0
	for id, p := range stored {
		if n == 5 {
			break
		}
		p = cloneRes(p)
		p["birthDate"] = "1990-01-0" + fmt.Sprint(n+1)
		_, err := fake.Update(p)
		require.NoError(t, err)
		stored[id] = p
		n++
	}
	for i := range 3 {
		_, err := fake.Create(patient(fmt.Sprintf("NEW-%d", i), "New"))
		require.NoError(t, err)
	}
	pages, events = listAll(t, src, connectors.ListParams{Since: newest})
	require.Len(t, events, 8)
	var updates, creates int
	for _, ev := range events {
		switch ev.Type {
		case "Patient.update":
			updates++
			require.True(t, strings.HasSuffix(ev.ID, "/_history/2"))
		case "Patient.create":
			creates++
		}
	}
	require.Equal(t, 5, updates)
	require.Equal(t, 3, creates)
	require.True(t, pages[len(pages)-1].Newest.After(newest))
}

func cloneRes(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Listed events have the ids notifications gave, so reconciliation dedupes.
func TestListIDsMatchNotifications(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	src := connector(t, base, newState())
	rc := startReceiver(t, src)
	_, err := fake.Subscribe(fhirfake.Subscription{Endpoint: rc.URL, Criteria: "Appointment", Style: fhirfake.StyleBackportR4,
		Header: []string{"Authorization: Bearer " + webhookSecret}})
	require.NoError(t, err)
	for _, s := range []string{"booked", "pending", "proposed"} {
		_, err := fake.Create(appointment(s))
		require.NoError(t, err)
	}
	var notified []string
	for _, r := range rc.all() {
		require.NoError(t, r.err)
		for _, ev := range r.in.Events {
			notified = append(notified, ev.ID)
		}
	}
	_, events := listAll(t, src, connectors.ListParams{Types: []string{"Appointment.create"}})
	var listed []string
	for _, ev := range events {
		listed = append(listed, ev.ID)
	}
	require.ElementsMatch(t, notified, listed)

	// Types narrow the listing to the resource types they name.
	before := len(fake.Requests())
	_, events = listAll(t, src, connectors.ListParams{Types: []string{"DiagnosticReport.update"}})
	require.Empty(t, events)
	reqs := fake.Requests()[before:]
	require.Len(t, reqs, 1)
	require.Equal(t, "/DiagnosticReport", reqs[0].Path)
}

// 429 and 5xx are retried, honouring Retry-After; a failure on a later
// page does not restart or duplicate the listing.
func TestListRetries(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	src := build(t, `{base_url: "`+base+`", auth: {bearer: `+apiToken+`}, resources: [Patient]}`, connectors.Env{})
	var waits []time.Duration
	src.SetSleep(func(d time.Duration) { waits = append(waits, d) })
	for i := range 250 {
		_, err := fake.Create(patient(fmt.Sprintf("MRN-%03d", i), "Family"))
		require.NoError(t, err)
	}
	fake.Fail(fhirfake.Failure{Status: http.StatusTooManyRequests, RetryAfter: "3", Page: 1})
	fake.Fail(fhirfake.Failure{Status: http.StatusInternalServerError, Page: 2})
	fake.Fail(fhirfake.Failure{Status: http.StatusConflict, IssueCode: "transient", Page: 3})
	pages, events := listAll(t, src, connectors.ListParams{})
	require.Len(t, pages, 3)
	require.Len(t, events, 250)
	require.Len(t, waits, 3)
	require.Equal(t, 3*time.Second, waits[0], "Retry-After honoured")

	// A failure that persists ends the run with a classified error.
	waits = nil
	fake.Fail(fhirfake.Failure{Status: http.StatusServiceUnavailable, Page: 2, Times: -1})
	err := src.List(ctx(t), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Error(t, err)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Len(t, waits, 3, "four attempts")
}

// An OperationOutcome error ends the listing with its diagnostics; a long
// Retry-After is not waited out.
func TestListErrors(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	src := build(t, `{base_url: "`+base+`", auth: {bearer: `+apiToken+`}, resources: [Patient]}`, connectors.Env{})
	var waits []time.Duration
	src.SetSleep(func(d time.Duration) { waits = append(waits, d) })
	_, err := fake.Create(patient("MRN-1", "Family"))
	require.NoError(t, err)

	fake.Fail(fhirfake.Failure{Status: http.StatusBadRequest, IssueCode: "not-supported", Diagnostics: "Unknown search parameter _lastUpdated"})
	err = src.List(ctx(t), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "listing Patient")
	require.Contains(t, err.Error(), "not-supported")
	require.Contains(t, err.Error(), "Unknown search parameter _lastUpdated")

	fake.Fail(fhirfake.Failure{Status: http.StatusTooManyRequests, RetryAfter: "3600"})
	err = src.List(ctx(t), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Equal(t, time.Hour, connectors.RetryAfterOf(err))
	require.Empty(t, waits)

	// Wrong credentials are not retried.
	bad := build(t, `{base_url: "`+base+`", auth: {bearer: wrong-token}, resources: [Patient]}`, connectors.Env{})
	err = bad.List(ctx(t), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	connectortest.NoLeak(t, err, "wrong-token")

	// Nothing to list without resources.
	none := build(t, `{base_url: "`+base+`"}`, connectors.Env{})
	require.Error(t, none.List(ctx(t), connectors.ListParams{}, func(connectors.Page) error { return nil }))
}

// A next link to another origin is refused: the token would go there.
func TestListRefusesForeignNextLink(t *testing.T) {
	t.Parallel()
	foreign := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write([]byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"https://elsewhere.example/fhir?page=2"}],` +
			`"entry":[{"resource":{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2026-11-02T09:00:00Z"}}}]}`))
	})
	base := serve(t, foreign)
	src := build(t, `{base_url: "`+base+`", auth: {bearer: `+apiToken+`}, resources: [Patient]}`, connectors.Env{})
	err := src.List(ctx(t), connectors.ListParams{}, func(connectors.Page) error { return nil })
	require.ErrorContains(t, err, "outside base_url")
}
