// Package e2e runs the real agent (app.Load + Run, on a temp config and a
// temp SQLite store) against the connectors' fakes, over loopback HTTP and
// SMTP, the way a clinic's systems would talk to it.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
	"github.com/clinicbridge/clinicbridge/connectors/smtp/smtpfake"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/testutil"
)

// Secrets the test configs and the fakes share.
const (
	calcomSecret = "calcom-e2e-webhook-secret-0123456789"
	twilioSID    = twiliofake.DefaultAccountSID
	twilioToken  = twiliofake.DefaultAuthToken
	// twilioFrom is Twilio's magic sender that always works.
	twilioFrom = twiliofake.MagicFrom
)

// agent is one running clinicbridge.
type agent struct {
	dir   string // the config's folder
	hooks string // http://127.0.0.1:port, also server.public_url
	admin *server.Client
	logs  *testutil.Buffer
}

// startAgent writes cfg to a temp folder and runs an agent on it until the
// test ends. In cfg, @LISTEN@ becomes a free loopback address and
// @PUBLIC_URL@ http:// + that address: the public URL must be in the config
// before it loads (the Twilio connector builds its StatusCallback from it),
// so the port is picked here rather than with :0. A store section is added
// unless cfg has one.
func startAgent(t *testing.T, cfg string) *agent {
	t.Helper()
	return startAgentWith(t, cfg, func(string) {})
}

// startExample runs an agent on a copy of examples/name (its mappings,
// fixtures and demo secrets; not data/ or README.md) whose clinicbridge.yaml
// has the old, new pairs replaced: listen addresses, the fakes' base URLs.
// Each old must be in the config, so a changed example fails loudly here.
func startExample(t *testing.T, name string, oldnew ...string) *agent {
	t.Helper()
	src := examplePath(t, name)
	raw, err := os.ReadFile(filepath.Join(src, "clinicbridge.yaml"))
	require.NoError(t, err)
	for i := 0; i+1 < len(oldnew); i += 2 {
		require.Contains(t, string(raw), oldnew[i], "examples/%s/clinicbridge.yaml changed", name)
	}
	cfg := strings.NewReplacer(oldnew...).Replace(string(raw))
	return startAgentWith(t, cfg, func(dir string) {
		require.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			switch {
			case d.IsDir() && rel == "data":
				return filepath.SkipDir
			case d.IsDir():
				return os.MkdirAll(filepath.Join(dir, rel), 0o755)
			case rel == "README.md" || rel == "clinicbridge.yaml":
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, rel), b, 0o600)
		}))
	})
}

// examplePath is the absolute path of examples/rel.
func examplePath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "examples", rel))
	require.NoError(t, err)
	_, err = os.Stat(p)
	require.NoError(t, err)
	return p
}

func startAgentWith(t *testing.T, cfg string, populate func(dir string)) *agent {
	t.Helper()
	// Another process may take the port between picking and binding: retry.
	for try := 0; ; try++ {
		a, err := tryStart(t, cfg, populate)
		if err == nil {
			return a
		}
		if !errors.Is(err, syscall.EADDRINUSE) || try == 4 {
			t.Fatal(err)
		}
	}
}

