package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	stdhttp "net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	cbhttp "github.com/clinicbridge/clinicbridge/connectors/http"
	"github.com/clinicbridge/clinicbridge/connectors/http/httpfake"
)

const (
	token    = "tok_live_5f3a9c1e"
	password = "pw-8c1d0a2f"
	apiKey   = "key-77aa21"
)

func sampleDelivery() connectors.Delivery {
	return connectors.Delivery{
		Action: "request",
		Document: map[string]any{
			"patient_id": "pt 1/2",
			"name":       "Jane Example",
			"phone":      "+447700900123",
			"note":       "allergic to penicillin",
			"visits":     []any{map[string]any{"reason": "migraine follow-up"}},
		},
		IdempotencyKey: "evt_1:route-a",
		DeliveryID:     "dlv_1",
		EventID:        "evt_1",
		Route:          "route-a",
	}
}

type bundle struct {
	fake *httpfake.Server
	srv  *httptest.Server
	sink *cbhttp.Sink
}

// listen127 serves h on 127.0.0.1 only.
func listen127(t *testing.T, h stdhttp.Handler) *httptest.Server {
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

// setup builds the sink from YAML (through config.Check and Type.Build, as
// the loader does) against a fresh fake; %URL% in cfg is the fake's address.
func setup(t *testing.T, cfg string) bundle {
	t.Helper()
	fake := httpfake.New()
	srv := listen127(t, fake)
	sink := build(t, strings.ReplaceAll(cfg, "%URL%", srv.URL))
	return bundle{fake: fake, srv: srv, sink: sink}
}

func build(t *testing.T, cfg string) *cbhttp.Sink {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], cbhttp.Type().Fields, "connectors.portal"))
	s, err := cbhttp.Type().Build(doc.Content[0], connectors.Env{Name: "portal"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.(connectors.Closer).Close() })
	return s.(*cbhttp.Sink)
}

func script(f *httpfake.Server) func(int, time.Duration) {
	return func(status int, ra time.Duration) {
		r := httpfake.Response{Status: status, Header: stdhttp.Header{}, Body: []byte(`{"error":"rejected Jane Example"}`)}
		if ra > 0 {
			r.Header.Set("Retry-After", strconv.Itoa(int(ra/time.Second)))
		}
		f.Script(r)
	}
}

func TestContract(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]string{
		"bearer": "{url: '%URL%/patients/{{ doc.patient_id }}/notes', auth: {bearer: " + token + "}}",
		"basic":  "{url: '%URL%/notes', method: PUT, auth: {basic: {username: clinic, password: " + password + "}}}",
		"header": "{url: '%URL%/notes', auth: {header: {name: X-Api-Key, value: " + apiKey + "}}, headers: {X-Tenant: secret-tenant-9}}",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, cfg)
			connectortest.RunSink(t, connectortest.SinkHarness{
				Sink:       b.sink,
				Delivery:   sampleDelivery(),
				Script:     script(b.fake),
				Effects:    b.fake.Unique,
				ExternalID: true,
				Secrets:    []string{token, password, apiKey, "secret-tenant-9", "rejected"},
			})
		})
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	b := setup(t, `
url: '%URL%/patients/{{ doc.patient_id }}/notes?name={{ doc.name }}&v=1'
method: PATCH
headers: {X-Clinic: north, Content-Type: application/fhir+json}
auth: {basic: {username: clinic, password: `+password+`}}
idempotency_header: X-Request-Id
`)
	d := sampleDelivery()
	rc, err := b.sink.Do(context.Background(), d)
	require.NoError(t, err)
	require.Equal(t, connectors.Receipt{ExternalID: "1", Status: "200"}, rc)

	reqs := b.fake.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, "PATCH", r.Method)
	require.Equal(t, "/patients/pt 1/2/notes", r.Path) // decoded; the wire form is escaped
	require.Equal(t, "name=Jane+Example&v=1", r.Query)
	require.Equal(t, "north", r.Header.Get("X-Clinic"))
	require.Equal(t, "application/fhir+json", r.Header.Get("Content-Type"))
	require.Equal(t, "evt_1:route-a", r.Header.Get("X-Request-Id"))
	require.Empty(t, r.Header.Get("Idempotency-Key"))
	user, pass, ok := (&stdhttp.Request{Header: r.Header}).BasicAuth()
	require.True(t, ok)
	require.Equal(t, "clinic", user)
	require.Equal(t, password, pass)
	var got map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &got))
	require.Equal(t, d.Document["name"], got["name"])
}

