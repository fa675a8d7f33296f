package calcom_test

import (
	"encoding/json"
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
	"github.com/clinicbridge/clinicbridge/connectors/calcom"
	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
)

const (
	secret      = "whsec-calcom-3f9a1c77e2"
	otherSecret = "another-cal-secret-81b0"
	apiKey      = "cal_live_5e0c1f2d3a4b5c6d"
)

var fixedNow = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

// sampleBody is a BOOKING_CREATED webhook as Cal.com sends it (trimmed).
const sampleBody = `{"triggerEvent":"BOOKING_CREATED","createdAt":"2026-11-02T09:29:58.120Z","payload":{` +
	`"type":"follow-up-consultation","title":"Follow-up consultation between Dr Amira Shah and Sam Taylor",` +
	`"startTime":"2026-11-04T10:00:00Z","endTime":"2026-11-04T10:30:00Z",` +
	`"organizer":{"id":4,"name":"Dr Amira Shah","email":"amira.shah@northclinic.example","timeZone":"Europe/London"},` +
	`"attendees":[{"email":"sam.taylor@example.com","name":"Sam Taylor","timeZone":"Europe/London","phoneNumber":"+447700900123","language":{"locale":"en"}}],` +
	`"responses":{"attendeePhoneNumber":{"label":"phone_number","value":"+447700900123"}},` +
	`"location":"North Clinic, 12 High Street","eventTypeId":1207,"uid":"bk2Jd8sQe7GmT4nXcW9yLp","bookingId":48213,"status":"ACCEPTED","metadata":{}}}`

// clock is a test clock shared by a connector and a fake.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: fixedNow} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// build decodes yamlSrc and builds it through the type, as the loader does.
func build(t *testing.T, yamlSrc string) *calcom.Connector {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(yamlSrc), &doc))
	node := doc.Content[0]
	require.Empty(t, config.Check("test.yaml", node, calcom.Type().Fields, "connectors.booking"))
	c, err := calcom.Type().Build(node, connectors.Env{Name: "booking", Now: func() time.Time { return fixedNow }})
	require.NoError(t, err)
	return c.(*calcom.Connector)
}

func request(secret string, body []byte) *connectors.Request {
	return &connectors.Request{Method: http.MethodPost, Header: calcom.Headers(secret, body), Body: body}
}

func TestContract(t *testing.T) {
	t.Parallel()
	connectortest.RunSource(t, connectortest.SourceHarness{
		Source: build(t, "{webhook_secret: "+secret+"}"),
		Body:   []byte(sampleBody),
		Sign: func(t *testing.T, body []byte) *connectors.Request {
			return request(secret, body)
		},
		SignWrongSecret: func(t *testing.T, body []byte) *connectors.Request {
			return request(otherSecret, body)
		},
		SignatureHeaders: []string{calcom.HeaderSignature},
		Secrets:          []string{secret},
	})
}

func TestVerify(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+"}")
	body := []byte(sampleBody)

	r := request(secret, body)
	r.Header.Set(calcom.HeaderSignature, strings.ToUpper(r.Header.Get(calcom.HeaderSignature)))
	require.NoError(t, src.Verify(r), "hex is case-insensitive")

	for name, sig := range map[string]string{
		"no secret on the Cal.com side": calcom.NoSecretProvided,
		"not hex":                       "zz" + calcom.Sign(secret, body)[2:],
		"truncated":                     calcom.Sign(secret, body)[:40],
		"prefixed":                      "sha256=" + calcom.Sign(secret, body),
	} {
		r := request(secret, body)
		r.Header.Set(calcom.HeaderSignature, sig)
		err := src.Verify(r)
		require.ErrorIs(t, err, connectors.ErrUnauthorized, name)
		connectortest.NoLeak(t, err, secret, calcom.Sign(secret, body), "Sam Taylor", "+447700900123")
	}
	r = request(secret, body)
	r.Header.Set(calcom.HeaderSignature, calcom.NoSecretProvided)
	require.ErrorContains(t, src.Verify(r), "no-secret-provided")
}

func parseOne(t *testing.T, src *calcom.Connector, body string) connectors.Event {
	t.Helper()
	r := request(secret, []byte(body))
	require.NoError(t, src.Verify(r))
	in, err := src.Parse(r)
	require.NoError(t, err)
	require.Len(t, in.Events, 1)
	return in.Events[0]
}

