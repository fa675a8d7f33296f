package e2e

// Helpers for fhir_test.go. Every name here starts with fhir (or FHIR) so
// that other files of package e2e can keep their own helpers.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
	"github.com/clinicbridge/clinicbridge/connectors/http/httpfake"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/testutil"
)

const (
	// fhirBearer is the webhook_secret of the fhir sources: the fake's
	// Subscriptions send it as `Authorization: Bearer <it>`.
	fhirBearer = "e2e-fhir-subscription-bearer-0123456789"
	// fhirPortalSecret is the Standard Webhooks secret of the portal's
	// webhook source.
	fhirPortalSecret = "whsec_ZTJlLXBvcnRhbC1zZWNyZXQtZm9yLWZoaXItdGVzdHM="
	// fhirWait bounds every wait for the agent.
	fhirWait = 20 * time.Second
	fhirTick = 20 * time.Millisecond
)

// fhirAgent is one real in-process agent (app.Load + Run, every shipped
// connector type), reached over its public and admin listeners.
type fhirAgent struct {
	hooks string // http://127.0.0.1:port
	admin *server.Client
	logs  *testutil.Buffer
	// bearer is what notifications to fhir sources carry (their webhook_secret).
	bearer string
}

// startFHIRAgent writes cfg (plus a SQLite store) to a temp folder and runs
// an agent on it until the test ends.
func startFHIRAgent(t *testing.T, cfg string) *fhirAgent {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg+"store: {driver: sqlite, path: ./data/cb.db}\n"), 0o600))
	return startFHIRAgentFile(t, path)
}

// startFHIRAgentFile runs an agent on the config file at path until the
// test ends. The agent's log is printed if the test fails (or when
// FHIR_E2E_LOG is set).
func startFHIRAgentFile(t *testing.T, path string) *fhirAgent {
	t.Helper()
	a := &fhirAgent{logs: &testutil.Buffer{}, bearer: fhirBearer}
	log := zerolog.New(a.logs)
	ag, err := app.Load(path, all.Registry(), config.Options{}, log)
	require.NoError(t, err, "config %s", path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan [2]net.Addr, 1)
	go func() {
		done <- ag.Run(ctx, log, app.RunOptions{ShutdownTimeout: 5 * time.Second, Ready: func(h, ad net.Addr) { ready <- [2]net.Addr{h, ad} }})
	}()
	select {
	case addrs := <-ready:
		a.hooks = "http://" + addrs[0].String()
		a.admin = server.NewClient(addrs[1].String(), "")
	case err := <-done:
		ag.Close()
		t.Fatalf("agent did not start: %v\n%s", err, a.logs.String())
	case <-time.After(fhirWait):
		t.Fatal("agent did not start in time")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
		ag.Close()
		if t.Failed() || os.Getenv("FHIR_E2E_LOG") != "" {
			t.Logf("agent log:\n%s", a.logs.String())
		}
	})
	return a
}

// newFHIRServer serves a fhirfake on loopback until the test ends.
func newFHIRServer(t *testing.T, opts ...fhirfake.Option) (*fhirfake.Server, string) {
	t.Helper()
	fake := fhirfake.New(opts...)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fake.SetBaseURL(srv.URL)
	return fake, srv.URL
}

// newFHIRHTTPSink serves an httpfake (a recording endpoint answering 200).
func newFHIRHTTPSink(t *testing.T) (*httpfake.Server, string) {
	t.Helper()
	fake := httpfake.New()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

// fhirCopyExample copies examples/name (without data/ and README.md) to a
// temp folder, applies the old, new replacement pairs to its
// clinicbridge.yaml (listen addresses, base URLs of the fakes) and returns
// the copied config's path. Secrets stay the example's demo files.
func fhirCopyExample(t *testing.T, name string, oldnew ...string) string {
	t.Helper()
	src := fhirExample(t, name)
	dst := filepath.Join(t.TempDir(), name)
	require.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if rel == "data" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if rel == "README.md" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if rel == "clinicbridge.yaml" {
			replaced := strings.NewReplacer(oldnew...).Replace(string(b))
			for i := 0; i+1 < len(oldnew); i += 2 {
				if !strings.Contains(string(b), oldnew[i]) {
					return fmt.Errorf("%s/clinicbridge.yaml no longer contains %q", name, oldnew[i])
				}
			}
			b = []byte(replaced)
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	}))
	return filepath.Join(dst, "clinicbridge.yaml")
}

// fhirReadSecret reads a demo secret file as ${file:...} does (without the
// trailing newline).
func fhirReadSecret(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimRight(string(b), "\r\n")
}

// fhirExample is the absolute path of a file in examples/.
func fhirExample(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "examples", rel))
	require.NoError(t, err)
	_, err = os.Stat(p)
	require.NoError(t, err)
	return p
}

// subscribe registers a Subscription on the fake that notifies the agent's
// connector with the bearer.
func (a *fhirAgent) subscribe(t *testing.T, fake *fhirfake.Server, connector string, sub fhirfake.Subscription) string {
	t.Helper()
	sub.Endpoint = a.hooks + "/hooks/" + connector
	sub.Header = append(sub.Header, "Authorization: Bearer "+a.bearer)
	id, err := fake.Subscribe(sub)
	require.NoError(t, err)
	return id
}

