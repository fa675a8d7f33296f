package calendly_test

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
	"github.com/clinicbridge/clinicbridge/connectors/calendly"
	"github.com/clinicbridge/clinicbridge/connectors/calendly/calendlyfake"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
)

const (
	secret      = "calendly-signing-key-9d1e4b"
	otherSecret = "some-other-signing-key-22"
	token       = "eyJraWQiOiIxY2UxZTEzNjE3ZGNmNzY2YjNjZWJjY2Y4ZGM1YmFmYThhNjVlNjg0MDIzZjdjMzJiZTgzNDliMjM4MDEzNWI0"
	org         = calendlyfake.DefaultOrganization
	inviteeURI  = "https://api.calendly.com/scheduled_events/0b1c2d3e-aaaa-4bbb-8ccc-1234567890ab/invitees/9f8e7d6c-aaaa-4bbb-8ccc-ba0987654321"
)

var fixedNow = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

// sampleBody is an invitee.created webhook as Calendly sends it (trimmed).
const sampleBody = `{"event":"invitee.created","created_at":"2026-11-02T09:29:58.000000Z","created_by":"https://api.calendly.com/users/BDHGHFGKK4ZCLW2B","payload":{` +
	`"uri":"` + inviteeURI + `","email":"sam.taylor@example.com","name":"Sam Taylor","first_name":"Sam","last_name":"Taylor",` +
	`"status":"active","timezone":"Europe/London","event":"https://api.calendly.com/scheduled_events/0b1c2d3e-aaaa-4bbb-8ccc-1234567890ab",` +
	`"text_reminder_number":"+447700900123","rescheduled":false,"old_invitee":null,"new_invitee":null,` +
	`"questions_and_answers":[{"question":"Reason for your visit","answer":"Knee pain follow-up","position":0}],` +
	`"created_at":"2026-11-02T09:29:57.000000Z","updated_at":"2026-11-02T09:29:57.000000Z",` +
	`"scheduled_event":{"uri":"https://api.calendly.com/scheduled_events/0b1c2d3e-aaaa-4bbb-8ccc-1234567890ab","name":"Follow-up consultation","status":"active",` +
	`"start_time":"2026-11-04T10:00:00.000000Z","end_time":"2026-11-04T10:30:00.000000Z","location":{"type":"physical","location":"North Clinic"}}}}`

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

func build(t *testing.T, yamlSrc string) *calendly.Connector {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(yamlSrc), &doc))
	node := doc.Content[0]
	require.Empty(t, config.Check("test.yaml", node, calendly.Type().Fields, "connectors.calendly"))
	c, err := calendly.Type().Build(node, connectors.Env{Name: "calendly", Now: func() time.Time { return fixedNow }})
	require.NoError(t, err)
	return c.(*calendly.Connector)
}

func request(key string, at time.Time, body []byte) *connectors.Request {
	return &connectors.Request{Method: http.MethodPost, Header: calendly.Headers(key, at, body), Body: body}
}

func TestContract(t *testing.T) {
	t.Parallel()
	connectortest.RunSource(t, connectortest.SourceHarness{
		Source: build(t, "{webhook_secret: "+secret+"}"),
		Body:   []byte(sampleBody),
		Sign: func(t *testing.T, body []byte) *connectors.Request {
			return request(secret, fixedNow, body)
		},
		SignWrongSecret: func(t *testing.T, body []byte) *connectors.Request {
			return request(otherSecret, fixedNow, body)
		},
		SignatureHeaders: []string{calendly.HeaderSignature},
		SignStale: func(t *testing.T, body []byte) *connectors.Request {
			return request(secret, fixedNow.Add(-4*time.Minute), body)
		},
		Secrets: []string{secret},
	})
}

