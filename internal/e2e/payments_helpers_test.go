package e2e

// Helpers for the payments tests (Stripe in, Xero out). Every name here
// starts with "pay" so it cannot collide with the other suites' helpers in
// this package.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
	"github.com/clinicbridge/clinicbridge/connectors/xero/xerofake"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// payExampleDir is the example the payments tests run: its config, with
// addresses pointed at the fakes, and its mappings as they are.
const payExampleDir = "../../examples/stripe-to-xero"

const (
	payTenant     = xerofake.DefaultTenantID // the example's tenant_id
	payAdminToken = "payments-admin-token-0123456789"
	payNeedsWait  = 3 * time.Second
	// Route names in the example.
	payInvoiceRoute     = "xero-invoices"
	payPaymentRoute     = "xero-payments"
	payInvoicePaidRoute = "xero-invoice-payments"
	payRefundRoute      = "xero-credit-notes"
)

// payHTTP has its own connection pool: httptest.Server.Close closes
// http.DefaultTransport's idle connections under parallel tests.
var payHTTP = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 30 * time.Second}

type paySyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *paySyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *paySyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// payOptions vary the environment.
type payOptions struct {
	// xero are extra options for the Xero fake (client and tenant are set).
	xero []xerofake.Option
	// pausedRecheck shortens how often paused deliveries look again.
	pausedRecheck time.Duration
}

// payEnv is the example's agent between a Stripe fake and a Xero fake.
type payEnv struct {
	dir       string // holds the config and the store
	path      string // the agent's config
	secret    string // Stripe webhook secret (the example's demo secret)
	stripe    *stripefake.Server
	stripeURL string
	xero      *xerofake.Server
	xeroURL   string
	xeroLog   *paySyncBuffer
	seed      string // refresh_token in config
	logs      *paySyncBuffer
	opts      payOptions
	agent     *payAgent
	agentsMu  sync.Mutex
}

// payAgent is one running agent.
type payAgent struct {
	a      *app.Agent
	hooks  string // http://host:port
	admin  *server.Client
	cancel context.CancelFunc
	done   chan error
}

func payExampleFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(payExampleDir, name))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// payListen serves h on 127.0.0.1 only.
func payListen(t *testing.T, h http.Handler) *httptest.Server {
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

// newPayEnv starts both fakes and an agent on the example's config.
func newPayEnv(t *testing.T, opts payOptions) *payEnv {
	t.Helper()
	e := &payEnv{dir: t.TempDir(), logs: &paySyncBuffer{}, xeroLog: &paySyncBuffer{}, opts: opts}
	e.secret = payExampleFile(t, "demo.secret")

	e.stripe = stripefake.New()
	e.stripeURL = payListen(t, e.stripe).URL

	clientID, clientSecret := payExampleXeroClient(t)
	xopts := append([]xerofake.Option{
		xerofake.WithClient(clientID, clientSecret),
		xerofake.WithTenant(payTenant, "Northside Clinic Ltd"),
		xerofake.WithLog(e.xeroLog),
	}, opts.xero...)
	e.xero = xerofake.New(xopts...)
	e.xeroURL = payListen(t, e.xero).URL
	e.seed = e.xero.IssueRefreshToken()

	e.path = filepath.Join(e.dir, "clinicbridge.yaml")
	cfg := payConfig(t, "127.0.0.1:0", e.stripeURL, e.xeroURL, e.seed)
	require.NoError(t, os.WriteFile(e.path, cfg, 0o600))
	e.start(t)
	t.Cleanup(func() { e.stop(t) })
	return e
}

func payExampleXeroClient(t *testing.T) (id, secret string) {
	t.Helper()
	var doc struct {
		Connectors struct {
			Books struct {
				ClientID string `yaml:"client_id"`
			} `yaml:"books"`
		} `yaml:"connectors"`
	}
	raw, err := os.ReadFile(filepath.Join(payExampleDir, "clinicbridge.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	require.NotEmpty(t, doc.Connectors.Books.ClientID)
	return doc.Connectors.Books.ClientID, payExampleFile(t, "xero-client.secret")
}

// payConfig is the example's config with its addresses pointed at the
// fakes, relative paths made absolute (so the config can live in a temp
// folder), an admin token, a seed refresh token, the needs wait cut to
// payNeedsWait and short retry backoffs. Routes, connectors' other keys and
// mappings are the example's own.
func payConfig(t *testing.T, adminListen, stripeURL, xeroURL, seed string) []byte {
	t.Helper()
	exampleDir, err := filepath.Abs(payExampleDir)
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join(exampleDir, "clinicbridge.yaml"))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &doc))

	obj := func(m map[string]any, key string) map[string]any {
		v, ok := m[key].(map[string]any)
		require.True(t, ok, "the example's config has no %s object", key)
		return v
	}
	abs := func(v string) string {
		if rest, ok := strings.CutPrefix(v, "${file:"); ok {
			return "${file:" + filepath.Join(exampleDir, rest)
		}
		return v
	}
	doc["server"] = map[string]any{"listen": "127.0.0.1:0"}
	doc["admin"] = map[string]any{"listen": adminListen, "token": payAdminToken}
	doc["store"] = map[string]any{"driver": "sqlite", "path": "./data/cb.db"}
	doc["log"] = map[string]any{"level": "debug"}

	conns := obj(doc, "connectors")
	st := obj(conns, "stripe")
	require.Equal(t, "stripe", st["type"])
	st["base_url"] = stripeURL
	for k, v := range st {
		if s, ok := v.(string); ok {
			st[k] = abs(s)
		}
	}
	books := obj(conns, "books")
	require.Equal(t, "xero", books["type"])
	books["base_url"] = xeroURL
	books["token_url"] = xeroURL + xerofake.TokenPath
	books["authorize_url"] = xeroURL + xerofake.AuthorizePath
	books["refresh_token"] = seed
	for k, v := range books {
		if s, ok := v.(string); ok {
			books[k] = abs(s)
		}
	}

	routes, ok := doc["routes"].([]any)
	require.True(t, ok)
	names := map[string]bool{}
	for _, r := range routes {
		route := r.(map[string]any)
		names[route["name"].(string)] = true
		route["map"] = filepath.Join(exampleDir, route["map"].(string))
		retry, _ := route["retry"].(map[string]any)
		if retry == nil {
			retry = map[string]any{}
		}
		retry["backoff"] = []any{"100ms", "200ms"}
		route["retry"] = retry
		if needs, ok := route["needs"].(map[string]any); ok {
			needs["wait"] = payNeedsWait.String()
		}
	}
	for _, n := range []string{payInvoiceRoute, payPaymentRoute, payInvoicePaidRoute, payRefundRoute} {
		require.True(t, names[n], "the example has no route %s", n)
	}
	out, err := yaml.Marshal(doc)
	require.NoError(t, err)
	return out
}

