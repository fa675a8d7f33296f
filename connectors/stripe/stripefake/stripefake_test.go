package stripefake_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
)

const key = "sk_test_fakeKey0001"

// testClient has its own connection pool: httptest.Server.Close closes
// http.DefaultTransport's idle connections under parallel tests.
var testClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

func listen127(t *testing.T, h http.Handler) *httptest.Server {
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

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type listResp struct {
	Object  string `json:"object"`
	HasMore bool   `json:"has_more"`
	Data    []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Created int64  `json:"created"`
	} `json:"data"`
	Error *struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Param   string `json:"param"`
		Message string `json:"message"`
	} `json:"error"`
}

func get(t *testing.T, base, auth string, q url.Values) (int, listResp) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/events?"+q.Encode(), nil)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := testClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out listResp
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func TestList(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)}
	f := stripefake.New(stripefake.WithAPIKey(key), stripefake.WithClock(c.now))
	srv := listen127(t, f)
	ctx := context.Background()
	var ids []string
	for i, typ := range []string{"charge.succeeded", "charge.refunded", "invoice.paid", "payment_intent.succeeded"} {
		ev, err := f.Emit(ctx, typ, nil)
		require.NoError(t, err)
		require.True(t, ev.Dropped, "no webhook set")
		ids = append(ids, ev.ID)
		if i == 0 {
			c.add(31 * 24 * time.Hour) // the first event falls out of the 30-day window
		}
		c.add(time.Minute)
	}
	bearer := "Bearer " + key
	t0 := c.now().Add(-3 * time.Minute).Unix()

	_, all := get(t, srv.URL, bearer, url.Values{})
	require.Len(t, all.Data, 3, "events older than 30 days are not listed")
	require.Equal(t, ids[3], all.Data[0].ID, "newest first")

	_, r := get(t, srv.URL, bearer, url.Values{"type": {"charge.*"}})
	require.Len(t, r.Data, 1)
	require.Equal(t, "charge.refunded", r.Data[0].Type)

	_, r = get(t, srv.URL, bearer, url.Values{"types[]": {"invoice.paid", "charge.refunded"}, "created[gt]": {itoa(t0)}})
	require.Len(t, r.Data, 1)
	require.Equal(t, ids[2], r.Data[0].ID)

	_, r = get(t, srv.URL, bearer, url.Values{"limit": {"1"}})
	require.True(t, r.HasMore)
	_, r = get(t, srv.URL, bearer, url.Values{"limit": {"1"}, "starting_after": {ids[3]}})
	require.Equal(t, ids[2], r.Data[0].ID)
	_, r = get(t, srv.URL, bearer, url.Values{"limit": {"5"}, "ending_before": {ids[1]}})
	require.Len(t, r.Data, 2)
	require.Equal(t, ids[3], r.Data[0].ID)
	require.False(t, r.HasMore)

	_, r = get(t, srv.URL, bearer, url.Values{"delivery_success": {"false"}})
	require.Len(t, r.Data, 3, "no webhook was delivered")

	many := url.Values{}
	for i := 0; i < 21; i++ {
		many.Add("types[]", "x"+itoa(int64(i)))
	}
	for _, q := range []url.Values{many, {"limit": {"101"}}, {"type": {"a"}, "types[]": {"b"}}, {"starting_after": {"evt_nope"}}, {"created[gte]": {"soon"}}} {
		status, r := get(t, srv.URL, bearer, q)
		require.Equal(t, http.StatusBadRequest, status, "%v", q)
		require.Equal(t, "invalid_request_error", r.Error.Type)
		require.NotEmpty(t, r.Error.Param)
	}

	status, r := get(t, srv.URL, "", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, r.Error.Message, "You did not provide an API key")
	status, r = get(t, srv.URL, "Bearer sk_test_wrongwrong9876", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, "Invalid API Key provided: ****9876", r.Error.Message)

	f.FailNext(stripefake.Failure{Status: 429, RetryAfter: 3 * time.Second})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/events", nil)
	req.Header.Set("Authorization", bearer)
	resp, err := testClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 429, resp.StatusCode)
	require.Equal(t, "3", resp.Header.Get("Retry-After"))

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/v1/events/"+ids[2], nil)
	req.Header.Set("Authorization", bearer)
	resp, err = testClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(b), ids[2])
}

func TestControlEndpoints(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 1)
	hook := listen127(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header }))
	var log strings.Builder
	var mu sync.Mutex
	f := stripefake.New(stripefake.WithLog(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return log.Write(p)
	})))
	srv := listen127(t, f)
	post := func(path, body string) *http.Response {
		resp, err := testClient.Post(srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		return resp
	}
	require.Equal(t, http.StatusNoContent, post("/_fake/webhook", `{"url":"`+hook.URL+`","secret":"whsec_x"}`).StatusCode)
	resp := post("/_fake/emit", `{"type":"invoice.paid"}`)
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	resp.Body.Close()
	require.Equal(t, float64(200), out["status"])
	require.Contains(t, (<-got).Get("Stripe-Signature"), ",v1=")
	mu.Lock()
	require.Contains(t, log.String(), "invoice.paid")
	require.NotContains(t, log.String(), "whsec_x")
	mu.Unlock()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