func TestPathEscaping(t *testing.T) {
	t.Parallel()
	var raw []string
	srv := listen127(t, stdhttp.HandlerFunc(func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		raw = append(raw, r.RequestURI)
	}))
	sink := build(t, "url: '"+srv.URL+"/p/{{ doc.id }}?q={{ doc.id }}'")
	_, err := sink.Do(context.Background(), connectors.Delivery{Document: map[string]any{"id": "a/b?c#d&e"}})
	require.NoError(t, err)
	require.Equal(t, []string{"/p/a%2Fb%3Fc%23d&e?q=a%2Fb%3Fc%23d%26e"}, raw)

	for _, bad := range []any{"", nil, "..", "."} {
		_, err := sink.Do(context.Background(), connectors.Delivery{Document: map[string]any{"id": bad}})
		require.Error(t, err, "%v", bad)
		require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	}
	require.Len(t, raw, 1, "an empty placeholder never calls another URL")
}

func TestExternalID(t *testing.T) {
	t.Parallel()
	b := setup(t, "url: '%URL%/x'")
	for _, tc := range []struct {
		resp httpfake.Response
		want string
	}{
		{httpfake.Response{Status: 201, Body: []byte(`{"id":"MR-9"}`)}, "MR-9"},
		{httpfake.Response{Status: 200, Body: []byte(`{"id":12345678901234567890}`)}, "12345678901234567890"},
		{httpfake.Response{Status: 201, Header: stdhttp.Header{"Location": {"/notes/77"}}, Body: []byte(`{}`)}, "/notes/77"},
		{httpfake.Response{Status: 202, Header: stdhttp.Header{"Location": {"/q/1"}}, Body: []byte(`not json`)}, "/q/1"},
		{httpfake.Response{Status: 204, Body: []byte{}}, ""},
	} {
		b.fake.Script(tc.resp)
		rc, err := b.sink.Do(context.Background(), connectors.Delivery{Document: map[string]any{}, IdempotencyKey: tc.want + "k"})
		require.NoError(t, err)
		require.Equal(t, tc.want, rc.ExternalID)
		require.Equal(t, strconv.Itoa(tc.resp.Status), rc.Status)
	}
}

func TestRedirectIsPermanentAndNotFollowed(t *testing.T) {
	t.Parallel()
	b := setup(t, "url: '%URL%/old'")
	b.fake.Script(httpfake.Response{Status: 301, Header: stdhttp.Header{"Location": {b.srv.URL + "/new"}}})
	_, err := b.sink.Do(context.Background(), sampleDelivery())
	require.Error(t, err)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Len(t, b.fake.Requests(), 1)
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	sink := build(t, "{url: 'http://"+addr+"/patients/{{ doc.name }}', auth: {bearer: "+token+"}}")
	start := time.Now()
	_, err = sink.Do(context.Background(), sampleDelivery())
	require.Error(t, err)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "request not sent: connection refused")
	require.Less(t, time.Since(start), 5*time.Second, "retries stay short")
	connectortest.NoLeak(t, err, "Jane", "Example", token)
}