// start loads the config and runs an agent on it (a fresh Load each time,
// as a restarted process would).
func (e *payEnv) start(t *testing.T) {
	t.Helper()
	log := zerolog.New(e.logs).With().Timestamp().Logger()
	a, err := app.Load(e.path, all.Registry(), config.Options{}, log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ag := &payAgent{a: a, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan [2]net.Addr, 1)
	go func() {
		ag.done <- a.Run(ctx, log, app.RunOptions{
			ShutdownTimeout: 5 * time.Second,
			PausedRecheck:   e.opts.pausedRecheck,
			Ready:           func(h, ad net.Addr) { ready <- [2]net.Addr{h, ad} },
		})
	}()
	select {
	case addrs := <-ready:
		ag.hooks = "http://" + addrs[0].String()
		ag.admin = server.NewClient(addrs[1].String(), payAdminToken)
	case err := <-ag.done:
		cancel()
		a.Close()
		t.Fatalf("agent did not start: %v\n%s", err, e.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not start in time")
	}
	e.agentsMu.Lock()
	e.agent = ag
	e.agentsMu.Unlock()
	e.stripe.SetWebhook(ag.hooks+"/hooks/stripe", e.secret)
}

// stop ends the running agent, if any, as SIGTERM would.
func (e *payEnv) stop(t *testing.T) {
	t.Helper()
	e.agentsMu.Lock()
	ag := e.agent
	e.agent = nil
	e.agentsMu.Unlock()
	if ag == nil {
		return
	}
	ag.cancel()
	select {
	case err := <-ag.done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Error("agent did not stop")
	}
	require.NoError(t, ag.a.Close())
}

func (e *payEnv) admin() *server.Client {
	e.agentsMu.Lock()
	defer e.agentsMu.Unlock()
	return e.agent.admin
}

func (e *payEnv) hooks() string {
	e.agentsMu.Lock()
	defer e.agentsMu.Unlock()
	return e.agent.hooks
}

// emit makes the Stripe fake create an event and post its webhook; the
// agent must take it (2xx).
func (e *payEnv) emit(t *testing.T, typ string, object map[string]any) stripefake.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ev, err := e.stripe.Emit(ctx, typ, object)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, ev.Status, "the agent refused the webhook of %s\n%s", typ, e.logs.String())
	return ev
}

