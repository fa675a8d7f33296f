package fhir_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

// checkEvent checks one event against the resource version the fake stored.
func checkEvent(t *testing.T, ev connectors.Event, stored map[string]any) {
	t.Helper()
	v, lu := metaOf(t, stored)
	key := stored["resourceType"].(string) + "/" + stored["id"].(string)
	require.Equal(t, key+"/_history/"+v, ev.ID)
	require.Equal(t, key, ev.Key)
	kind := ".update"
	if v == "1" {
		kind = ".create"
	}
	require.Equal(t, stored["resourceType"].(string)+kind, ev.Type)
	at, err := time.Parse(time.RFC3339Nano, lu)
	require.NoError(t, err)
	require.True(t, at.Equal(ev.OccurredAt), "OccurredAt is meta.lastUpdated")
	var payload map[string]any
	require.NoError(t, json.Unmarshal(ev.Payload, &payload))
	require.Equal(t, stored["status"], payload["status"])
	require.Equal(t, stored["id"], payload["id"])
}

// TestNotificationShapes drives every notification shape end to end: the
// fake notifies on create and update, the receiver verifies and parses.
// Each resource version gives exactly one event, with the same id whatever
// the shape.
func TestNotificationShapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		sub     fhirfake.Subscription
		fetches bool // id-only: the connector reads the resource back
	}{
		{name: "classic full resource by PUT", sub: fhirfake.Subscription{Style: fhirfake.StyleClassic, Content: fhirfake.ContentFullResource}},
		{name: "classic full resource by POST", sub: fhirfake.Subscription{Style: fhirfake.StyleClassic, Content: fhirfake.ContentFullResource, ClassicPOST: true}},
		{name: "backport R4 full-resource", sub: fhirfake.Subscription{Style: fhirfake.StyleBackportR4, Content: fhirfake.ContentFullResource}},
		{name: "backport R4 id-only", sub: fhirfake.Subscription{Style: fhirfake.StyleBackportR4, Content: fhirfake.ContentIDOnly}, fetches: true},
		{name: "R4B full-resource", sub: fhirfake.Subscription{Style: fhirfake.StyleR4B, Content: fhirfake.ContentFullResource}},
		{name: "R4B id-only", sub: fhirfake.Subscription{Style: fhirfake.StyleR4B, Content: fhirfake.ContentIDOnly}, fetches: true},
		{name: "R5 id-only", sub: fhirfake.Subscription{Style: fhirfake.StyleR5, Content: fhirfake.ContentIDOnly}, fetches: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake, base := startFake(t)
			src := connector(t, base, newState())
			rc := startReceiver(t, src)
			sub := tc.sub
			sub.Endpoint, sub.Criteria, sub.Header = rc.URL, "Appointment", []string{"Authorization: Bearer " + webhookSecret}
			_, err := fake.Subscribe(sub)
			require.NoError(t, err)

			created, err := fake.Create(appointment("booked"))
			require.NoError(t, err)
			in := rc.last(t)
			require.Len(t, in.Events, 1)
			require.False(t, in.Reconcile)
			checkEvent(t, in.Events[0], created)

			upd := appointment("cancelled")
			upd["id"] = created["id"]
			updated, err := fake.Update(upd)
			require.NoError(t, err)
			in = rc.last(t)
			require.Len(t, in.Events, 1)
			require.False(t, in.Reconcile)
			checkEvent(t, in.Events[0], updated)
			require.Len(t, rc.all(), 2, "one notification per version")

			reads := 0
			for _, r := range fake.Requests() {
				if r.Method == http.MethodGet && strings.HasPrefix(r.Path, "/Appointment/") {
					reads++
					require.Equal(t, "Bearer "+apiToken, r.Header.Get("Authorization"))
				}
			}
			if tc.fetches {
				require.Equal(t, 2, reads, "id-only content is read back once per notification")
			} else {
				require.Zero(t, reads)
			}
		})
	}
}

