package calendlyfake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/calendly/calendlyfake"
)

var now = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

func get(t *testing.T, srv *httptest.Server, rawURL, token string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(b, &body))
	return resp, body
}

func TestAPI(t *testing.T) {
	t.Parallel()
	fake := calendlyfake.New(calendlyfake.WithClock(func() time.Time { return now }))
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	var uris []string
	for i := 0; i < 5; i++ {
		inv, err := fake.Create(calendlyfake.Booking{Start: now.Add(time.Duration(24+i) * time.Hour)})
		require.NoError(t, err)
		uris = append(uris, inv.URI())
	}
	newURI, err := fake.Reschedule(uris[0], now.Add(96*time.Hour))
	require.NoError(t, err)

	org := url.QueryEscape(calendlyfake.DefaultOrganization)
	resp, _ := get(t, srv, srv.URL+"/scheduled_events?organization="+org, "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, body := get(t, srv, srv.URL+"/scheduled_events?organization="+url.QueryEscape("https://api.calendly.com/organizations/OTHER"), calendlyfake.DefaultToken)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, "Permission Denied", body["title"])
	resp, _ = get(t, srv, srv.URL+"/scheduled_events?organization="+org+"&count=101", calendlyfake.DefaultToken)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// Paging by next_page, as a client follows it.
	next := srv.URL + "/scheduled_events?count=4&status=active&organization=" + org
	var seen []string
	for next != "" {
		resp, body = get(t, srv, next, calendlyfake.DefaultToken)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "500", resp.Header.Get("X-RateLimit-Limit"))
		for _, e := range body["collection"].([]any) {
			seen = append(seen, e.(map[string]any)["uri"].(string))
		}
		next, _ = body["pagination"].(map[string]any)["next_page"].(string)
	}
	require.Len(t, seen, 5, "the rescheduled-away event is canceled and filtered out")

	inv, ok := fake.Invitee(uris[0])
	require.True(t, ok)
	require.Equal(t, calendlyfake.StatusCanceled, inv.Status)
	require.True(t, inv.Rescheduled)
	require.Equal(t, newURI, inv.NewInvitee)

	nw, ok := fake.Invitee(newURI)
	require.True(t, ok)
	_, body = get(t, srv, srv.URL+"/scheduled_events/"+nw.EventUUID+"/invitees", calendlyfake.DefaultToken)
	items := body["collection"].([]any)
	require.Len(t, items, 1)
	require.Equal(t, uris[0], items[0].(map[string]any)["old_invitee"])
	resp, _ = get(t, srv, srv.URL+"/scheduled_events/nope/invitees", calendlyfake.DefaultToken)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	ds := fake.Deliveries()
	require.Len(t, ds, 7)
	require.Equal(t, "invitee.canceled", ds[5].Event)
	require.Equal(t, "invitee.created", ds[6].Event)
}

func TestWebhookSignature(t *testing.T) {
	t.Parallel()
	var n int
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// assert, not require: this runs on the server's goroutine.
		assert.Equal(t, calendlyfake.Sign("k3y", now, b), r.Header.Get("Calendly-Webhook-Signature"))
		n++
	}))
	t.Cleanup(hook.Close)
	fake := calendlyfake.New(calendlyfake.WithClock(func() time.Time { return now }), calendlyfake.WithWebhook(hook.URL, "k3y"))
	inv, err := fake.Create(calendlyfake.Booking{})
	require.NoError(t, err)
	require.NoError(t, fake.Cancel(inv.URI(), "ill"))
	require.Equal(t, 2, n)
	require.Error(t, fake.Cancel(inv.URI(), "again"))
	for _, d := range fake.Deliveries() {
		require.Equal(t, http.StatusOK, d.Status)
	}
}
