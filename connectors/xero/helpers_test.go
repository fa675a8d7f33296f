package xero_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/xero"
	"github.com/clinicbridge/clinicbridge/connectors/xero/xerofake"
)

const (
	clientID     = "CLINICBRIDGE-TEST-CLIENT"
	clientSecret = "xero-client-secret-7d1f0c2a9b"
	tenant       = "6b9a1a3e-6d0e-4d0b-9a43-0f6d2c5e8a11"
)

// testClient has its own connection pool: httptest.Server.Close closes
// http.DefaultTransport's idle connections under parallel tests.
var testClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

// memState is an in-memory connectors.State. failPut makes Put fail.
type memState struct {
	mu      sync.Mutex
	m       map[string][]byte
	puts    int
	failPut bool
}

func newState() *memState { return &memState{m: map[string][]byte{}} }

func (s *memState) Get(_ context.Context, k string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return append([]byte(nil), v...), ok, nil
}

func (s *memState) Put(_ context.Context, k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failPut {
		return errors.New("disk full")
	}
	s.puts++
	s.m[k] = append([]byte(nil), v...)
	return nil
}

func (s *memState) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

func (s *memState) setFailPut(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failPut = v
}

// vclock is a virtual clock: sleeping moves it forward at once.
type vclock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *vclock { return &vclock{t: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)} }

func (c *vclock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *vclock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *vclock) SleepUntil(ctx context.Context, until time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until.After(c.t) {
		c.t = until
	}
	return ctx.Err()
}

// listen127 serves h on 127.0.0.1 only.
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

// bundle is a fake Xero, a connector config pointing at it, and a state.
type bundle struct {
	fake  *xerofake.Server
	url   string
	state *memState
	seed  string
	clock *vclock
}

func setup(t *testing.T, opts ...xerofake.Option) *bundle {
	t.Helper()
	b := &bundle{state: newState(), clock: newClock()}
	base := []xerofake.Option{xerofake.WithClient(clientID, clientSecret), xerofake.WithTenant(tenant, "Northside Clinic Ltd"), xerofake.WithClock(b.clock.Now)}
	b.fake = xerofake.New(append(base, opts...)...)
	b.url = listen127(t, b.fake).URL
	b.seed = b.fake.IssueRefreshToken()
	return b
}

func (b *bundle) config() string {
	return "{client_id: " + clientID + ", client_secret: " + clientSecret + ", tenant_id: " + tenant +
		", refresh_token: " + b.seed + ", base_url: '" + b.url + "', token_url: '" + b.url + xerofake.TokenPath +
		"', authorize_url: '" + b.url + xerofake.AuthorizePath + "'}"
}

func (b *bundle) node(t *testing.T) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(b.config()), &doc))
	return doc.Content[0]
}

// sink builds the connector through Type().Build as the loader does.
func (b *bundle) sink(t *testing.T) connectors.Sink {
	t.Helper()
	n := b.node(t)
	require.Empty(t, config.Check("c.yaml", n, xero.Type().Fields, "connectors.books"))
	s, err := xero.Type().Build(n, connectors.Env{Name: "books", State: b.state, Now: b.clock.Now})
	require.NoError(t, err)
	return s.(connectors.Sink)
}

// sinkWith builds with options (limits, virtual sleeping).
func (b *bundle) sinkWith(t *testing.T, opts ...xero.Option) *xero.Sink {
	t.Helper()
	var c xero.Config
	require.NoError(t, b.node(t).Decode(&c))
	s, err := xero.New(&c, connectors.Env{Name: "books", State: b.state, Now: b.clock.Now}, opts...)
	require.NoError(t, err)
	return s
}

func (b *bundle) storedRefreshToken(t *testing.T) string {
	t.Helper()
	v, ok, _ := b.state.Get(context.Background(), xero.TokenStateKey)
	require.True(t, ok, "a token is stored")
	s := string(v)
	i := strings.Index(s, `"refresh_token":"`)
	require.GreaterOrEqual(t, i, 0)
	s = s[i+len(`"refresh_token":"`):]
	return s[:strings.IndexByte(s, '"')]
}

func payment(invoiceID string, amount float64, key string) connectors.Delivery {
	return connectors.Delivery{
		Action: "create_payment",
		Document: map[string]any{
			"Invoice":   map[string]any{"InvoiceID": invoiceID},
			"Account":   map[string]any{"Code": "090"},
			"Amount":    amount,
			"Date":      "2026-11-02",
			"Reference": "Stripe pi_3QclinicTest0001 Jane Example",
		},
		IdempotencyKey: key,
		DeliveryID:     "dlv-" + key,
		EventID:        "evt_1QclinicTest0001",
		Route:          "stripe-to-xero",
	}
}

func ctx30(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
