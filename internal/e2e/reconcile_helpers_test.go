package e2e

// Helpers for reconcile_test.go. Every name here starts with recon so that
// the other files of package e2e (written by others) cannot collide with it.

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/http/httpfake"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// reconAgent is one in-process agent (every shipped connector type, SQLite
// in a temp dir) with a recording http sink. It can be stopped and started
// again on the same config and database.
type reconAgent struct {
	dir    string // the config's folder; the database is dir/data/cb.db
	path   string // the config file
	hooks  string // http://host:port of the webhook listener
	admin  *server.Client
	sink   *httpfake.Server
	logs   *reconLogs
	cancel context.CancelFunc
	done   chan error
	agent  *app.Agent
}

type reconLogs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *reconLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *reconLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// reconStartAgent writes cfg ({{SINK}} replaced by the sink's URL; a SQLite
// store section appended) and runs an agent on it until the test ends.
func reconStartAgent(t *testing.T, cfg string) *reconAgent {
	t.Helper()
	a := &reconAgent{dir: t.TempDir(), sink: httpfake.New(), logs: &reconLogs{}}
	sinkSrv := httptest.NewServer(a.sink)
	t.Cleanup(sinkSrv.Close)
	cfg = strings.ReplaceAll(cfg, "{{SINK}}", sinkSrv.URL) + "store: {driver: sqlite, path: ./data/cb.db}\n"
	a.path = filepath.Join(a.dir, "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(a.path, []byte(cfg), 0o600))
	a.start(t)
	t.Cleanup(func() { a.stop(t) })
	return a
}

// reconStartAgentFile runs an agent on an existing config file (its sink is
// whatever the config says; a.sink stays unused).
func reconStartAgentFile(t *testing.T, path string) *reconAgent {
	t.Helper()
	a := &reconAgent{dir: filepath.Dir(path), path: path, sink: httpfake.New(), logs: &reconLogs{}}
	a.start(t)
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *reconAgent) start(t *testing.T) {
	t.Helper()
	log := zerolog.New(a.logs)
	ag, err := app.Load(a.path, all.Registry(), config.Options{}, log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	a.agent, a.cancel, a.done = ag, cancel, make(chan error, 1)
	ready := make(chan [2]net.Addr, 1)
	go func() {
		a.done <- ag.Run(ctx, log, app.RunOptions{ShutdownTimeout: 5 * time.Second, Ready: func(h, ad net.Addr) { ready <- [2]net.Addr{h, ad} }})
	}()
	select {
	case addrs := <-ready:
		a.hooks = "http://" + addrs[0].String()
		a.admin = server.NewClient(addrs[1].String(), "")
	case err := <-a.done:
		ag.Close()
		a.cancel = nil
		t.Fatalf("agent did not start: %v\n%s", err, a.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not start in time")
	}
}

// stop shuts the agent down and releases its database (idempotent).
func (a *reconAgent) stop(t *testing.T) {
	t.Helper()
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.cancel = nil
	select {
	case err := <-a.done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Error("agent did not stop")
	}
	a.agent.Close()
}

// watermark reads reconciler name's watermark from the database itself; the
// agent must be stopped (SQLite serves one agent at a time).
func (a *reconAgent) watermark(t *testing.T, name string) time.Time {
	t.Helper()
	require.Nil(t, a.cancel, "stop the agent before opening its store")
	ctx := context.Background()
	st, err := store.Open(ctx, store.Params{Path: filepath.Join(a.dir, "data", "cb.db")})
	require.NoError(t, err)
	defer st.Close()
	wm, err := st.Watermark(ctx, name)
	require.NoError(t, err)
	return wm
}

// run runs reconciler name through the admin API, as `clinicbridge reconcile
// run NAME` does. A run that failed midway is still a report (200).
func (a *reconAgent) run(t *testing.T, name string) store.Run {
	t.Helper()
	var out struct{ Run store.Run }
	require.NoError(t, a.admin.Do(context.Background(), "POST", "/api/reconcile/"+name+"/run", nil, nil, &out))
	return out.Run
}

// runs lists the recorded runs, newest first (GET /api/reconcile/runs).
func (a *reconAgent) runs(t *testing.T) []store.Run {
	t.Helper()
	var out struct{ Runs []store.Run }
	require.NoError(t, a.admin.Do(context.Background(), "GET", "/api/reconcile/runs", nil, nil, &out))
	return out.Runs
}

// waitSink waits until the sink has acted n times (2xx, not replays).
func (a *reconAgent) waitSink(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return a.sink.Unique() >= n }, 30*time.Second, 10*time.Millisecond,
		"the sink got %d deliveries, want %d\n%s", a.sink.Unique(), n, a.logs)
}

// delivered counts the requests the sink received, replays included, by the
// event id the route maps into the document and by Idempotency-Key.
func (a *reconAgent) delivered(t *testing.T) (byEvent, byKey map[string]int) {
	t.Helper()
	byEvent, byKey = map[string]int{}, map[string]int{}
	for _, r := range a.sink.Requests() {
		var doc struct {
			EventID string `json:"event_id"`
		}
		require.NoError(t, json.Unmarshal(r.Body, &doc))
		byEvent[doc.EventID]++
		byKey[r.Header.Get(httpfake.DefaultIdempotencyHeader)]++
	}
	return byEvent, byKey
}

// requireOnce checks that every id in want reached the sink exactly once,
// under one idempotency key each, and that nothing else did.
func (a *reconAgent) requireOnce(t *testing.T, want []string) {
	t.Helper()
	byEvent, byKey := a.delivered(t)
	for _, id := range want {
		require.Equal(t, 1, byEvent[id], "event %s reached the sink %d times", id, byEvent[id])
	}
	require.Len(t, byEvent, len(want), "the sink got events nobody expected")
	require.Len(t, byKey, len(want), "one idempotency key per event")
	for k, n := range byKey {
		require.Equal(t, 1, n, "idempotency key %s was sent %d times", k, n)
	}
	require.Zero(t, a.sink.Replays())
}

// reconLate is an http.Handler whose real handler is set later: a fake's
// base URL goes into the agent's config, and the fake needs the agent's
// webhook URL, known once the agent listens.
type reconLate struct{ h atomic.Pointer[http.Handler] }

func (l *reconLate) set(h http.Handler) { l.h.Store(&h) }

func (l *reconLate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := l.h.Load()
	if h == nil {
		http.Error(w, "fake not ready", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// reconStartLate serves a reconLate on loopback for the test's duration.
func reconStartLate(t *testing.T) (*reconLate, string) {
	t.Helper()
	l := &reconLate{}
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	return l, srv.URL
}

// reconSumRecovered adds up Recovered over runs.
func reconSumRecovered(runs []store.Run) int {
	n := 0
	for _, r := range runs {
		n += r.Recovered
	}
	return n
}