func TestVerify(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+", tolerance: 10m}")
	body := []byte(sampleBody)
	require.NoError(t, src.Verify(request(secret, fixedNow.Add(-9*time.Minute), body)), "within the configured tolerance")
	require.NoError(t, src.Verify(request(secret, fixedNow.Add(9*time.Minute), body)))

	good := calendly.Sign(secret, fixedNow, body)
	v1 := good[strings.Index(good, "v1=")+3:]
	stamp := good[2:strings.Index(good, ",")]
	for name, h := range map[string]string{
		"reordered, spaced": " v1=" + v1 + " , t=" + stamp,
		"two v1, one good":  "t=" + stamp + ",v1=" + strings.Repeat("0", 64) + ",v1=" + v1,
		"upper-case hex":    "t=" + stamp + ",v1=" + strings.ToUpper(v1),
	} {
		r := request(secret, fixedNow, body)
		r.Header.Set(calendly.HeaderSignature, h)
		require.NoError(t, src.Verify(r), name)
	}
	for name, h := range map[string]string{
		"no timestamp":     "v1=" + v1,
		"no signature":     "t=" + stamp,
		"bad timestamp":    "t=yesterday,v1=" + v1,
		"future":           "t=" + calendly.Sign(secret, fixedNow.Add(11*time.Minute), body)[2:12] + ",v1=" + v1,
		"not hex":          "t=" + stamp + ",v1=xyz",
		"signature of t-1": calendly.Sign(secret, fixedNow.Add(-time.Second), body[1:]),
		"garbage":          "sha256=" + v1,
	} {
		r := request(secret, fixedNow, body)
		r.Header.Set(calendly.HeaderSignature, h)
		err := src.Verify(r)
		require.ErrorIs(t, err, connectors.ErrUnauthorized, name)
		connectortest.NoLeak(t, err, secret, v1, "Sam Taylor", "+447700900123")
	}
}

func parseOne(t *testing.T, src *calendly.Connector, body string) connectors.Event {
	t.Helper()
	r := request(secret, fixedNow, []byte(body))
	require.NoError(t, src.Verify(r))
	in, err := src.Parse(r)
	require.NoError(t, err)
	require.Len(t, in.Events, 1)
	return in.Events[0]
}

func TestParse(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+"}")
	ev := parseOne(t, src, sampleBody)
	require.Equal(t, "invitee.created:"+inviteeURI, ev.ID)
	require.Equal(t, "invitee.created", ev.Type)
	require.Equal(t, inviteeURI, ev.Key)
	require.Empty(t, ev.Replaces)
	require.Equal(t, time.Date(2026, 11, 2, 9, 29, 58, 0, time.UTC), ev.OccurredAt)
	var p struct {
		URI                string `json:"uri"`
		TextReminderNumber string `json:"text_reminder_number"`
		ScheduledEvent     struct {
			StartTime string `json:"start_time"`
		} `json:"scheduled_event"`
	}
	require.NoError(t, json.Unmarshal(ev.Payload, &p))
	require.Equal(t, inviteeURI, p.URI)
	require.Equal(t, "+447700900123", p.TextReminderNumber)
	require.Equal(t, "2026-11-04T10:00:00.000000Z", p.ScheduledEvent.StartTime)

	old := "https://api.calendly.com/scheduled_events/E1/invitees/OLD"
	nw := "https://api.calendly.com/scheduled_events/E2/invitees/NEW"
	for _, tc := range []struct{ body, id, key, replaces string }{
		{`{"event":"invitee.created","created_at":"2026-11-02T09:00:00.000000Z","payload":{"uri":"` + nw + `","old_invitee":"` + old + `","status":"active"}}`,
			"invitee.created:" + nw, nw, old},
		{`{"event":"invitee.canceled","created_at":"2026-11-02T09:00:00.000000Z","payload":{"uri":"` + old + `","rescheduled":true,"new_invitee":"` + nw + `","status":"canceled"}}`,
			"invitee.canceled:" + old, old, ""},
		{`{"event":"invitee_no_show.created","created_at":"2026-11-02T09:00:00.000000Z","payload":{"uri":"https://api.calendly.com/invitee_no_shows/NS1","invitee":"` + old + `"}}`,
			"invitee_no_show.created:https://api.calendly.com/invitee_no_shows/NS1", old, ""},
		{`{"event":"routing_form_submission.created","created_at":"2026-11-02T09:00:00.5Z","payload":{"questions_and_answers":[]}}`,
			"routing_form_submission.created:2026-11-02T09:00:00.5Z", "", ""},
	} {
		ev := parseOne(t, src, tc.body)
		require.Equal(t, tc.id, ev.ID)
		require.Equal(t, tc.key, ev.Key)
		require.Equal(t, tc.replaces, ev.Replaces)
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+"}")
	for _, body := range []string{
		`[]`,
		`{"payload":{"uri":"u"}}`,
		`{"event":["invitee.created"],"payload":{}}`,
		`{"event":"invitee.created","payload":"Sam Taylor"}`,
		`{"event":"invitee.created","payload":{"name":"Sam Taylor","text_reminder_number":"+447700900123"}}`,
		`{"event":"invitee.canceled"}`,
	} {
		r := request(secret, fixedNow, []byte(body))
		require.NoError(t, src.Verify(r))
		_, err := src.Parse(r)
		require.ErrorIs(t, err, connectors.ErrMalformed, body)
		connectortest.NoLeak(t, err, "Sam Taylor", "+447700900123")
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[string]string{
		"{api_key: x}": "webhook_secret: required",
		"{webhook_secret: s, organization: AAAAAAAAAAAAAAAA}":         "organization",
		"{webhook_secret: s, base_url: 'mailto:x@example.com'}":       "base_url",
		"{webhook_secret: s, tolerance: 0s}":                          "tolerance",
		"{webhook_secret: s, lookahead: 0s}":                          "lookahead",
		"{webhook_secret: s, base_url: 'https://api.calendly.com#x'}": "base_url",
	} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
		_, err := calendly.Type().Build(doc.Content[0], connectors.Env{})
		require.ErrorContains(t, err, want, cfg)
	}
	for _, f := range calendly.Type().Fields {
		require.NotEqual(t, "type", f.Name)
	}
	build(t, "{webhook_secret: s, api_key: t, organization: '"+org+"', lookahead: 120d, tolerance: 5m}")
}

