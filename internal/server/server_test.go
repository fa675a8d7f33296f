package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

const secret = "whsec_dGVzdC1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZS10ZXN0cw=="

// memAcceptor dedupes in memory, or fails like an unreachable store.
type memAcceptor struct {
	mu   sync.Mutex
	seen map[string]bool
	down bool
}

func (m *memAcceptor) Accept(_ context.Context, evs []connectors.Event) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, store.ErrUnavailable
	}
	out := make([]bool, len(evs))
	for i, ev := range evs {
		k := ev.Source + "\x00" + ev.ID
		out[i] = !m.seen[k]
		m.seen[k] = true
	}
	return out, nil
}

func (m *memAcceptor) UpdateReceipts(context.Context, []connectors.ReceiptUpdate) error {
	if m.down {
		return store.ErrUnavailable
	}
	return nil
}

func hooks(t testing.TB) (*server.Hooks, *memAcceptor) {
	var node yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(`webhook_secret: "`+secret+`"`), &node))
	inst, err := webhook.Type().Build(node.Content[0], connectors.Env{Name: "inbox"})
	require.NoError(t, err)
	acc := &memAcceptor{seen: map[string]bool{}}
	h := &server.Hooks{
		Sources: func(name string) (connectors.Source, bool) {
			if name == "inbox" {
				return inst.(connectors.Source), true
			}
			return nil, false
		},
		Accept:  acc,
		Ready:   func(context.Context) error { return nil },
		MaxBody: 1 << 10,
		Log:     zerolog.Nop(),
		Metrics: metrics.New(nil),
	}
	return h, acc
}

func signed(t testing.TB, id, body string) *http.Request {
	h, err := webhook.SignStandard(secret, id, time.Now(), []byte(body))
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodPost, "/hooks/inbox", strings.NewReader(body))
	r.Header = h
	return r
}

func TestHookStatuses(t *testing.T) {
	t.Parallel()
	h, acc := hooks(t)
	handler := h.Handler()
	do := func(r *http.Request) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w
	}
	body := `{"type":"a.b","data":{}}`
	w := do(signed(t, "e1", body))
	require.Equal(t, 200, w.Code)
	require.JSONEq(t, `{"accepted":1,"duplicates":0}`, w.Body.String())
	w = do(signed(t, "e1", body))
	require.Equal(t, 200, w.Code)
	require.JSONEq(t, `{"accepted":0,"duplicates":1}`, w.Body.String())

	bad := signed(t, "e2", body)
	bad.Header.Set("webhook-signature", "v1,AAAA")
	require.Equal(t, 401, do(bad).Code)
	require.Equal(t, 400, do(signed(t, "e3", `[1,2]`)).Code)
	require.Equal(t, 413, do(signed(t, "e4", `{"type":"a","pad":"`+strings.Repeat("x", 2000)+`"}`)).Code)
	require.Equal(t, 404, do(httptest.NewRequest(http.MethodPost, "/hooks/other", strings.NewReader(body))).Code)

	acc.down = true
	w = do(signed(t, "e5", body))
	require.Equal(t, 503, w.Code)
	require.Equal(t, "5", w.Header().Get("Retry-After"))
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	a := &server.Admin{Tokens: []config.AdminToken{{Name: "admin", Token: "s3cret", Scopes: []string{"admin"}}}, Log: zerolog.Nop(), Metrics: metrics.New(nil)}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "bearer s3cret", "Bearer s3cret2"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 401, resp.StatusCode, auth)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
}

func TestAdminListenNeedsATokenOffLoopback(t *testing.T) {
	t.Parallel()
	require.NoError(t, server.CheckAdminListen("127.0.0.1:8081", 0))
	require.NoError(t, server.CheckAdminListen("localhost:8081", 0))
	require.NoError(t, server.CheckAdminListen("[::1]:8081", 0))
	require.Error(t, server.CheckAdminListen("0.0.0.0:8081", 0))
	require.Error(t, server.CheckAdminListen(":8081", 0))
	require.NoError(t, server.CheckAdminListen("0.0.0.0:8081", 1))
}

// FuzzHook throws arbitrary requests at the webhook handler: it never
// panics, answers only the statuses of guarantee 4, and stores nothing it
// did not authenticate.
func FuzzHook(f *testing.F) {
	f.Add("e1", `{"type":"a.b","data":{}}`, "", true)
	f.Add("e2", `{"type":1}`, "", true)
	f.Add("", `{}`, "v1,AAAA", false)
	f.Add("e3", `{"type":"x"`, "v1,", false)
	f.Add("e4", "\x00\xff", "v2,abc v1,abc", false)
	f.Fuzz(func(t *testing.T, id, body, sig string, sign bool) {
		h, acc := hooks(t)
		var r *http.Request
		if sign && id != "" {
			r = signed(t, id, body)
		} else {
			r = httptest.NewRequest(http.MethodPost, "/hooks/inbox", strings.NewReader(body))
			r.Header.Set("webhook-id", id)
			r.Header.Set("webhook-timestamp", "1700000000")
			r.Header.Set("webhook-signature", sig)
		}
		w := httptest.NewRecorder()
		h.Handler().ServeHTTP(w, r)
		switch w.Code {
		case 200, 400, 401, 413:
		default:
			t.Fatalf("unexpected status %d", w.Code)
		}
		if !sign && len(acc.seen) > 0 {
			t.Fatal("stored an event from an unsigned request")
		}
	})
}