// notify sends a notification the way a FHIR server would: body (may be
// empty) to /hooks/connector[/subpath] with the bearer. It returns the status.
func (a *fhirAgent) notify(t *testing.T, connector, method, subpath string, body []byte) int {
	t.Helper()
	u := a.hooks + "/hooks/" + connector
	if subpath != "" {
		u += "/" + subpath
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+a.bearer)
	req.Header.Set("Content-Type", fhirfake.ContentType)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Less(t, resp.StatusCode, 300, "%s %s: %s", method, u, reply)
	return resp.StatusCode
}

// sendWebhook posts body to /hooks/connector signed with Standard Webhooks
// (secret) under webhook id msgID, as the portal would.
func (a *fhirAgent) sendWebhook(t *testing.T, connector, secret, msgID string, body []byte) {
	t.Helper()
	h, err := webhook.SignStandard(secret, msgID, time.Now(), body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, a.hooks+"/hooks/"+connector, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", reply)
}

// deliveries lists the deliveries of route (all routes when empty), newest first.
func (a *fhirAgent) deliveries(t *testing.T, route string) []store.Delivery {
	t.Helper()
	q := url.Values{"limit": {"10000"}}
	if route != "" {
		q.Set("route", route)
	}
	var out struct{ Deliveries []store.Delivery }
	require.NoError(t, a.admin.Do(context.Background(), http.MethodGet, "/api/deliveries", q, nil, &out))
	return out.Deliveries
}

// delivery is route's delivery of eventID (zero when there is none).
func (a *fhirAgent) delivery(t *testing.T, route, eventID string) store.Delivery {
	t.Helper()
	for _, d := range a.deliveries(t, route) {
		if d.EventID == eventID {
			return d
		}
	}
	return store.Delivery{}
}

// waitDelivery waits until route's delivery of eventID is in state want,
// and fails at once if it ends in another final state.
func (a *fhirAgent) waitDelivery(t *testing.T, route, eventID string, want store.State) store.Delivery {
	t.Helper()
	deadline := time.Now().Add(fhirWait)
	for {
		d := a.delivery(t, route, eventID)
		if d.State == want {
			return d
		}
		final := d.State == store.Succeeded || d.State == store.Dead || d.State == store.Skipped || d.State == store.Cancelled
		if final || time.Now().After(deadline) {
			if d.ID == "" {
				require.FailNowf(t, "no delivery", "route %s: no delivery of %s after %s (want %s)", route, eventID, fhirWait, want)
			}
			require.FailNowf(t, "wrong state", "route %s: the delivery of %s is %s, not %s (attempts %d, last error %q)",
				route, eventID, d.State, want, d.Attempts, d.LastError)
		}
		time.Sleep(fhirTick)
	}
}

// events lists the events stored for source.
func (a *fhirAgent) events(t *testing.T, source string) []store.EventRecord {
	t.Helper()
	var out struct{ Events []store.EventRecord }
	require.NoError(t, a.admin.Do(context.Background(), http.MethodGet, "/api/events", url.Values{"source": {source}, "limit": {"10000"}}, nil, &out))
	return out.Events
}

// runs lists reconcile runs of name, newest first.
func (a *fhirAgent) runs(t *testing.T, name string) []store.Run {
	t.Helper()
	var out struct{ Runs []store.Run }
	require.NoError(t, a.admin.Do(context.Background(), http.MethodGet, "/api/reconcile/runs", url.Values{"name": {name}, "limit": {"1000"}}, nil, &out))
	return out.Runs
}

// reconcileNow runs reconciler name through the admin API and returns its report.
func (a *fhirAgent) reconcileNow(t *testing.T, name string) store.Run {
	t.Helper()
	var out struct{ Run store.Run }
	require.NoError(t, a.admin.Do(context.Background(), http.MethodPost, "/api/reconcile/"+name+"/run", nil, nil, &out))
	require.Empty(t, out.Run.Error)
	return out.Run
}

// fhirEventID is the event id the agent gives one version of a resource:
// Type/id/_history/versionId.
func fhirEventID(res map[string]any) string {
	meta, _ := res["meta"].(map[string]any)
	return fmt.Sprintf("%s/%s/_history/%s", res["resourceType"], res["id"], meta["versionId"])
}

// fhirJSON reads a JSON file into a map.
func fhirJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

// fhirWithout returns a copy of res without the given top-level keys.
func fhirWithout(res map[string]any, keys ...string) map[string]any {
	out := make(map[string]any, len(res))
	for k, v := range res {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

// fhirCanon re-encodes v as JSON, so maps built in Go and decoded ones compare.
func fhirCanon(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// fhirRefID is the id in `Type/id/_history/v`.
func fhirRefID(t *testing.T, ref string) string {
	t.Helper()
	parts := strings.Split(ref, "/")
	require.GreaterOrEqual(t, len(parts), 2, "reference %q", ref)
	return parts[1]
}

// fhirMustJSON encodes v.
func fhirMustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// newFHIRTestServer serves h on loopback until the test ends and returns its URL.
func newFHIRTestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