func tryStart(t *testing.T, cfg string, populate func(dir string)) (*agent, error) {
	t.Helper()
	addr := freeAddr(t)
	a := &agent{dir: t.TempDir(), hooks: "http://" + addr, logs: &testutil.Buffer{}}
	cfg = strings.NewReplacer("@LISTEN@", addr, "@PUBLIC_URL@", a.hooks).Replace(cfg)
	if !strings.Contains(cfg, "\nstore:") {
		cfg += "store: {driver: sqlite, path: ./data/cb.db}\n"
	}
	populate(a.dir)
	path := filepath.Join(a.dir, "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))

	log := zerolog.New(a.logs)
	ag, err := app.Load(path, all.Registry(), config.Options{}, log)
	require.NoError(t, err, "config:\n%s", cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan net.Addr, 1)
	go func() {
		done <- ag.Run(ctx, log, app.RunOptions{ShutdownTimeout: 5 * time.Second, Ready: func(_, admin net.Addr) { ready <- admin }})
	}()
	select {
	case adminAddr := <-ready:
		a.admin = server.NewClient(adminAddr.String(), "")
	case err := <-done:
		cancel()
		ag.Close()
		return nil, fmt.Errorf("agent did not start: %w\n%s", err, a.logs.String())
	case <-time.After(20 * time.Second):
		cancel()
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
		if t.Failed() {
			t.Logf("agent log:\n%s", a.logs.String())
		}
	})
	return a, nil
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// post sends body with header to the agent's /hooks/{connector}.
func (a *agent) post(t *testing.T, connector string, header http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.hooks+"/hooks/"+connector, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header = header.Clone()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(reply)
}

// deliveries are the deliveries of one event (admin API).
func (a *agent) deliveries(t *testing.T, source, eventID string) []store.Delivery {
	t.Helper()
	var out struct{ Deliveries []store.Delivery }
	err := a.admin.Do(context.Background(), http.MethodGet, "/api/events/"+url.PathEscape(source)+"/"+url.PathEscape(eventID), nil, nil, &out)
	if err != nil && strings.Contains(err.Error(), "not found") {
		return nil
	}
	require.NoError(t, err)
	return out.Deliveries
}

// delivery is the delivery of event eventID on route, or a zero one.
func (a *agent) delivery(t *testing.T, source, eventID, route string) store.Delivery {
	t.Helper()
	for _, d := range a.deliveries(t, source, eventID) {
		if d.Route == route {
			return d
		}
	}
	return store.Delivery{}
}

// waitFor polls the delivery of eventID on route until ok holds.
func (a *agent) waitFor(t *testing.T, source, eventID, route string, ok func(store.Delivery) bool, what string) store.Delivery {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d := a.delivery(t, source, eventID, route)
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s on route %s: never %s (last: %+v)", source, eventID, route, what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits for the delivery of eventID on route to reach want.
func (a *agent) waitState(t *testing.T, source, eventID, route string, want store.State) store.Delivery {
	t.Helper()
	return a.waitFor(t, source, eventID, route, func(d store.Delivery) bool { return d.State == want }, string(want))
}

// eventCount is how many events the agent stored from source.
func (a *agent) eventCount(t *testing.T, source string) int {
	t.Helper()
	var out struct{ Events []store.EventRecord }
	require.NoError(t, a.admin.Do(context.Background(), http.MethodGet, "/api/events", url.Values{"source": {source}, "limit": {"1000"}}, nil, &out))
	return len(out.Events)
}

// startTwilio serves a Twilio fake that accepts twilioSID / twilioToken.
func startTwilio(t *testing.T) (*twiliofake.Server, string) {
	t.Helper()
	f := twiliofake.New(twiliofake.WithAccount(twilioSID, twilioToken))
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		f.Close()
		srv.Close()
	})
	return f, srv.URL
}

// startCalcom is a Cal.com fake that posts its signed webhooks to the agent's
// /hooks/booking.
func startCalcom(a *agent) *calcomfake.Server {
	return calcomfake.New(calcomfake.WithWebhook(a.hooks+"/hooks/booking", calcomSecret))
}

// startSMTP runs an SMTP fake offering STARTTLS, and writes its CA to dir
// for the config's tls_ca_file.
func startSMTP(t *testing.T, dir string) (*smtpfake.Server, string) {
	t.Helper()
	s, err := smtpfake.Start()
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	ca, err := smtpfake.WriteCA(dir)
	require.NoError(t, err)
	return s, ca
}

// sentTo is what the Twilio fake accepted (201) for number, oldest first.
func sentTo(f *twiliofake.Server, number string) []twiliofake.Attempt {
	var out []twiliofake.Attempt
	for _, a := range f.Attempts() {
		if a.Form.Get("To") == number && a.Status == http.StatusCreated {
			out = append(out, a)
		}
	}
	return out
}

// attemptsTo is every send the Twilio fake saw for number, refused ones too.
func attemptsTo(f *twiliofake.Server, number string) []twiliofake.Attempt {
	var out []twiliofake.Attempt
	for _, a := range f.Attempts() {
		if a.Form.Get("To") == number {
			out = append(out, a)
		}
	}
	return out
}

// withPrefix keeps the attempts whose body starts with prefix.
func withPrefix(as []twiliofake.Attempt, prefix string) []twiliofake.Attempt {
	var out []twiliofake.Attempt
	for _, a := range as {
		if strings.HasPrefix(a.Form.Get("Body"), prefix) {
			out = append(out, a)
		}
	}
	return out
}

// bookingPatient is a booking attendee with the given phone number.
func bookingPatient(name, phone string) calcomfake.Attendee {
	first, _, _ := strings.Cut(name, " ")
	return calcomfake.Attendee{Name: name, Email: strings.ToLower(first) + "@patients.example", TimeZone: "Europe/London", PhoneNumber: phone, Language: "en"}
}