func TestTimeoutAfterSendIsAmbiguous(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	release := make(chan struct{})
	srv := listen127(t, stdhttp.HandlerFunc(func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	sink := build(t, "{url: '"+srv.URL+"/p/{{ doc.name }}', timeout: 200ms}")
	_, err := sink.Do(context.Background(), sampleDelivery())
	require.Error(t, err)
	require.Equal(t, connectors.Ambiguous, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "timed out")
	require.Equal(t, int32(1), n.Load(), "never retried after sending")
	connectortest.NoLeak(t, err, "Jane", "Example")
}

func TestConnectionDroppedAfterSendIsAmbiguous(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := listen127(t, stdhttp.HandlerFunc(func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		n.Add(1)
		conn, _, err := w.(stdhttp.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	sink := build(t, "url: '"+srv.URL+"/x'")
	_, err := sink.Do(context.Background(), sampleDelivery())
	require.Error(t, err)
	require.Equal(t, connectors.Ambiguous, connectors.ClassOf(err))
	require.Equal(t, int32(1), n.Load())
}

func TestUnknownActionAndBadDocument(t *testing.T) {
	t.Parallel()
	b := setup(t, "url: '%URL%/x'")
	_, err := b.sink.Do(context.Background(), connectors.Delivery{Action: "send_sms"})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	_, err = b.sink.Do(context.Background(), connectors.Delivery{Document: map[string]any{"f": func() {}}})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Empty(t, b.fake.Requests())
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		cfg  cbhttp.Config
		want string
	}{
		"no url":             {cbhttp.Config{}, "url: required"},
		"ftp":                {cbhttp.Config{URL: "ftp://x/y"}, "http:// or https://"},
		"placeholder host":   {cbhttp.Config{URL: "https://{{ doc.host }}/x"}, "scheme or host"},
		"placeholder port":   {cbhttp.Config{URL: "https://h:{{ doc.port }}/x"}, "scheme or host"},
		"unclosed":           {cbhttp.Config{URL: "https://h/{{ doc.id"}, `"{{" without "}}"`},
		"stray close":        {cbhttp.Config{URL: "https://h/}}"}, `"}}" without "{{"`},
		"bad expression":     {cbhttp.Config{URL: "https://h/{{ doc.( }}"}, "placeholder {{ doc.( }}"},
		"fragment":           {cbhttp.Config{URL: "https://h/x#{{ doc.id }}"}, "fragment"},
		"userinfo":           {cbhttp.Config{URL: "https://u:" + password + "@h/x"}, "auth.basic"},
		"method":             {cbhttp.Config{URL: "https://h/", Method: "GET"}, "method:"},
		"header name":        {cbhttp.Config{URL: "https://h/", Headers: map[string]string{"Bad Name": token}}, "headers:"},
		"two auths":          {cbhttp.Config{URL: "https://h/", Auth: &cbhttp.Auth{Bearer: token, Header: &cbhttp.HeaderAuth{Name: "X-K", Value: apiKey}}}, "exactly one"},
		"no auth":            {cbhttp.Config{URL: "https://h/", Auth: &cbhttp.Auth{}}, "exactly one"},
		"timeout":            {cbhttp.Config{URL: "https://h/", Timeout: ptr(config.Duration(0))}, "timeout:"},
		"idempotency header": {cbhttp.Config{URL: "https://h/", IdempotencyHeader: "Idem Key"}, "idempotency_header:"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			require.ErrorContains(t, err, tc.want)
			connectortest.NoLeak(t, err, token, password, apiKey)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestFakeLogsWithoutBodies(t *testing.T) {
	t.Parallel()
	var log bytes.Buffer
	srv := listen127(t, cbhttp.Type().Fake(&log))
	sink := build(t, "url: '"+srv.URL+"/notes'")
	d := sampleDelivery()
	_, err := sink.Do(context.Background(), d)
	require.NoError(t, err)
	_, err = sink.Do(context.Background(), d)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], `POST /notes key="evt_1:route-a" size=`)
	require.Contains(t, lines[1], "(replay)")
	require.NotContains(t, log.String(), "Jane")
}
