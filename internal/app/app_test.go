package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/http/httpfake"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/testutil"
)

const secret = "whsec_dGVzdC1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZS10ZXN0cw=="

// bundle is one running agent with a recording sink.
type bundle struct {
	path   string // the config file
	hooks  string // http://host:port
	admin  *server.Client
	sink   *httpfake.Server
	logs   *testutil.Buffer
	cancel context.CancelFunc
	done   chan error
}

const baseConfig = `version: 1
server: {listen: 127.0.0.1:0, max_body: 4KiB}
admin: {listen: 127.0.0.1:0}
log: {level: debug}
connectors:
  inbox: {type: webhook, webhook_secret: "` + secret + `"}
  sink: {type: http, url: "{{SINK}}/deliver/{{ doc.id }}", timeout: 5s}
routes:
  - name: forward
    from: inbox
    events: [booking.created]
    when: 'payload.data.skip != true'
    map:
      fields:
        id: {from: payload.data.id, required: true}
        status: {from: payload.data.status, lookup: {ok: fine}, default: unknown}
    to: sink
    retry: {max_attempts: 5, backoff: [200ms]}
`

// start runs an agent on cfg (with {{SINK}} filled in) with every shipped connector type.
func start(t *testing.T, cfg string, storeYAML string) *bundle {
	t.Helper()
	return startWith(t, all.Registry(), cfg, storeYAML)
}