// An empty classic rest-hook POST gives no events and asks for a
// reconcile; the listing then finds the change with the same event id a
// full notification would have given.
func TestEmptyNotificationReconciles(t *testing.T) {
	t.Parallel()
	for _, sub := range []fhirfake.Subscription{
		{Style: fhirfake.StyleClassic, Content: fhirfake.ContentEmpty},
		{Style: fhirfake.StyleBackportR4, Content: fhirfake.ContentEmpty},
	} {
		fake, base := startFake(t)
		src := connector(t, base, newState())
		rc := startReceiver(t, src)
		sub.Endpoint, sub.Criteria, sub.Header = rc.URL, "Appointment", []string{"Authorization: Bearer " + webhookSecret}
		_, err := fake.Subscribe(sub)
		require.NoError(t, err)
		created, err := fake.Create(appointment("booked"))
		require.NoError(t, err)

		in := rc.last(t)
		require.Empty(t, in.Events)
		require.True(t, in.Reconcile, "style %d", sub.Style)

		var listed []connectors.Event
		require.NoError(t, src.List(ctx(t), connectors.ListParams{}, func(p connectors.Page) error {
			listed = append(listed, p.Events...)
			return nil
		}))
		require.Len(t, listed, 1)
		checkEvent(t, listed[0], created)
	}
}

func TestHandshakeAndHeartbeatGiveNoEvents(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	src := connector(t, base, newState())
	rc := startReceiver(t, src)
	id, err := fake.Subscribe(fhirfake.Subscription{Endpoint: rc.URL, Criteria: "Appointment", Style: fhirfake.StyleBackportR4,
		Header: []string{"Authorization: Bearer " + webhookSecret}})
	require.NoError(t, err)

	n, err := fake.SendHandshake(id)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, n.Status)
	in := rc.last(t)
	require.Empty(t, in.Events)
	require.False(t, in.Reconcile)

	_, err = fake.Create(appointment("booked"))
	require.NoError(t, err)
	n, err = fake.SendHeartbeat(id)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, n.Status)
	require.Equal(t, 1, n.EventsSinceStart)
	in = rc.last(t)
	require.Empty(t, in.Events)
	require.False(t, in.Reconcile, "the heartbeat's count matches what arrived")

	// Classic rest-hooks have neither.
	cid, err := fake.Subscribe(fhirfake.Subscription{Endpoint: rc.URL, Criteria: "Patient", Style: fhirfake.StyleClassic})
	require.NoError(t, err)
	_, err = fake.SendHeartbeat(cid)
	require.Error(t, err)
}

// A skipped event number (a lost notification) sets Reconcile on the next
// notification, once; a heartbeat whose count is beyond the last number
// seen does the same.
func TestEventNumberGap(t *testing.T) {
	t.Parallel()
	for _, style := range []fhirfake.Style{fhirfake.StyleBackportR4, fhirfake.StyleR4B, fhirfake.StyleR5} {
		fake, base := startFake(t)
		src := connector(t, base, newState())
		rc := startReceiver(t, src)
		id, err := fake.Subscribe(fhirfake.Subscription{Endpoint: rc.URL, Criteria: "Appointment", Style: style,
			Header: []string{"Authorization: Bearer " + webhookSecret}})
		require.NoError(t, err)
		_, err = fake.SendHandshake(id)
		require.NoError(t, err)

		_, err = fake.Create(appointment("booked")) // 1
		require.NoError(t, err)
		require.False(t, rc.last(t).Reconcile)

		fake.SkipEventNumber(id)
		_, err = fake.Create(appointment("pending")) // 2, lost
		require.NoError(t, err)
		require.Len(t, rc.all(), 2, "the skipped notification was not sent")

		_, err = fake.Create(appointment("proposed")) // 3
		require.NoError(t, err)
		in := rc.last(t)
		require.True(t, in.Reconcile, "number 2 never arrived")
		require.Len(t, in.Events, 1, "the notification's own event is still accepted")

		_, err = fake.Create(appointment("arrived")) // 4
		require.NoError(t, err)
		require.False(t, rc.last(t).Reconcile, "the gap is reported once")

		// A lost last notification shows in the next heartbeat.
		fake.SkipEventNumber(id)
		_, err = fake.Create(appointment("fulfilled")) // 5, lost
		require.NoError(t, err)
		_, err = fake.SendHeartbeat(id)
		require.NoError(t, err)
		require.True(t, rc.last(t).Reconcile, "style %d: heartbeat count 5, last seen 4", style)
		_, err = fake.SendHeartbeat(id)
		require.NoError(t, err)
		require.False(t, rc.last(t).Reconcile)
	}
}

