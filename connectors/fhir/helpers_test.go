package fhir_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
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
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

const (
	webhookSecret = "whk-9f2c4e1a7b3d5e60"
	apiToken      = "fhir-api-token-4c7e2a9d"
)

// memState is an in-memory connectors.State.
type memState struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newState() *memState { return &memState{m: map[string][]byte{}} }

func (s *memState) Get(_ context.Context, k string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok, nil
}

func (s *memState) Put(_ context.Context, k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = append([]byte(nil), v...)
	return nil
}

func (s *memState) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// failingState fails every call.
type failingState struct{}

func (failingState) Get(context.Context, string) ([]byte, bool, error) {
	return nil, false, errors.New("store down")
}
func (failingState) Put(context.Context, string, []byte) error { return errors.New("store down") }
func (failingState) Delete(context.Context, string) error      { return errors.New("store down") }

// startFake serves a fake FHIR server on 127.0.0.1 that requires apiToken.
func startFake(t *testing.T, opts ...fhirfake.Option) (*fhirfake.Server, string) {
	t.Helper()
	fake := fhirfake.New(append([]fhirfake.Option{fhirfake.WithBearer(apiToken)}, opts...)...)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fake.SetBaseURL(srv.URL)
	return fake, srv.URL
}

func yamlNode(t *testing.T, cfg string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	return doc.Content[0]
}

// build decodes cfg as the config loader would and builds the connector.
func build(t *testing.T, cfg string, env connectors.Env) *fhir.Connector {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], fhir.Type().Fields, "connectors.ehr"))
	if env.Name == "" {
		env.Name = "ehr"
	}
	c, err := fhir.Type().Build(doc.Content[0], env)
	require.NoError(t, err)
	conn := c.(*fhir.Connector)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// connector builds a connector against base with bearer auth, the webhook
// secret and the clinic resources.
func connector(t *testing.T, base string, st connectors.State) *fhir.Connector {
	t.Helper()
	return build(t, `{base_url: "`+base+`", auth: {bearer: `+apiToken+`}, webhook_secret: `+webhookSecret+
		`, resources: [Patient, Appointment, DiagnosticReport, MedicationRequest]}`, connectors.Env{State: st})
}

// received is what the receiver made of one notification.
type received struct {
	req *connectors.Request
	in  connectors.Inbound
	err error
}

// receiver plays clinicbridge's /hooks/{connector} endpoint for the fake's
// notifications: Verify, then Parse, answering as the server would.
type receiver struct {
	src connectors.Source
	mu  sync.Mutex
	got []received
	URL string
}

func startReceiver(t *testing.T, src connectors.Source) *receiver {
	t.Helper()
	rc := &receiver{src: src}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &connectors.Request{Method: r.Method, URL: r.URL, Header: r.Header, Body: body,
			Subpath: strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/hooks/ehr"), "/")}
		rec := received{req: req}
		status := http.StatusOK
		if err := src.Verify(req); err != nil {
			rec.err, status = err, http.StatusUnauthorized
		} else if rec.in, rec.err = src.Parse(req); rec.err != nil {
			status = http.StatusBadRequest
		}
		rc.mu.Lock()
		rc.got = append(rc.got, rec)
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL + "/hooks/ehr"
	return rc
}

func (r *receiver) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// last returns the last notification received, which must have parsed.
func (r *receiver) last(t *testing.T) connectors.Inbound {
	t.Helper()
	got := r.all()
	require.NotEmpty(t, got, "no notification received")
	require.NoError(t, got[len(got)-1].err)
	return got[len(got)-1].in
}

func appointment(status string) map[string]any {
	return map[string]any{
		"resourceType": "Appointment",
		"status":       status,
		"start":        "2026-11-03T09:00:00Z",
		"end":          "2026-11-03T09:30:00Z",
		"identifier":   []any{map[string]any{"system": "https://booking.example/uid", "value": "bk-" + status}},
		"participant":  []any{map[string]any{"actor": map[string]any{"reference": "Patient/p1"}, "status": "accepted"}},
	}
}

func patient(mrn, family string) map[string]any {
	return map[string]any{
		"resourceType": "Patient",
		"identifier":   []any{map[string]any{"system": "http://clinic.example/mrn", "value": mrn}},
		"name":         []any{map[string]any{"family": family, "given": []any{"Jane"}}},
		"birthDate":    "1984-02-29",
	}
}

func metaOf(t *testing.T, res map[string]any) (version, lastUpdated string) {
	t.Helper()
	m, _ := res["meta"].(map[string]any)
	require.NotNil(t, m)
	return m["versionId"].(string), m["lastUpdated"].(string)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func bearer(tok string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	return h
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// serve serves h on 127.0.0.1 and returns its URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