func TestSample(t *testing.T) {
	t.Parallel()
	ty := calendly.Type()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("{webhook_secret: "+secret+"}"), &doc))
	src := build(t, "{webhook_secret: "+secret+"}")
	env := connectors.Env{Name: "calendly", Now: func() time.Time { return fixedNow }}
	for _, event := range []string{"", "invitee.created", "invitee.canceled"} {
		h, body, err := ty.Sample(doc.Content[0], env, event, nil)
		require.NoError(t, err)
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		require.NoError(t, src.Verify(r))
		in, err := src.Parse(r)
		require.NoError(t, err)
		if event == "" {
			event = "invitee.created"
		}
		ev := in.Events[0]
		require.Equal(t, event, ev.Type)
		var p struct {
			Phone          string `json:"text_reminder_number"`
			ScheduledEvent struct {
				StartTime time.Time `json:"start_time"`
			} `json:"scheduled_event"`
		}
		require.NoError(t, json.Unmarshal(ev.Payload, &p))
		require.NotEmpty(t, p.Phone)
		require.WithinDuration(t, fixedNow.Add(48*time.Hour), p.ScheduledEvent.StartTime, time.Hour)
	}
	_, body, err := ty.Sample(doc.Content[0], env, "invitee.canceled", []byte(`{"uri":"`+inviteeURI+`"}`))
	require.NoError(t, err)
	require.Equal(t, "invitee.canceled:"+inviteeURI, parseOne(t, src, string(body)).ID)
	_, body, err = ty.Sample(doc.Content[0], env, "", []byte(sampleBody))
	require.NoError(t, err)
	require.JSONEq(t, sampleBody, string(body))
}

func TestFakeCommand(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	srv := httptest.NewServer(calendly.Type().Fake(&log))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/scheduled_events?organization="+org+"&count=2", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer any-token-at-all")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		Collection []json.RawMessage `json:"collection"`
		Pagination struct {
			NextPageToken string `json:"next_page_token"`
		} `json:"pagination"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Len(t, out.Collection, 2)
	require.NotEmpty(t, out.Pagination.NextPageToken)
	require.Contains(t, log.String(), "GET /scheduled_events")
	require.NotContains(t, log.String(), "any-token-at-all")
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