// Re-delivering a notification (the sender retries after a 503) is not a gap.
func TestRedeliveryIsNotAGap(t *testing.T) {
	t.Parallel()
	src := connector(t, "http://127.0.0.1:1", newState())
	body := backportBundle(t, "event-notification", 1, []int{1}, []map[string]any{storedAppointment("a1", "1")})
	for range 3 {
		in, err := src.Parse(&connectors.Request{Method: http.MethodPost, Body: body})
		require.NoError(t, err)
		require.False(t, in.Reconcile)
		require.Len(t, in.Events, 1)
	}
	// A State that fails asks for a reconcile rather than guessing.
	failing := connector(t, "http://127.0.0.1:1", failingState{})
	in, err := failing.Parse(&connectors.Request{Method: http.MethodPost, Body: body})
	require.NoError(t, err)
	require.True(t, in.Reconcile)
	// Without State (validating) nothing is tracked.
	none := connector(t, "http://127.0.0.1:1", nil)
	in, err = none.Parse(&connectors.Request{Method: http.MethodPost, Body: body})
	require.NoError(t, err)
	require.False(t, in.Reconcile)
}

func storedAppointment(id, version string) map[string]any {
	a := appointment("booked")
	a["id"] = id
	a["meta"] = map[string]any{"versionId": version, "lastUpdated": "2026-11-02T09:30:0" + version + ".000Z"}
	return a
}

// backportBundle builds an R4 Backport notification by hand: one
// notification-event per number, focus on each resource, resources as
// full-resource entries.
func backportBundle(t *testing.T, kind string, since int, numbers []int, resources []map[string]any) []byte {
	t.Helper()
	params := []any{
		map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": "https://ehr.example/fhir/Subscription/s1"}},
		map[string]any{"name": "topic", "valueCanonical": "http://example.org/topic/appointment"},
		map[string]any{"name": "status", "valueCode": "active"},
		map[string]any{"name": "type", "valueCode": kind},
		map[string]any{"name": "events-since-subscription-start", "valueString": itoa(since)},
	}
	entries := []any{}
	for i, n := range numbers {
		parts := []any{map[string]any{"name": "event-number", "valueString": itoa(n)}}
		if i < len(resources) {
			r := resources[i]
			ref := "https://ehr.example/fhir/" + r["resourceType"].(string) + "/" + r["id"].(string)
			parts = append(parts, map[string]any{"name": "focus", "valueReference": map[string]any{"reference": ref}})
			entries = append(entries, map[string]any{"fullUrl": ref, "resource": r,
				"request": map[string]any{"method": "PUT", "url": r["resourceType"].(string) + "/" + r["id"].(string)}})
		}
		params = append(params, map[string]any{"name": "notification-event", "part": parts})
	}
	status := map[string]any{"fullUrl": "urn:uuid:1", "resource": map[string]any{"resourceType": "Parameters", "parameter": params}}
	return mustJSON(t, map[string]any{"resourceType": "Bundle", "type": "history", "entry": append([]any{status}, entries...)})
}

func itoa(n int) string { return strconv.Itoa(n) }

// Several resources in one notification give several events; additional
// context resources (not a focus) and unconfigured types give none.
func TestMultiResourceNotification(t *testing.T) {
	t.Parallel()
	src := connector(t, "http://127.0.0.1:1", newState())
	a1, a2 := storedAppointment("a1", "1"), storedAppointment("a2", "3")
	body := backportBundle(t, "event-notification", 2, []int{1, 2}, []map[string]any{a1, a2})
	// Add an additional-context Patient that no notification-event focuses on.
	var b map[string]any
	require.NoError(t, json.Unmarshal(body, &b))
	pat := patient("MRN-1", "Context")
	pat["id"], pat["meta"] = "p1", map[string]any{"versionId": "4", "lastUpdated": "2026-11-02T09:00:00Z"}
	b["entry"] = append(b["entry"].([]any), map[string]any{"fullUrl": "https://ehr.example/fhir/Patient/p1", "resource": pat})

	in, err := src.Parse(&connectors.Request{Method: http.MethodPost, Body: mustJSON(t, b)})
	require.NoError(t, err)
	require.False(t, in.Reconcile)
	require.Len(t, in.Events, 2)
	require.Equal(t, "Appointment/a1/_history/1", in.Events[0].ID)
	require.Equal(t, "Appointment.create", in.Events[0].Type)
	require.Equal(t, "Appointment/a2/_history/3", in.Events[1].ID)
	require.Equal(t, "Appointment.update", in.Events[1].Type)

	// A gap inside one notification's numbers is a gap too.
	body = backportBundle(t, "event-notification", 5, []int{3, 5}, []map[string]any{a1, a2})
	in, err = src.Parse(&connectors.Request{Method: http.MethodPost, Body: body})
	require.NoError(t, err)
	require.True(t, in.Reconcile)
}

