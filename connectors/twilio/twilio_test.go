package twilio_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/twilio"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
)

const (
	account = twiliofake.DefaultAccountSID
	token   = twiliofake.DefaultAuthToken
	patient = "+447700900123"
	clinic  = "+447700900000"
	text    = "Reminder: Jane Example, physio at North Clinic tomorrow 10:30"
	service = "MG9752274e9e519418a7406176694466fa"
)

var fixedNow = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

func sampleDelivery() connectors.Delivery {
	return connectors.Delivery{
		Action:         twilio.ActionSendSMS,
		Document:       map[string]any{"to": patient, "body": text},
		IdempotencyKey: "evt_1:reminder",
		DeliveryID:     "dlv_1",
		EventID:        "evt_1",
		Route:          "reminder",
	}
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

// receipt is a delivery's remote status as the store keeps it.
type receipt struct {
	status string
	rank   int
}

// hooks stands in for the agent's POST /hooks/{connector}: it rebuilds the
// URL the sender used (no public_url: http + Host), verifies, parses, keeps
// receipts the way the store does (an update applies only over a lower
// rank) and answers with the source's Reply.
type hooks struct {
	srv  *httptest.Server
	conn *twilio.Connector

	mu       sync.Mutex
	receipts map[string]receipt
	events   []connectors.Event
	answers  []int
}

func newHooks(t *testing.T) *hooks {
	h := &hooks{receipts: map[string]receipt{}}
	h.srv = listen127(t, h)
	return h
}

func (h *hooks) url(name string) string { return h.srv.URL + "/hooks/" + name }

func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	req := &connectors.Request{Method: r.Method, URL: u, Header: r.Header, Body: body}
	status := http.StatusOK
	defer func() {
		h.mu.Lock()
		h.answers = append(h.answers, status)
		h.mu.Unlock()
	}()
	if err := h.conn.Verify(req); err != nil {
		status = http.StatusUnauthorized
		http.Error(w, "signature verification failed", status)
		return
	}
	in, err := h.conn.Parse(req)
	if err != nil {
		status = http.StatusBadRequest
		http.Error(w, err.Error(), status)
		return
	}
	h.mu.Lock()
	for _, u := range in.Receipts {
		if cur, ok := h.receipts[u.ExternalID]; ok && cur.rank < u.Rank {
			h.receipts[u.ExternalID] = receipt{u.Status, u.Rank}
		}
	}
	h.events = append(h.events, in.Events...)
	h.mu.Unlock()
	if in.Reply != nil {
		w.Header().Set("Content-Type", in.Reply.ContentType)
		w.WriteHeader(in.Reply.Status)
		_, _ = w.Write(in.Reply.Body)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"accepted":0}`))
}

func (h *hooks) record(rc connectors.Receipt) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.receipts[rc.ExternalID] = receipt{status: rc.Status}
}

func (h *hooks) receipt(sid string) receipt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.receipts[sid]
}

func (h *hooks) allEvents() []connectors.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]connectors.Event(nil), h.events...)
}

type bundle struct {
	fake  *twiliofake.Server
	api   *httptest.Server
	hooks *hooks
	conn  *twilio.Connector
	state *memState
}

// setup builds a connector named "sms" from YAML (through config.Check and
// Type.Build, as the loader does) against a fresh fake, with public_url
// pointing at a hooks server. cfg may use %URL% (the fake), %ACCOUNT% and
// %TOKEN%; empty cfg means the default from-number config.
func setup(t *testing.T, cfg string, opts ...twiliofake.Option) bundle {
	t.Helper()
	fake := twiliofake.New(append([]twiliofake.Option{twiliofake.WithCallbackDelay(0)}, opts...)...)
	api := listen127(t, fake)
	t.Cleanup(fake.Close) // runs before api.Close
	h := newHooks(t)
	if cfg == "" {
		cfg = "{account_sid: %ACCOUNT%, auth_token: %TOKEN%, from: '" + clinic + "', base_url: '%URL%'}"
	}
	st := newMemState()
	conn := build(t, strings.NewReplacer("%URL%", api.URL, "%ACCOUNT%", account, "%TOKEN%", token).Replace(cfg),
		connectors.Env{Name: "sms", PublicURL: h.srv.URL, State: st, Now: func() time.Time { return fixedNow }})
	h.conn = conn
	return bundle{fake: fake, api: api, hooks: h, conn: conn, state: st}
}

func build(t testing.TB, cfg string, env connectors.Env) *twilio.Connector {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], twilio.Type().Fields, "connectors.sms"))
	c, err := twilio.Type().Build(doc.Content[0], env)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.(connectors.Closer).Close() })
	return c.(*twilio.Connector)
}

// send delivers doc and records the receipt the way the pipeline does.
func (b bundle) send(t *testing.T, doc map[string]any) (connectors.Receipt, error) {
	t.Helper()
	d := sampleDelivery()
	d.Document = doc
	rc, err := b.conn.Do(context.Background(), d)
	if err == nil {
		b.hooks.record(rc)
	} else {
		connectortest.NoLeak(t, err, token, patient, text, "+1500555")
	}
	return rc, err
}

// script answers the next send with status and a Twilio error body whose
// code is the one Twilio uses for it.
func script(f *twiliofake.Server) func(int, time.Duration) {
	return func(status int, ra time.Duration) {
		code := map[int]int{400: 21211, 401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}[status]
		f.Fail(status, code, ra)
	}
}

func TestContract(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]string{
		"from":              "",
		"messaging service": "{account_sid: %ACCOUNT%, auth_token: %TOKEN%, messaging_service_sid: " + service + ", base_url: '%URL%'}",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, cfg, twiliofake.WithoutCallbacks())
			connectortest.RunSink(t, connectortest.SinkHarness{
				Sink:          b.conn,
				Delivery:      sampleDelivery(),
				Script:        script(b.fake),
				ExternalID:    true,
				Secrets:       []string{token},
				PayloadValues: []string{patient, "+1500555"},
			})
		})
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	rc, err := b.send(t, map[string]any{"to": patient, "body": text, "media_url": []any{"https://x.example/a.png", "https://x.example/b.png"}})
	require.NoError(t, err)
	require.Regexp(t, `^SM[0-9a-f]{32}$`, rc.ExternalID)
	require.Equal(t, "queued", rc.Status)

	at := b.fake.Attempts()
	require.Len(t, at, 1)
	f := at[0].Form
	require.Equal(t, patient, f.Get("To"))
	require.Equal(t, text, f.Get("Body"))
	require.Equal(t, clinic, f.Get("From"))
	require.Empty(t, f.Get("MessagingServiceSid"))
	require.Equal(t, []string{"https://x.example/a.png", "https://x.example/b.png"}, f["MediaUrl"])
	require.Equal(t, b.hooks.url("sms"), f.Get("StatusCallback"))
	require.Equal(t, b.hooks.url("sms"), b.conn.StatusCallback())

	m, ok := b.fake.Message(rc.ExternalID)
	require.True(t, ok)
	require.Equal(t, "outbound-api", m.Direction)

	// The document's messaging_service_sid replaces the configured from.
	rc, err = b.send(t, map[string]any{"to": patient, "body": 42, "messaging_service_sid": service})
	require.NoError(t, err)
	require.Equal(t, "accepted", rc.Status)
	f = b.fake.Attempts()[1].Form
	require.Equal(t, service, f.Get("MessagingServiceSid"))
	require.Empty(t, f.Get("From"))
	require.Equal(t, "42", f.Get("Body"))

	// A media-only message needs no body.
	_, err = b.send(t, map[string]any{"to": patient, "body": "", "media_url": "https://x.example/c.png", "from": twiliofake.MagicFrom})
	require.NoError(t, err)
	require.Equal(t, twiliofake.MagicFrom, b.fake.Attempts()[2].Form.Get("From"))
}

func TestNoStatusCallbackWithoutPublicURL(t *testing.T) {
	t.Parallel()
	fake := twiliofake.New()
	t.Cleanup(fake.Close)
	api := listen127(t, fake)
	conn := build(t, "{account_sid: "+account+", auth_token: "+token+", from: '"+clinic+"', base_url: '"+api.URL+"'}", connectors.Env{Name: "sms"})
	_, err := conn.Do(context.Background(), sampleDelivery())
	require.NoError(t, err)
	require.Empty(t, conn.StatusCallback())
	require.False(t, fake.Attempts()[0].Form.Has("StatusCallback"))
}

func TestMagicNumbers(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	for _, tc := range []struct {
		doc   map[string]any
		code  string
		class connectors.Class
	}{
		{map[string]any{"to": twiliofake.MagicToInvalid}, "21211", connectors.Permanent},
		{map[string]any{"to": twiliofake.MagicToUnroutable}, "21612", connectors.Permanent},
		{map[string]any{"to": twiliofake.MagicToNoIntl}, "21408", connectors.Permanent},
		{map[string]any{"to": twiliofake.MagicToBlocked}, "21610", connectors.Permanent},
		{map[string]any{"to": twiliofake.MagicToNotMobile}, "21614", connectors.Permanent},
		{map[string]any{"to": "0770 0900 123"}, "21211", connectors.Permanent},
		{map[string]any{"to": patient, "from": twiliofake.MagicFromInvalid}, "21212", connectors.Permanent},
		{map[string]any{"to": patient, "from": twiliofake.MagicFromNotOwned}, "21606", connectors.Permanent},
		{map[string]any{"to": patient, "from": twiliofake.MagicFromQueueFull}, "21611", connectors.RateLimited},
		{map[string]any{"to": patient, "body": strings.Repeat("é", twiliofake.MaxBody+1)}, "21617", connectors.Permanent},
	} {
		if _, ok := tc.doc["body"]; !ok {
			tc.doc["body"] = text
		}
		_, err := b.send(t, tc.doc)
		require.Error(t, err, tc.code)
		var ce *connectors.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, tc.code, ce.Code)
		require.Equal(t, http.StatusBadRequest, ce.HTTPStatus)
		require.Equal(t, tc.class, connectors.ClassOf(err), "%s: %v", tc.code, err)
		// Twilio's message quotes the number; ours never does.
		connectortest.NoLeak(t, err, "0770 0900 123", "not a valid phone number.", "'To'")
	}
	_, err := b.send(t, map[string]any{"to": twiliofake.MagicToValidSample, "body": text})
	require.NoError(t, err)
}

func TestOptOutByError21610(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	blocked := map[string]any{"to": twiliofake.MagicToBlocked, "body": text}

	_, err := b.send(t, blocked)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "code 21610")
	require.Equal(t, []string{"optout:" + twiliofake.MagicToBlocked}, b.state.keys())
	v, _, _ := b.state.Get(context.Background(), "optout:"+twiliofake.MagicToBlocked)
	require.JSONEq(t, `{"reason":"error_21610","at":"2026-11-02T09:30:00Z"}`, string(v))

	// The next send is skipped before Twilio is called; the same number
	// written with spaces is the same recipient.
	for _, to := range []string{twiliofake.MagicToBlocked, "+1 500-555-0004"} {
		_, err = b.send(t, map[string]any{"to": to, "body": text})
		require.Equal(t, connectors.Skip, connectors.ClassOf(err))
		var ce *connectors.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "opted_out", ce.Code)
	}
	require.Len(t, b.fake.Attempts(), 1)

	// A number Twilio holds as opted out (STOP reached Twilio, not us).
	b.fake.OptOut(patient)
	_, err = b.send(t, map[string]any{"to": patient, "body": text})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Contains(t, b.state.keys(), "optout:"+patient)
}

// TestOptOutRoundTrip: a patient texts STOP, sends are skipped; START, and
// they go out again. Everything travels over HTTP and is signed.
func TestOptOutRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	ctx := context.Background()
	_, err := b.send(t, sampleDelivery().Document)
	require.NoError(t, err)

	cb, err := b.fake.SendInbound(ctx, b.hooks.url("sms"), patient, "  Stop ")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, cb.Status)
	require.Equal(t, `<?xml version="1.0" encoding="UTF-8"?><Response/>`, string(cb.Body))
	require.Equal(t, []string{"optout:" + patient}, b.state.keys())

	_, err = b.send(t, sampleDelivery().Document)
	require.Equal(t, connectors.Skip, connectors.ClassOf(err))
	require.Len(t, b.fake.Attempts(), 1, "not sent")

	cb, err = b.fake.SendInbound(ctx, b.hooks.url("sms"), patient, "start")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, cb.Status)
	require.Empty(t, b.state.keys())

	_, err = b.send(t, sampleDelivery().Document)
	require.NoError(t, err)
	require.Len(t, b.fake.Attempts(), 2, "sent again")

	evs := b.hooks.allEvents()
	require.Len(t, evs, 2)
	for i, kw := range []string{"STOP", "START"} {
		require.Equal(t, twilio.EventMessageReceived, evs[i].Type)
		require.Equal(t, patient, evs[i].Key)
		var p map[string]string
		require.NoError(t, json.Unmarshal(evs[i].Payload, &p))
		require.Equal(t, kw, p["OptOutType"])
	}
}

func TestRateLimited(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	b.fake.Burst429(2)
	for range 2 {
		_, err := b.send(t, sampleDelivery().Document)
		require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
		require.Equal(t, time.Second, connectors.RetryAfterOf(err))
		require.Contains(t, err.Error(), "code 20429")
	}
	_, err := b.send(t, sampleDelivery().Document)
	require.NoError(t, err)

	// No Retry-After: rate limited all the same, the pipeline backs off.
	b.fake.Fail(http.StatusTooManyRequests, 20429, 0)
	_, err = b.send(t, sampleDelivery().Document)
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Zero(t, connectors.RetryAfterOf(err))
}

func TestWrongCredentials(t *testing.T) {
	t.Parallel()
	fake := twiliofake.New()
	t.Cleanup(fake.Close)
	api := listen127(t, fake)
	for _, cfg := range []string{
		"{account_sid: " + account + ", auth_token: wrong-token-123, from: '" + clinic + "', base_url: '" + api.URL + "'}",
		"{account_sid: AC99999999999999999999999999999999, auth_token: " + token + ", from: '" + clinic + "', base_url: '" + api.URL + "'}",
	} {
		conn := build(t, cfg, connectors.Env{Name: "sms"})
		_, err := conn.Do(context.Background(), sampleDelivery())
		require.Equal(t, connectors.Auth, connectors.ClassOf(err))
		var ce *connectors.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "20003", ce.Code)
		require.Equal(t, http.StatusUnauthorized, ce.HTTPStatus)
		connectortest.NoLeak(t, err, "wrong-token-123", token, patient, text)
	}
}

func TestDocumentErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	for _, doc := range []map[string]any{
		{"body": text},
		{"to": "", "body": text},
		{"to": 447700900123, "body": text},
		{"to": patient, "body": ""},
		{"to": patient},
		{"to": patient, "body": map[string]any{"x": text}},
		{"to": patient, "body": text, "media_url": []any{1}},
		{"to": patient, "body": text, "from": 5},
	} {
		_, err := b.send(t, doc)
		require.Equal(t, connectors.Permanent, connectors.ClassOf(err), "%v", doc)
	}
	d := sampleDelivery()
	d.Action = "send_fax"
	_, err := b.conn.Do(context.Background(), d)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Empty(t, b.fake.Attempts(), "nothing reached Twilio")
}

func TestStateUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t, "", twiliofake.WithoutCallbacks())
	b.state.setFail(errors.New("disk on fire"))
	_, err := b.send(t, sampleDelivery().Document)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Empty(t, b.fake.Attempts(), "never send without checking the opt-out list")

	// 21610 is still final when it cannot be recorded.
	b.state.setFail(nil)
	_, err = b.send(t, map[string]any{"to": twiliofake.MagicToBlocked, "body": text})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
}

func TestTimeoutAfterSendIsAmbiguous(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := listen127(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	conn := build(t, "{account_sid: "+account+", auth_token: "+token+", from: '"+clinic+"', base_url: '"+srv.URL+"', timeout: 200ms}", connectors.Env{Name: "sms"})
	_, err := conn.Do(context.Background(), sampleDelivery())
	require.Equal(t, connectors.Ambiguous, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "timed out")
	connectortest.NoLeak(t, err, token, patient, text, srv.URL)
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	conn := build(t, "{account_sid: "+account+", auth_token: "+token+", from: '"+clinic+"', base_url: 'http://"+addr+"'}", connectors.Env{Name: "sms"})
	_, err = conn.Do(context.Background(), sampleDelivery())
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "request not sent")
}

func TestNonJSONErrorBody(t *testing.T) {
	t.Parallel()
	srv := listen127(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "<html>bad gateway for "+patient+"</html>", http.StatusBadGateway)
	}))
	conn := build(t, "{account_sid: "+account+", auth_token: "+token+", from: '"+clinic+"', base_url: '"+srv.URL+"'}", connectors.Env{Name: "sms"})
	_, err := conn.Do(context.Background(), sampleDelivery())
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Equal(t, 7*time.Second, connectors.RetryAfterOf(err))
	connectortest.NoLeak(t, err, patient)
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[string]string{
		"{account_sid: " + account + ", auth_token: s3cr3t-tok}":                                                  "set exactly one of from, messaging_service_sid",
		"{account_sid: " + account + ", auth_token: s3cr3t-tok, from: x, messaging_service_sid: " + service + "}": "not both",
		"{account_sid: SK123, auth_token: s3cr3t-tok, from: x}":                                                   "account_sid",
		"{account_sid: " + account + ", auth_token: s3cr3t-tok, messaging_service_sid: PN1}":                      "messaging_service_sid",
		"{account_sid: " + account + ", auth_token: s3cr3t-tok, from: x, base_url: 'ftp://x'}":                    "base_url",
		"{account_sid: " + account + ", auth_token: s3cr3t-tok, from: x, timeout: 0s}":                            "timeout",
		"{account_sid: " + account + ", from: x}":                                                                 "auth_token: required",
	} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
		_, err := twilio.Type().Build(doc.Content[0], connectors.Env{Name: "sms"})
		require.ErrorContains(t, err, want, cfg)
		connectortest.NoLeak(t, err, "s3cr3t-tok")
	}
}

func TestStatusRank(t *testing.T) {
	t.Parallel()
	order := [][]string{{"accepted", "scheduled"}, {"queued"}, {"sending"}, {"sent"}, {"delivered", "undelivered", "failed", "canceled"}, {"read"}}
	for i, group := range order {
		for _, s := range group {
			require.Equal(t, i+1, twilio.StatusRank(s), s)
			require.Equal(t, i+1, twilio.StatusRank(strings.ToUpper(s)), s)
		}
	}
	require.Zero(t, twilio.StatusRank("teleported"))
}

func TestKeywords(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		"STOP": "STOP", " stop\n": "STOP", "StopAll": "STOP", "unsubscribe": "STOP", "cancel": "STOP", "END": "STOP", "quit": "STOP", "revoke": "STOP", "OptOut": "STOP",
		"START": "START", "yes": "START", "Unstop": "START",
		"help": "HELP", "INFO": "HELP",
		"stop please": "", "": "", "yes, see you then": "", "cancel my appointment": "",
	} {
		require.Equal(t, want, twilio.Keyword(body), "%q", body)
	}
	require.Equal(t, "optout:+447700900123", twilio.OptOutKey(" +44 (7700) 900-123 "))
}