func startWith(t *testing.T, reg *connectors.Registry, cfg string, storeYAML string) *bundle {
	t.Helper()
	b := &bundle{sink: httpfake.New(), logs: &testutil.Buffer{}, done: make(chan error, 1)}
	sinkSrv := httptest.NewServer(b.sink)
	t.Cleanup(sinkSrv.Close)
	dir := t.TempDir()
	if storeYAML == "" {
		storeYAML = "store: {driver: sqlite, path: ./data/cb.db}\n"
	}
	cfg = strings.ReplaceAll(cfg, "{{SINK}}", sinkSrv.URL) + storeYAML
	path := filepath.Join(dir, "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	b.path = path
	log := zerolog.New(b.logs)
	a, err := app.Load(path, reg, config.Options{}, log)
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	ready := make(chan [2]net.Addr, 1)
	go func() {
		b.done <- a.Run(ctx, log, app.RunOptions{ShutdownTimeout: 5 * time.Second, Ready: func(h, ad net.Addr) { ready <- [2]net.Addr{h, ad} }})
	}()
	select {
	case addrs := <-ready:
		b.hooks = "http://" + addrs[0].String()
		b.admin = server.NewClient(addrs[1].String(), "")
	case err := <-b.done:
		t.Fatalf("agent did not start: %v\n%s", err, b.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not start in time")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-b.done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return b
}

// send posts a Standard Webhooks-signed event.
func (b *bundle) send(t *testing.T, id string, body string) *http.Response {
	t.Helper()
	h, err := webhook.SignStandard(secret, id, time.Now(), []byte(body))
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, b.hooks+"/hooks/inbox", strings.NewReader(body))
	require.NoError(t, err)
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func booking(id string, extra string) string {
	return fmt.Sprintf(`{"type":"booking.created","data":{"id":%q,"status":"ok"%s}}`, id, extra)
}

func (b *bundle) delivery(t *testing.T, eventID string) store.Delivery {
	t.Helper()
	var out struct{ Deliveries []store.Delivery }
	require.NoError(t, b.admin.Do(context.Background(), "GET", "/api/deliveries", nil, nil, &out))
	for _, d := range out.Deliveries {
		if d.EventID == eventID {
			return d
		}
	}
	return store.Delivery{}
}

func (b *bundle) waitState(t *testing.T, eventID string, want store.State) store.Delivery {
	t.Helper()
	var d store.Delivery
	require.Eventually(t, func() bool {
		d = b.delivery(t, eventID)
		return d.State == want
	}, 20*time.Second, 20*time.Millisecond, "delivery of %s never reached %s (last: %+v)", eventID, want, d)
	return d
}

func TestWebhookGuarantees(t *testing.T) {
	t.Parallel()
	b := start(t, baseConfig, "")

	// Delivered once, with the mapped document and an idempotency key.
	require.Equal(t, http.StatusOK, b.send(t, "evt_1", booking("b1", "")).StatusCode)
	b.waitState(t, "evt_1", store.Succeeded)
	reqs := b.sink.Requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "/deliver/b1", reqs[0].Path)
	require.JSONEq(t, `{"id":"b1","status":"fine"}`, string(reqs[0].Body))
	require.NotEmpty(t, reqs[0].Header.Get("Idempotency-Key"))

	// Duplicate webhook: 2xx, not delivered again.
	require.Equal(t, http.StatusOK, b.send(t, "evt_1", booking("b1", "")).StatusCode)
	// A later event proves the queue moved on past the duplicate.
	require.Equal(t, http.StatusOK, b.send(t, "evt_2", booking("b2", "")).StatusCode)
	b.waitState(t, "evt_2", store.Succeeded)
	require.Len(t, b.sink.Requests(), 2)

	// Filtered out: skipped, never sent.
	require.Equal(t, http.StatusOK, b.send(t, "evt_skip", booking("b3", `,"skip":true`)).StatusCode)
	d := b.waitState(t, "evt_skip", store.Skipped)
	require.Equal(t, "when: false", d.LastError)

	// Bad signature: 401 and nothing stored.
	body := booking("b4", "")
	h, err := webhook.SignStandard("whsec_"+"d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==", "evt_bad", time.Now(), []byte(body))
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodPost, b.hooks+"/hooks/inbox", strings.NewReader(body))
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	err = b.admin.Do(context.Background(), "GET", "/api/events/inbox/evt_bad", nil, nil, nil)
	require.ErrorContains(t, err, "not found")

	// Malformed JSON (correctly signed): 400.
	require.Equal(t, http.StatusBadRequest, b.send(t, "evt_malformed", `{"type": "booking.created", `).StatusCode)
	// Oversize: 413.
	require.Equal(t, http.StatusRequestEntityTooLarge, b.send(t, "evt_big", booking("b5", `,"pad":"`+strings.Repeat("x", 5000)+`"`)).StatusCode)
	// Unknown connector: 404.
	resp, err = http.Post(b.hooks+"/hooks/nope", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	// A sink is not a source either.
	resp, err = http.Post(b.hooks+"/hooks/sink", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestRetriesDeadAndReplay(t *testing.T) {
	t.Parallel()
	b := start(t, baseConfig, "")

	// 500 then 200: delivered on a retry.
	b.sink.Script(httpfake.Response{Status: 500})
	b.send(t, "evt_500", booking("r1", ""))
	d := b.waitState(t, "evt_500", store.Succeeded)
	require.Equal(t, 2, d.Attempts)

	// 429 with Retry-After: 2 -> the next attempt waits at least 2 s.
	b.sink.Script(httpfake.Response{Status: 429, Header: http.Header{"Retry-After": {"2"}}})
	b.send(t, "evt_429", booking("r2", ""))
	b.waitState(t, "evt_429", store.Succeeded)
	var times []time.Time
	for _, r := range b.sink.Requests() {
		if r.Path == "/deliver/r2" {
			times = append(times, r.At)
		}
	}
	require.Len(t, times, 2)
	require.GreaterOrEqual(t, times[1].Sub(times[0]), 2*time.Second, "Retry-After was not honoured")

	// 400: dead at once, with the reason.
	b.sink.Script(httpfake.Response{Status: 400})
	b.send(t, "evt_400", booking("r3", ""))
	d = b.waitState(t, "evt_400", store.Dead)
	require.Equal(t, 1, d.Attempts)
	require.Contains(t, d.LastError, "400")

	// Replay after the sink is fixed (it answers 200 by default again).
	var out struct{ Replayed []string }
	require.NoError(t, b.admin.Do(context.Background(), "POST", "/api/replay", nil, server.ReplayRequest{IDs: []string{d.ID}}, &out))
	require.Equal(t, []string{d.ID}, out.Replayed)
	b.waitState(t, "evt_400", store.Succeeded)
}

func TestStoreUnreachableAnswers503(t *testing.T) {
	t.Parallel()
	url := testutil.PostgresURL(t)
	schema := testutil.TempSchema(t, url)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	conn.Close(ctx)

	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	proxy := testutil.NewProxy(t, fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	proxied := fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&search_path=%s&connect_timeout=2", cfg.User, proxy.Addr(), cfg.Database, schema)
	b := start(t, baseConfig, "store: {driver: postgres, url: \""+proxied+"\"}\n")

	require.Equal(t, http.StatusOK, b.send(t, "evt_pg1", booking("p1", "")).StatusCode)
	b.waitState(t, "evt_pg1", store.Succeeded)

	proxy.Cut()
	resp := b.send(t, "evt_pg2", booking("p2", ""))
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	r, err := http.Get(b.hooks + "/readyz")
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode)

	// Back again: it recovers by itself and the sender's retry is accepted.
	proxy.Restore()
	require.Eventually(t, func() bool {
		return b.send(t, "evt_pg2", booking("p2", "")).StatusCode == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond)
	b.waitState(t, "evt_pg2", store.Succeeded)
}

const needsConfig = `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
connectors:
  inbox: {type: webhook, webhook_secret: "` + secret + `"}
  sink: {type: http, url: "{{SINK}}/{{ doc.kind }}"}
routes:
  - name: invoices
    from: inbox
    events: [invoice.finalized]
    key: payload.data.invoice
    map: {fields: {kind: {value: invoice}, invoice: {from: payload.data.invoice}}}
    to: sink
  - name: payments
    from: inbox
    events: [payment.succeeded]
    key: payload.data.payment
    needs: {route: invoices, key: payload.data.invoice, wait: 3s}
    map:
      fields:
        kind: {value: payment}
        invoice_external_id: {from: needs.external_id, required: true}
    to: sink
`

func TestNeedsWaitsForTheOtherRoute(t *testing.T) {
	t.Parallel()
	b := start(t, needsConfig, "")
	// The payment arrives first and waits for its invoice.
	b.send(t, "pay_1", `{"type":"payment.succeeded","data":{"payment":"p1","invoice":"in_1"}}`)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, store.Pending, b.delivery(t, "pay_1").State)
	require.Contains(t, b.delivery(t, "pay_1").LastError, "waiting for route invoices")
	b.send(t, "inv_1", `{"type":"invoice.finalized","data":{"invoice":"in_1"}}`)
	inv := b.waitState(t, "inv_1", store.Succeeded)
	b.waitState(t, "pay_1", store.Succeeded)
	var paid []byte
	for _, r := range b.sink.Requests() {
		if r.Path == "/payment" {
			paid = r.Body
		}
	}
	require.JSONEq(t, `{"kind":"payment","invoice_external_id":"`+inv.ExternalID+`"}`, string(paid))

	// A payment whose invoice never comes is dead after the wait, with the reason.
	b.send(t, "pay_2", `{"type":"payment.succeeded","data":{"payment":"p2","invoice":"in_404"}}`)
	d := b.waitState(t, "pay_2", store.Dead)
	require.Contains(t, d.LastError, "needs: route invoices had no success for this key within 3s")
}

// TestStaleUpdatesAreSkipped: for an action that overwrites the target's
// state, an event older than one already delivered for the key is skipped.
func TestStaleUpdatesAreSkipped(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	reg := all.Registry()
	reg.Register(connectors.Type{
		Name: "portal", Doc: "test", Actions: []connectors.Action{{Name: "upsert", Overwrites: true}},
		Build: func(*yaml.Node, connectors.Env) (any, error) {
			return sinkFunc(func(_ context.Context, d connectors.Delivery) (connectors.Receipt, error) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, d.Document["name"].(string))
				return connectors.Receipt{ExternalID: "x"}, nil
			}), nil
		},
	})
	b := startWith(t, reg, `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
connectors:
  inbox: {type: webhook, webhook_secret: "`+secret+`", event: {key: payload.data.patient}}
  portal: {type: portal}
routes:
  - name: sync
    from: inbox
    map: {fields: {name: {from: payload.data.name}}}
    to: portal
`, "")
	require.Equal(t, 200, b.send(t, "v2", `{"type":"Patient.update","timestamp":"2026-11-28T10:00:00Z","data":{"patient":"p1","name":"newer"}}`).StatusCode, b.logs.String())
	b.waitState(t, "v2", store.Succeeded)
	b.send(t, "v1", `{"type":"Patient.update","timestamp":"2026-11-28T09:00:00Z","data":{"patient":"p1","name":"older"}}`)
	d := b.waitState(t, "v1", store.Skipped)
	require.Equal(t, "stale", d.LastError)
	b.send(t, "v3", `{"type":"Patient.update","timestamp":"2026-11-28T11:00:00Z","data":{"patient":"p1","name":"newest"}}`)
	b.waitState(t, "v3", store.Succeeded)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"newer", "newest"}, got)
}