func TestUnconfiguredTypesAreIgnored(t *testing.T) {
	t.Parallel()
	src := build(t, `{base_url: "http://127.0.0.1:1", webhook_secret: s3cret, resources: [Appointment]}`, connectors.Env{State: newState()})
	pat := patient("MRN-1", "Ignored")
	pat["id"], pat["meta"] = "p1", map[string]any{"versionId": "1", "lastUpdated": "2026-11-02T09:00:00Z"}
	in, err := src.Parse(&connectors.Request{Method: http.MethodPut, Subpath: "Patient/p1", Body: mustJSON(t, pat)})
	require.NoError(t, err)
	require.Empty(t, in.Events)
	require.False(t, in.Reconcile)
}

func TestMeta(t *testing.T) {
	t.Parallel()
	src := connector(t, "http://127.0.0.1:1", nil)
	// Without versionId the event id uses lastUpdated and the type is update.
	a := appointment("booked")
	a["id"], a["meta"] = "a9", map[string]any{"lastUpdated": "2026-11-02T09:30:00.250+01:00"}
	in, err := src.Parse(&connectors.Request{Method: http.MethodPost, Body: mustJSON(t, a)})
	require.NoError(t, err)
	require.Len(t, in.Events, 1)
	require.Equal(t, "Appointment/a9/_history/2026-11-02T08:30:00.25Z", in.Events[0].ID)
	require.Equal(t, "Appointment.update", in.Events[0].Type)

	a["meta"] = map[string]any{}
	_, err = src.Parse(&connectors.Request{Method: http.MethodPost, Body: mustJSON(t, a)})
	require.ErrorIs(t, err, connectors.ErrMalformed)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	src := connector(t, "http://127.0.0.1:1", nil)
	ok := &connectors.Request{Method: http.MethodPost, Header: bearer(webhookSecret)}
	require.NoError(t, src.Verify(ok))
	lower := http.Header{"Authorization": {"bearer " + webhookSecret}}
	require.NoError(t, src.Verify(&connectors.Request{Header: lower}), "the scheme is case-insensitive")

	for name, h := range map[string]http.Header{
		"missing":       {},
		"wrong token":   bearer("not-the-secret"),
		"prefix only":   bearer(webhookSecret[:5]),
		"longer":        bearer(webhookSecret + "x"),
		"basic scheme":  {"Authorization": {"Basic " + webhookSecret}},
		"no scheme":     {"Authorization": {webhookSecret}},
		"api token":     bearer(apiToken),
		"empty  bearer": {"Authorization": {"Bearer "}},
	} {
		err := src.Verify(&connectors.Request{Method: http.MethodPost, Header: h})
		require.ErrorIs(t, err, connectors.ErrUnauthorized, name)
		connectortest.NoLeak(t, err, webhookSecret, apiToken)
	}

	noSecret := build(t, `{base_url: "http://127.0.0.1:1"}`, connectors.Env{})
	require.ErrorIs(t, noSecret.Verify(ok), connectors.ErrUnauthorized, "without webhook_secret nothing is accepted")
}

// The fake's notifications carry the configured header; without it the
// receiver answers 401 and nothing is parsed.
func TestUnauthorizedNotification(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	rc := startReceiver(t, connector(t, base, newState()))
	_, err := fake.Subscribe(fhirfake.Subscription{Endpoint: rc.URL, Criteria: "Appointment", Style: fhirfake.StyleClassic,
		Header: []string{"Authorization: Bearer wrong"}})
	require.NoError(t, err)
	_, err = fake.Create(appointment("booked"))
	require.NoError(t, err)
	got := rc.all()
	require.Len(t, got, 1)
	require.ErrorIs(t, got[0].err, connectors.ErrUnauthorized)
	n := fake.Notifications()
	require.Equal(t, http.StatusUnauthorized, n[len(n)-1].Status)
}