func TestParseBookingCreated(t *testing.T) {
	t.Parallel()
	ev := parseOne(t, build(t, "{webhook_secret: "+secret+"}"), sampleBody)
	require.Equal(t, "BOOKING_CREATED:bk2Jd8sQe7GmT4nXcW9yLp", ev.ID)
	require.Equal(t, "BOOKING_CREATED", ev.Type)
	require.Equal(t, "bk2Jd8sQe7GmT4nXcW9yLp", ev.Key)
	require.Empty(t, ev.Replaces)
	require.Equal(t, time.Date(2026, 11, 2, 9, 29, 58, 120e6, time.UTC), ev.OccurredAt)

	// The payload is the inner `payload`, as mappings read it.
	var p struct {
		UID       string `json:"uid"`
		StartTime string `json:"startTime"`
		Attendees []struct {
			PhoneNumber string `json:"phoneNumber"`
		} `json:"attendees"`
	}
	require.NoError(t, json.Unmarshal(ev.Payload, &p))
	require.Equal(t, "bk2Jd8sQe7GmT4nXcW9yLp", p.UID)
	require.Equal(t, "2026-11-04T10:00:00Z", p.StartTime)
	require.Equal(t, "+447700900123", p.Attendees[0].PhoneNumber)
}

func TestParseIDs(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+"}")
	for _, tc := range []struct {
		name, body            string
		id, key, replaces, ty string
	}{
		{
			name:     "a reschedule replaces the old uid",
			body:     `{"triggerEvent":"BOOKING_RESCHEDULED","createdAt":"2026-11-02T09:00:00.000Z","payload":{"uid":"newUid2","rescheduleUid":"oldUid1","rescheduleId":41,"startTime":"2026-11-05T10:00:00Z"}}`,
			id:       "BOOKING_RESCHEDULED:newUid2",
			key:      "newUid2",
			replaces: "oldUid1",
		},
		{
			name: "a cancellation",
			body: `{"triggerEvent":"BOOKING_CANCELLED","createdAt":"2026-11-02T09:00:00.000Z","payload":{"uid":"u1","cancellationReason":"ill"}}`,
			id:   "BOOKING_CANCELLED:u1",
			key:  "u1",
		},
		{
			name: "no-show updates repeat: createdAt makes them distinct",
			body: `{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","createdAt":"2026-11-02T09:00:00.000Z","payload":{"bookingUid":"u1","bookingId":7,"attendees":[{"email":"a@example.com","noShow":true}],"message":"x"}}`,
			id:   "BOOKING_NO_SHOW_UPDATED:u1:2026-11-02T09:00:00Z",
			key:  "u1",
		},
		{
			name: "meetings repeat too",
			body: `{"triggerEvent":"MEETING_ENDED","createdAt":"2026-11-02T10:31:02.5Z","payload":{"uid":"u1"}}`,
			id:   "MEETING_ENDED:u1:2026-11-02T10:31:02.5Z",
			key:  "u1",
		},
		{
			name: "triggers about no booking",
			body: `{"triggerEvent":"PING","createdAt":"2026-11-02T10:31:02Z","payload":{"triggerEvent":"PING"}}`,
			id:   "PING:2026-11-02T10:31:02Z",
		},
		{
			name: "an unknown trigger without createdAt falls back to the body hash",
			body: `{"triggerEvent":"SOMETHING_NEW","payload":{"uid":"u9"}}`,
			key:  "u9",
		},
	} {
		ev := parseOne(t, src, tc.body)
		if tc.id != "" {
			require.Equal(t, tc.id, ev.ID, tc.name)
		} else {
			require.True(t, strings.HasPrefix(ev.ID, "SOMETHING_NEW:u9:sha256-"), ev.ID)
			require.Equal(t, fixedNow, ev.OccurredAt, "no createdAt: received now")
		}
		require.Equal(t, tc.key, ev.Key, tc.name)
		require.Equal(t, tc.replaces, ev.Replaces, tc.name)
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+"}")
	for _, body := range []string{
		`[]`,
		`{"createdAt":"2026-11-02T09:00:00Z","payload":{"uid":"u1"}}`,
		`{"triggerEvent":7,"payload":{"uid":"u1"}}`,
		`{"triggerEvent":"BOOKING_CREATED","payload":"Sam Taylor"}`,
		`{"triggerEvent":"BOOKING_CREATED","payload":{"title":"Sam Taylor +447700900123"}}`,
		`{"triggerEvent":"BOOKING_CREATED"}`,
	} {
		r := request(secret, []byte(body))
		require.NoError(t, src.Verify(r))
		_, err := src.Parse(r)
		require.ErrorIs(t, err, connectors.ErrMalformed, body)
		connectortest.NoLeak(t, err, "Sam Taylor", "+447700900123", "u1")
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[string]string{
		"{api_key: x}": "webhook_secret: required",
		"{webhook_secret: s, base_url: 'ftp://user:hunter2@example.com'}": "base_url",
		"{webhook_secret: s, base_url: 'https://api.cal.com?x=1'}":        "base_url",
	} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
		_, err := calcom.Type().Build(doc.Content[0], connectors.Env{})
		require.ErrorContains(t, err, want, cfg)
		connectortest.NoLeak(t, err, "hunter2")
	}
	for _, f := range calcom.Type().Fields {
		require.NotEqual(t, "type", f.Name)
	}
	// DESIGN.md's example builds.
	build(t, "{webhook_secret: s3cr3t, api_key: cal_live_x}")
}