func TestAdminScopesAndAudit(t *testing.T) {
	t.Parallel()
	cfg := strings.Replace(baseConfig, "admin: {listen: 127.0.0.1:0}", `admin:
  listen: 127.0.0.1:0
  token: admin-token-0123456789
  tokens:
    - {name: viewer, token: viewer-token-0123456789, scopes: [read]}
    - {name: oncall, token: oncall-token-0123456789, scopes: [replay]}`, 1)
	b := start(t, cfg, "")
	b.admin.Token = "admin-token-0123456789"
	b.sink.Script(httpfake.Response{Status: 400})
	b.send(t, "evt_dead", booking("x1", ""))
	d := b.waitState(t, "evt_dead", store.Dead)
	ctx := context.Background()
	as := func(token string) *server.Client {
		return server.NewClient(strings.TrimPrefix(b.admin.Base, "http://"), token)
	}

	// A read token sees, and cannot replay.
	require.NoError(t, as("viewer-token-0123456789").Do(ctx, "GET", "/api/deliveries", nil, nil, nil))
	err := as("viewer-token-0123456789").Do(ctx, "POST", "/api/replay", nil, server.ReplayRequest{IDs: []string{d.ID}}, nil)
	require.ErrorContains(t, err, `token "viewer" lacks the replay scope`)
	require.ErrorContains(t, as("nope").Do(ctx, "GET", "/api/deliveries", nil, nil, nil), "missing or wrong admin token")

	// The on-call token replays; the audit log says who.
	require.NoError(t, as("oncall-token-0123456789").Do(ctx, "POST", "/api/replay", nil, server.ReplayRequest{IDs: []string{d.ID}}, nil))
	var log struct{ Entries []store.AuditEntry }
	require.NoError(t, as("viewer-token-0123456789").Do(ctx, "GET", "/api/audit", nil, nil, &log))
	require.Len(t, log.Entries, 1)
	require.Equal(t, "oncall", log.Entries[0].Actor)
	require.Equal(t, "replay", log.Entries[0].Action)
	require.Contains(t, log.Entries[0].Target, d.ID)
	var verify struct {
		OK      bool
		Entries int
	}
	require.NoError(t, as("admin-token-0123456789").Do(ctx, "GET", "/api/audit/verify", nil, nil, &verify))
	require.True(t, verify.OK)
	require.Equal(t, 1, verify.Entries)
}