func TestMalformed(t *testing.T) {
	t.Parallel()
	src := connector(t, "http://127.0.0.1:1", newState())
	a := storedAppointment("a1", "2")
	a["description"] = "Jane Example, knee pain"
	good := mustJSON(t, a)
	for name, r := range map[string]*connectors.Request{
		"not json":             {Method: http.MethodPost, Body: []byte("this is not json")},
		"json array":           {Method: http.MethodPost, Body: []byte(`[{"resourceType":"Patient"}]`)},
		"xml":                  {Method: http.MethodPost, Body: []byte(`<Patient xmlns="http://hl7.org/fhir"/>`)},
		"no resourceType":      {Method: http.MethodPost, Body: []byte(`{"id":"x"}`)},
		"GET":                  {Method: http.MethodGet, Body: good},
		"PUT without body":     {Method: http.MethodPut, Subpath: "Appointment/a1"},
		"PUT without path":     {Method: http.MethodPut, Body: good},
		"PUT to another id":    {Method: http.MethodPut, Subpath: "Appointment/a2", Body: good},
		"PUT to another type":  {Method: http.MethodPut, Subpath: "Patient/a1", Body: good},
		"PUT to a deep path":   {Method: http.MethodPut, Subpath: "x/Appointment/a1", Body: good},
		"bad id":               {Method: http.MethodPost, Body: []byte(`{"resourceType":"Appointment","id":"a b","meta":{"versionId":"1"}}`)},
		"bad number":           {Method: http.MethodPost, Body: []byte(strings.Replace(string(backportBundle(t, "event-notification", 1, []int{1}, nil)), `"valueString":"1"`, `"valueString":"one"`, 1))},
		"unknown type":         {Method: http.MethodPost, Body: backportBundle(t, "surprise", 1, nil, nil)},
		"status without sub":   {Method: http.MethodPost, Body: []byte(`{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"SubscriptionStatus","type":"heartbeat"}}]}`)},
		"entry without id":     {Method: http.MethodPost, Body: []byte(`{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"SubscriptionStatus","type":"event-notification","subscription":{"reference":"Subscription/1"}}},{"resource":{"resourceType":"Appointment","status":"Jane Example"}}]}`)},
		"wrong-shaped numbers": {Method: http.MethodPost, Body: []byte(`{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"SubscriptionStatus","type":"heartbeat","subscription":{"reference":"Subscription/1"},"eventsSinceSubscriptionStart":{"x":1}}}]}`)},
	} {
		_, err := src.Parse(r)
		require.ErrorIs(t, err, connectors.ErrMalformed, name)
		connectortest.NoLeak(t, err, "Jane Example", "knee pain")
	}
}

func TestSample(t *testing.T) {
	t.Parallel()
	cfg := `{base_url: "http://127.0.0.1:1", webhook_secret: ` + webhookSecret + `, resources: [MedicationRequest]}`
	src := build(t, cfg, connectors.Env{State: newState()})
	var node = yamlNode(t, cfg)
	for _, typ := range []string{"", "MedicationRequest.update"} {
		h, body, err := fhir.Type().Sample(node, connectors.Env{}, typ, nil)
		require.NoError(t, err)
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		require.NoError(t, src.Verify(r))
		in, err := src.Parse(r)
		require.NoError(t, err)
		require.Len(t, in.Events, 1)
		want := typ
		if want == "" {
			want = "MedicationRequest.create"
		}
		require.Equal(t, want, in.Events[0].Type)
	}
}

// An id-only read that fails asks for a reconcile instead of failing the
// notification; a resource deleted since gives no event.
func TestIDOnlyReadFailures(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	src := connector(t, base, newState())
	rc := startReceiver(t, src)
	_, err := fake.Subscribe(fhirfake.Subscription{Endpoint: rc.URL, Criteria: "Appointment", Style: fhirfake.StyleBackportR4,
		Content: fhirfake.ContentIDOnly, Header: []string{"Authorization: Bearer " + webhookSecret}})
	require.NoError(t, err)

	fake.Fail(fhirfake.Failure{Method: http.MethodGet, Path: "/Appointment/", Status: http.StatusServiceUnavailable})
	_, err = fake.Create(appointment("booked"))
	require.NoError(t, err)
	in := rc.last(t)
	require.Empty(t, in.Events)
	require.True(t, in.Reconcile)
	n := fake.Notifications()
	require.Equal(t, http.StatusOK, n[len(n)-1].Status, "the sender is answered 200")

	fake.Fail(fhirfake.Failure{Method: http.MethodGet, Path: "/Appointment/", Status: http.StatusGone, IssueCode: "deleted"})
	_, err = fake.Create(appointment("pending"))
	require.NoError(t, err)
	in = rc.last(t)
	require.Empty(t, in.Events)
	require.False(t, in.Reconcile, "gone since: nothing to recover")
}