func TestSample(t *testing.T) {
	t.Parallel()
	ty := calcom.Type()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("{webhook_secret: "+secret+"}"), &doc))
	src := build(t, "{webhook_secret: "+secret+"}")
	env := connectors.Env{Name: "booking", Now: func() time.Time { return fixedNow }}

	for _, trigger := range []string{"", "BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED", "MEETING_ENDED"} {
		h, body, err := ty.Sample(doc.Content[0], env, trigger, nil)
		require.NoError(t, err)
		require.Equal(t, calcom.WebhookVersion, h.Get(calcom.HeaderWebhookVersion))
		require.Equal(t, "application/json", h.Get("Content-Type"))
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		require.NoError(t, src.Verify(r))
		in, err := src.Parse(r)
		require.NoError(t, err)
		ev := in.Events[0]
		if trigger == "" {
			trigger = "BOOKING_CREATED"
		}
		require.Equal(t, trigger, ev.Type)
		var p struct {
			StartTime time.Time `json:"startTime"`
			Attendees []struct {
				PhoneNumber string `json:"phoneNumber"`
			} `json:"attendees"`
		}
		require.NoError(t, json.Unmarshal(ev.Payload, &p))
		require.WithinDuration(t, fixedNow.Add(48*time.Hour), p.StartTime, time.Hour)
		require.NotEmpty(t, p.Attendees[0].PhoneNumber)
		if trigger == "BOOKING_RESCHEDULED" {
			require.NotEmpty(t, ev.Replaces)
		}
	}

	// A given payload: an inner payload is wrapped, an envelope is sent as is.
	_, body, err := ty.Sample(doc.Content[0], env, "BOOKING_CANCELLED", []byte(`{"uid":"given1"}`))
	require.NoError(t, err)
	ev := parseOne(t, src, string(body))
	require.Equal(t, "BOOKING_CANCELLED:given1", ev.ID)
	envl := `{"triggerEvent":"BOOKING_CREATED","createdAt":"2026-11-02T09:00:00Z","payload":{"uid":"given2"}}`
	_, body, err = ty.Sample(doc.Content[0], env, "", []byte(envl))
	require.NoError(t, err)
	require.JSONEq(t, envl, string(body))
	_, _, err = ty.Sample(doc.Content[0], env, "", []byte(`not json`))
	require.Error(t, err)
}

// TestFakeCommand serves the type's Fake as `clinicbridge fake calcom` does.
func TestFakeCommand(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	srv := httptest.NewServer(calcom.Type().Fake(&log))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/v2/bookings?take=2", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer cal_live_anything")
	req.Header.Set("cal-api-version", calcomfake.APIVersion)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		Data []json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Len(t, out.Data, 2)
	require.Contains(t, log.String(), "GET /v2/bookings")
	require.NotContains(t, log.String(), "cal_live_anything")
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