// deliveries returns the event's deliveries (one per route that took it).
func (e *payEnv) deliveries(t *testing.T, eventID string) []store.Delivery {
	t.Helper()
	var out struct{ Deliveries []store.Delivery }
	err := e.admin().Do(context.Background(), http.MethodGet, "/api/events/stripe/"+url.PathEscape(eventID), nil, nil, &out)
	if err != nil && strings.Contains(err.Error(), "not found") {
		return nil
	}
	require.NoError(t, err)
	return out.Deliveries
}

// delivery is the event's one delivery (zero before it exists).
func (e *payEnv) delivery(t *testing.T, eventID string) store.Delivery {
	t.Helper()
	ds := e.deliveries(t, eventID)
	require.LessOrEqual(t, len(ds), 1, "event %s has %d deliveries", eventID, len(ds))
	if len(ds) == 0 {
		return store.Delivery{}
	}
	return ds[0]
}

func (e *payEnv) waitState(t *testing.T, eventID string, want store.State) store.Delivery {
	t.Helper()
	var d store.Delivery
	require.Eventually(t, func() bool {
		d = e.delivery(t, eventID)
		return d.State == want
	}, 25*time.Second, 25*time.Millisecond, "delivery of %s never reached %s (last: %+v)\n%s", eventID, want, d, e.logs.String())
	return d
}

// xeroCalls are the API calls the Xero fake received for one collection.
func (e *payEnv) xeroCalls(collection string) []xerofake.Recorded {
	var out []xerofake.Recorded
	for _, r := range e.xero.Requests() {
		if r.Path == xerofake.APIPrefix+"/"+collection {
			out = append(out, r)
		}
	}
	return out
}

// invoice creates a finalized Stripe invoice and waits for its Xero
// invoice; it returns the Xero InvoiceID.
func (e *payEnv) invoice(t *testing.T, id, number, currency string, lines ...int) string {
	t.Helper()
	ev := e.emit(t, "invoice.finalized", payInvoice(id, number, currency, lines...))
	d := e.waitState(t, ev.ID, store.Succeeded)
	require.NotEmpty(t, d.ExternalID)
	return d.ExternalID
}

// payNow is the unix time objects are created at.
func payNow() int64 { return time.Now().Unix() }

// payInvoice is a finalized Stripe invoice (API version basil) with one
// line per amount, in minor units.
func payInvoice(id, number, currency string, lines ...int) map[string]any {
	var data []any
	total := 0
	for i, amount := range lines {
		total += amount
		data = append(data, map[string]any{
			"id": fmt.Sprintf("il_%s_%d", id, i), "object": "line_item", "amount": amount, "currency": currency,
			"description": fmt.Sprintf("Physiotherapy session %d", i+1), "quantity": 1,
			"pricing": map[string]any{"type": "price_details", "unit_amount_decimal": fmt.Sprint(amount)},
		})
	}
	return map[string]any{
		"id": id, "object": "invoice", "account_country": "GB", "account_name": "Northside Clinic Ltd",
		"amount_due": total, "amount_paid": 0, "amount_remaining": total, "billing_reason": "manual",
		"collection_method": "send_invoice", "created": payNow(), "currency": currency,
		"customer": "cus_" + id, "customer_email": "patient@example.org", "customer_name": "Patient " + id,
		"due_date": payNow() + 14*86400, "livemode": false, "metadata": map[string]any{"clinic_patient_id": "P" + id},
		"number": number, "status": "open", "subtotal": total, "total": total,
		"lines": map[string]any{"object": "list", "data": data, "has_more": false, "total_count": len(data)},
	}
}

// payIntent is a succeeded PaymentIntent for the Stripe invoice invoiceID
// (in its metadata, as the example expects), amount in minor units.
func payIntent(id, invoiceID, currency string, amount int) map[string]any {
	meta := map[string]any{"clinic_patient_id": "P123"}
	if invoiceID != "" {
		meta["invoice_id"] = invoiceID
	}
	return map[string]any{
		"id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0, "amount_received": amount,
		"capture_method": "automatic", "created": payNow(), "currency": currency, "customer": "cus_fake01",
		"description": "Payment at reception", "latest_charge": "ch_" + strings.TrimPrefix(id, "pi_"),
		"livemode": false, "metadata": meta, "payment_method_types": []any{"card_present"}, "status": "succeeded",
	}
}

func payJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// payNum reads a JSON number from the fake's objects.
func payNum(t *testing.T, v any) float64 {
	t.Helper()
	f, ok := v.(float64)
	require.True(t, ok, "want a number, got %T %v", v, v)
	return f
}

// payFind returns the object whose field equals id.
func payFind(t *testing.T, list []map[string]any, field, id string) map[string]any {
	t.Helper()
	for _, m := range list {
		if m[field] == id {
			return m
		}
	}
	t.Fatalf("no object with %s %s among %d", field, id, len(list))
	return nil
}
