package e2e

// End-to-end tests of the FHIR capability: a real in-process agent (every
// shipped connector type, SQLite store, both listeners on loopback) against
// fhirfake servers playing the EHR, the pharmacy and the portal. The
// examples' own configs and mappings are run where a test is about them.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

const fhirAgentHead = `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
log: {level: debug}
`

// fhirReport is a lab DiagnosticReport in the EHR, in the given status.
func fhirReport(id, status, conclusion string) map[string]any {
	r := map[string]any{
		"resourceType": "DiagnosticReport", "id": id, "status": status,
		"category": []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}}}},
		"code":     map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel - Blood by Automated count"}}},
		"subject":  map[string]any{"reference": "Patient/pat-1001"},
		"issued":   "2026-11-30T11:05:00Z",
		"result":   []any{map[string]any{"reference": "Observation/obs-718-7"}},
	}
	if conclusion != "" {
		r["conclusion"] = conclusion
	}
	return r
}

// TestFHIRNotificationShapesDeliverEachVersionOnce (acceptance 1): every
// notification shape a FHIR server sends gives exactly one delivery per
// resource version, and handshakes and heartbeats give none. One agent has
// one fhir source per shape, each subscribed to the same EHR:
//
//   - empty: classic rest-hook without payload, an empty POST; the source
//     asks for a reconcile run and the delivery comes through the lister;
//   - post:  classic rest-hook, the resource POSTed to the endpoint (Medplum);
//   - put:   classic rest-hook, the resource PUT to [endpoint]/Type/id (HAPI);
//   - idonly: R4 Backport notification Bundle, id-only (read back from base_url);
//   - full:  R4 Backport notification Bundle, full-resource;
//   - r4b, r5: the same topic-based notifications in R4B (id-only) and R5
//     (full-resource) shapes, with a SubscriptionStatus first entry.
func TestFHIRNotificationShapesDeliverEachVersionOnce(t *testing.T) {
	t.Parallel()
	ehr, ehrURL := newFHIRServer(t)
	sink, sinkURL := newFHIRHTTPSink(t)
	shapes := []string{"empty", "post", "put", "idonly", "full", "r4b", "r5"}
	topic := []string{"idonly", "full", "r4b", "r5"}

	var cfg strings.Builder
	cfg.WriteString(fhirAgentHead + "connectors:\n")
	fmt.Fprintf(&cfg, "  sink: {type: http, url: %q}\n", sinkURL+"/{{ doc.shape }}")
	for _, s := range shapes {
		fmt.Fprintf(&cfg, "  ehr-%s: {type: fhir, base_url: %q, webhook_secret: %q, resources: [DiagnosticReport]}\n", s, ehrURL, fhirBearer)
	}
	cfg.WriteString("routes:\n")
	for _, s := range shapes {
		fmt.Fprintf(&cfg, `  - name: %[1]s
    from: ehr-%[1]s
    events: [DiagnosticReport.create, DiagnosticReport.update]
    map: {fields: {shape: {value: %[1]s}, event: {from: event.id}, status: {from: payload.status}}}
    to: sink
    retry: {max_attempts: 5, backoff: [100ms]}
`, s)
	}
	// Only the empty shape needs its lister: nothing else may hide a lost event.
	cfg.WriteString("reconcile:\n  - {name: ehr-empty, from: ehr-empty, schedule: \"@every 1h\", lookback: 5m}\n")
	a := startFHIRAgent(t, cfg.String())

	subs := map[string]string{
		"empty":  a.subscribe(t, ehr, "ehr-empty", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleClassic, Content: fhirfake.ContentEmpty}),
		"post":   a.subscribe(t, ehr, "ehr-post", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleClassic, Content: fhirfake.ContentFullResource, ClassicPOST: true}),
		"put":    a.subscribe(t, ehr, "ehr-put", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleClassic, Content: fhirfake.ContentFullResource}),
		"idonly": a.subscribe(t, ehr, "ehr-idonly", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleBackportR4, Content: fhirfake.ContentIDOnly}),
		"full":   a.subscribe(t, ehr, "ehr-full", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleBackportR4, Content: fhirfake.ContentFullResource}),
		"r4b":    a.subscribe(t, ehr, "ehr-r4b", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleR4B, Content: fhirfake.ContentIDOnly}),
		"r5":     a.subscribe(t, ehr, "ehr-r5", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleR5, Content: fhirfake.ContentFullResource}),
	}
	// A topic-based subscription starts with a handshake: no event.
	for _, s := range topic {
		n, err := ehr.SendHandshake(subs[s])
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, n.Status, "%s handshake: %s", s, n.Err)
	}
	for _, s := range shapes {
		require.Empty(t, a.events(t, "ehr-"+s), "%s: a handshake is no event", s)
	}

	// Four versions of two reports, one write at a time: a listing sees only
	// current versions, so the empty shape needs each version listed before
	// the next one is written (as a server's notifications would be spaced).
	writes := []map[string]any{
		fhirReport("dr-100", "preliminary", ""),
		fhirReport("dr-100", "final", "Mild normocytic anaemia."),
		fhirReport("dr-100", "amended", "Mild normocytic anaemia. Repeat in 3 months."),
		fhirReport("dr-200", "final", ""),
	}
	var want []string
	for _, w := range writes {
		stored, err := ehr.Update(w)
		require.NoError(t, err)
		id := fhirEventID(stored)
		want = append(want, id)
		for _, s := range shapes {
			a.waitDelivery(t, s, id, store.Succeeded)
		}
	}
	require.Equal(t, []string{
		"DiagnosticReport/dr-100/_history/1", "DiagnosticReport/dr-100/_history/2",
		"DiagnosticReport/dr-100/_history/3", "DiagnosticReport/dr-200/_history/1",
	}, want)

	// Heartbeats carry the running count, which is not beyond what arrived: no event.
	for _, s := range topic {
		n, err := ehr.SendHeartbeat(subs[s])
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, n.Status, "%s heartbeat: %s", s, n.Err)
		require.Equal(t, 4, n.EventsSinceStart)
	}
	time.Sleep(300 * time.Millisecond) // anything extra (a late reconcile, a retry) would show by now

	byShape := map[string][]string{}
	for _, r := range sink.Requests() {
		var doc struct{ Shape, Event string }
		require.NoError(t, json.Unmarshal(r.Body, &doc))
		require.Equal(t, "/"+doc.Shape, r.Path)
		byShape[doc.Shape] = append(byShape[doc.Shape], doc.Event)
	}
	for _, s := range shapes {
		var got []string
		for _, d := range a.deliveries(t, s) {
			require.Equal(t, store.Succeeded, d.State, "%s %s", s, d.EventID)
			require.Equal(t, 1, d.Attempts, "%s %s", s, d.EventID)
			require.Equal(t, "ehr-"+s, d.Source)
			got = append(got, d.EventID)
		}
		sort.Strings(got)
		require.Equal(t, want, got, "%s: one delivery per version, no more", s)
		require.Len(t, a.events(t, "ehr-"+s), len(want), "%s: one event per version (handshake and heartbeat none)", s)
		sent := byShape[s]
		sort.Strings(sent)
		require.Equal(t, want, sent, "%s: the sink got each version once", s)
	}

	// The shapes were what they claim.
	for _, n := range ehr.Notifications() {
		require.Equal(t, http.StatusOK, n.Status, "%+v", n)
		switch n.Subscription {
		case subs["empty"]:
			require.Empty(t, n.Body, "an empty rest-hook has no body")
			require.Equal(t, http.MethodPost, n.Method)
		case subs["put"]:
			require.Equal(t, http.MethodPut, n.Method)
			require.Contains(t, n.URL, "/hooks/ehr-put/DiagnosticReport/dr-")
		case subs["post"]:
			require.Equal(t, http.MethodPost, n.Method)
			require.True(t, strings.HasSuffix(n.URL, "/hooks/ehr-post"), n.URL)
		}
	}
	// The empty shape's deliveries came from reconcile runs the notifications
	// started (a run is recorded when it ends, which may be just after its
	// deliveries succeeded).
	recovered := 0
	require.Eventually(t, func() bool {
		recovered = 0
		for _, r := range a.runs(t, "ehr-empty") {
			require.Equal(t, "gap", r.Trigger, "runs are started by the notifications, not the schedule")
			require.Empty(t, r.Error)
			recovered += r.Recovered
		}
		return recovered >= len(want)
	}, fhirWait, fhirTick)
	require.Equal(t, len(want), recovered, "each version was found by exactly one run")
	// id-only notifications were read back from base_url, version by version.
	reads := 0
	for _, r := range ehr.Requests() {
		if r.Method == http.MethodGet && strings.HasPrefix(r.Path, "/DiagnosticReport/dr-") {
			reads++
		}
	}
	require.Equal(t, 2*len(want), reads, "one read per id-only notification (R4 Backport and R4B)")
}

// TestFHIRRefillPostedTwiceCreatesOneMedicationRequest (acceptance 2): the
// refill-to-pharmacy example's config and mapping, against a fake pharmacy.
// The portal sends the same refill request twice (a redelivery with the
// same webhook id, then a second submission with a new one): one
// MedicationRequest, whose fields are exactly the mapping test's.
func TestFHIRRefillPostedTwiceCreatesOneMedicationRequest(t *testing.T) {
	t.Parallel()
	token := fhirReadSecret(t, fhirExample(t, "refill-to-pharmacy/pharmacy-demo.token"))
	pharmacy, pharmacyURL := newFHIRServer(t, fhirfake.WithBearer(token)) // the pharmacy insists on it
	path := fhirCopyExample(t, "refill-to-pharmacy",
		"127.0.0.1:8080", "127.0.0.1:0", "127.0.0.1:8081", "127.0.0.1:0",
		"http://127.0.0.1:9095", pharmacyURL)
	a := startFHIRAgentFile(t, path)
	dir := filepath.Dir(path)
	secret := fhirReadSecret(t, filepath.Join(dir, "portal-demo.secret"))
	body, err := os.ReadFile(filepath.Join(dir, "mappings", "testdata", "refill-requested.json"))
	require.NoError(t, err)

	const route = "refill-to-pharmacy"
	a.sendWebhook(t, "portal", secret, "msg_refill_1", body)
	first := a.waitDelivery(t, route, "msg_refill_1", store.Succeeded)
	a.sendWebhook(t, "portal", secret, "msg_refill_1", body) // the portal's retry: a duplicate
	a.sendWebhook(t, "portal", secret, "msg_refill_2", body) // the patient pressed the button again
	second := a.waitDelivery(t, route, "msg_refill_2", store.Succeeded)
	require.Len(t, a.deliveries(t, route), 2)

	require.Equal(t, 1, pharmacy.Count("MedicationRequest"), "create_if_none_exist made one resource")
	require.Equal(t, first.ExternalID, second.ExternalID, "the second request found the first one's resource")
	require.Regexp(t, `^MedicationRequest/[^/]+/_history/1$`, first.ExternalID)
	var creates []fhirfake.Recorded
	for _, r := range pharmacy.Requests() {
		if r.Method == http.MethodPost && r.Path == "/MedicationRequest" {
			creates = append(creates, r)
		}
	}
	require.Len(t, creates, 2)
	require.Equal(t, []int{http.StatusCreated, http.StatusOK}, []int{creates[0].Status, creates[1].Status})
	for _, r := range creates {
		require.Equal(t, "identifier="+url.QueryEscape("https://portal.example.clinic/fhir/sid/refill-request|rr_7Q2M9KX4"), r.Header.Get("If-None-Exist"))
		require.Equal(t, "Bearer "+token, r.Header.Get("Authorization"))
	}

	// The stored resource is the mapping test's expected document.
	got, ok := pharmacy.Read("MedicationRequest", fhirRefID(t, first.ExternalID))
	require.True(t, ok)
	require.Equal(t, "proposal", got["intent"])
	require.Equal(t, "draft", got["status"])
	require.Equal(t, map[string]any{"reference": "MedicationRequest/medrx-88213"}, got["priorPrescription"])
	require.Equal(t, map[string]any{"reference": "Patient/pat-1001"}, got["subject"])
	var m struct {
		Tests []struct {
			Name      string         `yaml:"name"`
			InputFile string         `yaml:"input_file"`
			Expect    map[string]any `yaml:"expect"`
		} `yaml:"tests"`
	}
	src, err := os.ReadFile(filepath.Join(dir, "mappings", "refill-medicationrequest.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(src, &m))
	require.Equal(t, "testdata/refill-requested.json", m.Tests[0].InputFile, "the first mapping test is the fixture this test posts")
	require.JSONEq(t, fhirCanon(t, m.Tests[0].Expect), fhirCanon(t, fhirWithout(got, "id", "meta")))
}

// TestFHIROutOfOrderPatientUpdatesKeepTheNewer (acceptance 3): the
// patient-sync example's config and mapping, an EHR and a portal (both
// fhirfakes). Two versions of one Patient arrive newest first (a late
// retry of the older notification): the portal ends with the newer one, and
// the older is skipped as stale, because fhir upsert declares Overwrites.
func TestFHIROutOfOrderPatientUpdatesKeepTheNewer(t *testing.T) {
	t.Parallel()
	ehr, ehrURL := newFHIRServer(t)
	portal, portalURL := newFHIRServer(t)
	path := fhirCopyExample(t, "patient-sync",
		"127.0.0.1:8080", "127.0.0.1:0", "127.0.0.1:8081", "127.0.0.1:0",
		"http://127.0.0.1:9095", ehrURL, "http://127.0.0.1:9096", portalURL)
	a := startFHIRAgentFile(t, path)
	dir := filepath.Dir(path)
	a.bearer = fhirReadSecret(t, filepath.Join(dir, "ehr-demo.secret"))

	// Two versions in the EHR (no Subscription: the test sends the notifications).
	patient := fhirWithout(fhirJSON(t, filepath.Join(dir, "mappings", "testdata", "patient-updated.json")), "meta")
	v1, err := ehr.Update(patient)
	require.NoError(t, err)
	patient["name"] = []any{map[string]any{"use": "official", "family": "Okafor-Reid", "given": []any{"Adaeze", "Grace"}}}
	v2, err := ehr.Update(patient)
	require.NoError(t, err)
	require.Equal(t, "Patient/pat-1001/_history/1", fhirEventID(v1))
	require.Equal(t, "Patient/pat-1001/_history/2", fhirEventID(v2))

	const route = "patient-to-portal"
	a.notify(t, "ehr", http.MethodPost, "", fhirMustJSON(t, v2))
	newer := a.waitDelivery(t, route, fhirEventID(v2), store.Succeeded)
	a.notify(t, "ehr", http.MethodPut, "Patient/pat-1001", fhirMustJSON(t, v1)) // the late one
	older := a.waitDelivery(t, route, fhirEventID(v1), store.Skipped)
	require.Equal(t, "stale", older.LastError)
	require.Zero(t, older.Attempts, "a stale delivery never reaches the portal")

	portalID := fhirRefID(t, newer.ExternalID)
	got, ok := portal.Read("Patient", portalID)
	require.True(t, ok)
	require.Equal(t, "Okafor-Reid", got["name"].([]any)[0].(map[string]any)["family"], "the portal keeps the newer name")
	require.Equal(t, []any{map[string]any{"system": "https://ehr.example.clinic/fhir/sid/mrn", "value": "MRN-204518"}}, got["identifier"])
	require.Equal(t, 1, portal.Count("Patient"))
	require.Equal(t, 1, portal.Versions("Patient", portalID), "the older version was never written")

	// A newer version still goes through: the guard compares, it does not freeze.
	patient["telecom"] = []any{map[string]any{"system": "phone", "value": "07911 654321", "use": "mobile"}}
	v3, err := ehr.Update(patient)
	require.NoError(t, err)
	a.notify(t, "ehr", http.MethodPost, "", fhirMustJSON(t, v3))
	a.waitDelivery(t, route, fhirEventID(v3), store.Succeeded)
	got, _ = portal.Read("Patient", portalID)
	require.Equal(t, "07911 654321", got["telecom"].([]any)[0].(map[string]any)["value"])
	require.Equal(t, 2, portal.Versions("Patient", portalID))
}

// TestFHIRPreconditionFailedIsDeadTransientIsRetried (acceptance 4): the
// portal sends contact changes made against a known EHR version; the agent
// updates the EHR's Patient with If-Match. A clerk changed the record in
// between: 412, dead at once with the reason. An OperationOutcome with issue
// code `transient` (here on a 409, which alone would be final) is retried
// and then succeeds.
func TestFHIRPreconditionFailedIsDeadTransientIsRetried(t *testing.T) {
	t.Parallel()
	ehr, ehrURL := newFHIRServer(t)
	a := startFHIRAgent(t, fhirAgentHead+fmt.Sprintf(`connectors:
  portal: {type: webhook, webhook_secret: %q, event: {key: payload.data.patient_id}}
  ehr: {type: fhir, base_url: %q}
routes:
  - name: contact-to-ehr
    from: portal
    events: [patient.contact_updated]
    map:
      fields:
        resourceType: {value: Patient}
        id: {from: payload.data.patient_id, required: true}
        _version: {from: payload.data.ehr_version, required: true}
        identifier: {expr: '[{"system": "https://ehr.example.clinic/fhir/sid/mrn", "value": payload.data.mrn}]'}
        name: {expr: '[{"family": payload.data.family, "given": [payload.data.given]}]'}
        telecom: {expr: '[{"system": "phone", "value": payload.data.mobile, "use": "mobile"}]'}
    to: {connector: ehr, action: update}
    retry: {max_attempts: 5, backoff: [100ms]}
`, fhirPortalSecret, ehrURL))
	patient := func(id, family, mobile string) map[string]any {
		return map[string]any{
			"resourceType": "Patient", "id": id,
			"identifier": []any{map[string]any{"system": "https://ehr.example.clinic/fhir/sid/mrn", "value": "MRN-" + id}},
			"name":       []any{map[string]any{"family": family, "given": []any{"Sam"}}},
			"telecom":    []any{map[string]any{"system": "phone", "value": mobile, "use": "mobile"}},
		}
	}
	change := func(id, version, mobile string) []byte {
		return fhirMustJSON(t, map[string]any{"type": "patient.contact_updated", "timestamp": "2026-11-30T12:00:00Z", "data": map[string]any{
			"patient_id": id, "ehr_version": version, "mrn": "MRN-" + id, "family": "Carter", "given": "Sam", "mobile": mobile,
		}})
	}

	// 412: the portal worked from version 1; the EHR is at version 2.
	_, err := ehr.Update(patient("pat-412", "Carter", "07911 100001"))
	require.NoError(t, err)
	_, err = ehr.Update(patient("pat-412", "Carter-Jones", "07911 100001")) // the clerk's edit
	require.NoError(t, err)
	a.sendWebhook(t, "portal", fhirPortalSecret, "msg_412", change("pat-412", "1", "07911 100002"))
	dead := a.waitDelivery(t, "contact-to-ehr", "msg_412", store.Dead)
	require.Equal(t, 1, dead.Attempts, "a failed precondition is not retried")
	require.Contains(t, dead.LastError, "412")
	require.Contains(t, dead.LastError, "precondition failed")
	require.NotContains(t, dead.LastError, "07911", "the reason carries no patient data")
	cur, _ := ehr.Read("Patient", "pat-412")
	require.Equal(t, "2", cur["meta"].(map[string]any)["versionId"], "the clerk's version stands")
	var ifMatch []string
	for _, r := range ehr.Requests() {
		if r.Method == http.MethodPut && r.Path == "/Patient/pat-412" {
			ifMatch = append(ifMatch, r.Header.Get("If-Match"))
		}
	}
	require.Equal(t, []string{`W/"1"`}, ifMatch)

	// transient: two answers 409 with issue code transient, then the server recovers.
	_, err = ehr.Update(patient("pat-409", "Carter", "07911 200001"))
	require.NoError(t, err)
	ehr.Fail(fhirfake.Failure{Status: http.StatusConflict, IssueCode: "transient", Diagnostics: "Database busy, try again",
		Method: http.MethodPut, Path: "/Patient/pat-409", Times: 2})
	a.sendWebhook(t, "portal", fhirPortalSecret, "msg_transient", change("pat-409", "1", "07911 200002"))
	ok := a.waitDelivery(t, "contact-to-ehr", "msg_transient", store.Succeeded)
	require.Equal(t, 3, ok.Attempts, "retried twice, then delivered")
	require.Equal(t, "Patient/pat-409/_history/2", ok.ExternalID)
	cur, _ = ehr.Read("Patient", "pat-409")
	require.Equal(t, "07911 200002", cur["telecom"].([]any)[0].(map[string]any)["value"])
}

// TestFHIREventNumberGapReconciles (acceptance 5): a topic-based
// subscription loses a notification (SkipEventNumber). The next one's event
// number shows the gap; the agent starts the source's reconciler (trigger
// "gap"), which lists the missed report, and it is delivered.
func TestFHIREventNumberGapReconciles(t *testing.T) {
	t.Parallel()
	ehr, ehrURL := newFHIRServer(t)
	sink, sinkURL := newFHIRHTTPSink(t)
	a := startFHIRAgent(t, fhirAgentHead+fmt.Sprintf(`connectors:
  ehr: {type: fhir, base_url: %q, webhook_secret: %q, resources: [DiagnosticReport]}
  portal: {type: http, url: %q}
routes:
  - name: lab-results
    from: ehr
    events: [DiagnosticReport.create, DiagnosticReport.update]
    when: 'payload.status in ["final", "amended", "corrected"]'
    map: {fields: {report: {from: event.key}, status: {from: payload.status}}}
    to: portal
    retry: {max_attempts: 5, backoff: [100ms]}
reconcile:
  - {name: ehr-reports, from: ehr, schedule: "@every 1h", lookback: 5m}
`, ehrURL, fhirBearer, sinkURL+"/notifications"))
	sub := a.subscribe(t, ehr, "ehr", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleBackportR4, Content: fhirfake.ContentIDOnly})
	n, err := ehr.SendHandshake(sub)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, n.Status)

	const route = "lab-results"
	first, err := ehr.Update(fhirReport("dr-1", "final", ""))
	require.NoError(t, err)
	a.waitDelivery(t, route, fhirEventID(first), store.Succeeded)

	ehr.SkipEventNumber(sub)
	missed, err := ehr.Update(fhirReport("dr-2", "final", "")) // event number 2: never sent
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond)
	require.Empty(t, a.delivery(t, route, fhirEventID(missed)).ID, "nothing told the agent about it yet")
	require.Empty(t, a.runs(t, "ehr-reports"))

	third, err := ehr.Update(fhirReport("dr-3", "final", "")) // number 3 arrives: 2 is missing
	require.NoError(t, err)
	a.waitDelivery(t, route, fhirEventID(third), store.Succeeded)
	d := a.waitDelivery(t, route, fhirEventID(missed), store.Succeeded)
	require.Equal(t, 1, d.Attempts)

	var gap *store.Run
	require.Eventually(t, func() bool {
		for _, r := range a.runs(t, "ehr-reports") {
			if r.Trigger == "gap" && !r.FinishedAt.IsZero() {
				gap = &r
				return true
			}
		}
		return false
	}, fhirWait, fhirTick)
	require.Empty(t, gap.Error)
	require.GreaterOrEqual(t, gap.Recovered, 1, "the run found the missed report")
	require.GreaterOrEqual(t, gap.Listed, 2)
	for _, r := range a.runs(t, "ehr-reports") {
		require.Equal(t, "gap", r.Trigger, "only the gap started a run")
	}

	var skipped []int
	for _, n := range ehr.Notifications() {
		if n.Skipped {
			skipped = append(skipped, n.EventNumber)
		}
	}
	require.Equal(t, []int{2}, skipped)
	// Each report reached the portal once.
	perReport := map[string]int{}
	for _, r := range sink.Requests() {
		var doc struct{ Report string }
		require.NoError(t, json.Unmarshal(r.Body, &doc))
		perReport[doc.Report]++
	}
	require.Equal(t, map[string]int{"DiagnosticReport/dr-1": 1, "DiagnosticReport/dr-2": 1, "DiagnosticReport/dr-3": 1}, perReport)
}

// TestFHIRListerPagesAndWatermark (acceptance 6): 250 Patients, three
// search pages of 100, are all listed once by the agent's reconcile run; a
// second run lists only what changed since the first run's newest change.
//
// The EHR's clock is frozen an hour ahead (clock skew, on purpose): every
// write gets its own millisecond, and the reconciler's lookback is 1ms, so
// the second run asks for `_lastUpdated=gt<watermark - 1ms>`. That window
// holds the newer resources plus exactly one old one: the one whose change
// set the watermark (FHIR compares at millisecond precision). Dedupe makes
// that one `known`; nothing old is recovered again.
func TestFHIRListerPagesAndWatermark(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	ehrNow := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	ehr, ehrURL := newFHIRServer(t, fhirfake.WithClock(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return ehrNow
	}))
	a := startFHIRAgent(t, fhirAgentHead+fmt.Sprintf(`connectors:
  ehr: {type: fhir, base_url: %q, resources: [Patient]}
  out: {type: file, path: ./data/out.jsonl}
routes:
  - name: patients
    from: ehr
    events: [Patient.create, Patient.update]
    map: {fields: {patient: {from: event.key}}}
    to: out
reconcile:
  - {name: ehr-patients, from: ehr, schedule: "@every 1h", lookback: 1ms}
`, ehrURL))
	patient := func(i int, family string) map[string]any {
		return map[string]any{
			"resourceType": "Patient", "id": fmt.Sprintf("pat-%04d", i),
			"identifier": []any{map[string]any{"system": "https://ehr.example.clinic/fhir/sid/mrn", "value": fmt.Sprintf("MRN-%06d", 100000+i)}},
			"name":       []any{map[string]any{"family": family, "given": []any{"Test"}}},
		}
	}
	var last map[string]any
	for i := 1; i <= 250; i++ {
		var err error
		last, err = ehr.Update(patient(i, "Original"))
		require.NoError(t, err)
	}
	searches := func(from int) (pages int, queries []string) {
		reqs := ehr.Requests()
		for _, r := range reqs[from:] {
			if r.Method != http.MethodGet {
				continue
			}
			if r.Path == "/Patient" || strings.Contains(r.Query, "_getpages") {
				pages++
				queries = append(queries, r.Query)
			}
		}
		return pages, queries
	}

	mark := len(ehr.Requests())
	run1 := a.reconcileNow(t, "ehr-patients")
	require.Equal(t, 250, run1.Listed, "every resource listed")
	require.Equal(t, 250, run1.Recovered, "...and each once")
	require.Zero(t, run1.Known)
	lastUpdated, err := time.Parse(time.RFC3339Nano, last["meta"].(map[string]any)["lastUpdated"].(string))
	require.NoError(t, err)
	require.True(t, run1.WatermarkAfter.Equal(lastUpdated), "watermark %s, newest change %s", run1.WatermarkAfter, lastUpdated)
	pages, queries := searches(mark)
	require.Equal(t, 3, pages, "100 + 100 + 50: %v", queries)
	q, err := url.ParseQuery(queries[0])
	require.NoError(t, err)
	require.Equal(t, "100", q.Get("_count"))
	require.Equal(t, "_lastUpdated", q.Get("_sort"))
	require.True(t, strings.HasPrefix(q.Get("_lastUpdated"), "gt"), q.Get("_lastUpdated"))
	ids := map[string]bool{}
	for _, d := range a.deliveries(t, "patients") {
		require.False(t, ids[d.EventID], "listed twice: %s", d.EventID)
		ids[d.EventID] = true
	}
	require.Len(t, ids, 250)

	// A minute later in the EHR: two updates and one new patient.
	mu.Lock()
	ehrNow = ehrNow.Add(time.Minute)
	mu.Unlock()
	var newer []string
	for _, p := range []map[string]any{patient(7, "Updated"), patient(100, "Updated"), patient(251, "New")} {
		stored, err := ehr.Update(p)
		require.NoError(t, err)
		newer = append(newer, fhirEventID(stored))
	}
	mark = len(ehr.Requests())
	run2 := a.reconcileNow(t, "ehr-patients")
	require.Equal(t, 3, run2.Recovered, "only the newer versions are new")
	require.Equal(t, 1, run2.Known, "the one at the watermark, inside the 1ms lookback")
	require.Equal(t, 4, run2.Listed, "not the 250 again")
	require.True(t, run2.WatermarkBefore.Equal(run1.WatermarkAfter))
	pages, _ = searches(mark)
	require.Equal(t, 1, pages)
	var got []string
	for _, d := range a.deliveries(t, "patients") {
		if !ids[d.EventID] {
			got = append(got, d.EventID)
		}
	}
	sort.Strings(got)
	require.Equal(t, []string{"Patient/pat-0007/_history/2", "Patient/pat-0100/_history/2", "Patient/pat-0251/_history/1"}, got)
	require.ElementsMatch(t, newer, got)
	require.Len(t, a.deliveries(t, "patients"), 253)
}

// TestFHIRLabResultsExample runs the lab-results-to-portal example against
// an EHR, a portal notification endpoint and Twilio (all fakes): a report
// goes preliminary -> final -> corrected; the patient is told twice, in the
// portal and by SMS, and no result text ever leaves.
func TestFHIRLabResultsExample(t *testing.T) {
	t.Parallel()
	ehr, ehrURL := newFHIRServer(t)
	portal, portalURL := newFHIRHTTPSink(t)
	sms := twiliofake.New(twiliofake.AcceptAnyCredentials())
	t.Cleanup(sms.Close)
	smsSrv := newFHIRTestServer(t, sms)
	path := fhirCopyExample(t, "lab-results-to-portal",
		"127.0.0.1:8080", "127.0.0.1:0", "127.0.0.1:8081", "127.0.0.1:0",
		"http://127.0.0.1:9095", ehrURL, "http://127.0.0.1:9096", portalURL, "http://127.0.0.1:9097", smsSrv)
	a := startFHIRAgentFile(t, path)
	dir := filepath.Dir(path)
	a.bearer = fhirReadSecret(t, filepath.Join(dir, "ehr-demo.secret"))
	a.subscribe(t, ehr, "ehr", fhirfake.Subscription{Criteria: "DiagnosticReport", Style: fhirfake.StyleClassic, Content: fhirfake.ContentFullResource})

	report := fhirWithout(fhirJSON(t, filepath.Join(dir, "mappings", "testdata", "report-final.json")), "meta")
	var ids []string
	for _, status := range []string{"preliminary", "final", "corrected"} {
		report["status"] = status
		if status == "corrected" {
			report["conclusion"] = "Haemoglobin corrected to 118 g/L."
		}
		stored, err := ehr.Update(report)
		require.NoError(t, err)
		ids = append(ids, fhirEventID(stored))
	}
	for _, route := range []string{"lab-results-to-portal", "lab-results-sms"} {
		d := a.waitDelivery(t, route, ids[0], store.Skipped)
		require.Equal(t, "when: false", d.LastError, "a preliminary report tells nobody")
		a.waitDelivery(t, route, ids[1], store.Succeeded)
		a.waitDelivery(t, route, ids[2], store.Succeeded)
	}
	reqs := portal.Requests()
	require.Len(t, reqs, 2)
	var titles []string
	for _, r := range reqs {
		require.Equal(t, "/api/notifications", r.Path)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(r.Body, &doc))
		require.Equal(t, "MRN-204518", doc["patient_mrn"])
		require.Equal(t, "DiagnosticReport/dr-55012", doc["report"])
		titles = append(titles, doc["title"].(string))
		for _, result := range []string{"anaemia", "haemoglobin", "118", "58410-2", "blood count"} {
			require.NotContains(t, strings.ToLower(string(r.Body)), result)
		}
	}
	require.ElementsMatch(t, []string{"Your test results are ready", "Your updated test results are ready"}, titles)
	msgs := sms.Messages()
	require.Len(t, msgs, 2)
	for _, m := range msgs {
		require.Equal(t, "+447911123456", m.To)
		require.Contains(t, m.Body, "your test results from Riverside Clinic are ready")
		require.NotContains(t, m.Body, "anaemia")
	}
}

// TestFHIRExamplesValidateAndTest (acceptance 7, beside cmd/clinicbridge's
// TestExamples, which runs `validate` and `test` on every example): the
// three FHIR examples load with no environment at all (demo secrets come
// from ${file:...}), without warnings, and every mapping they use has tests,
// all passing; each README walks through it with `clinicbridge fake fhir`.
func TestFHIRExamplesValidateAndTest(t *testing.T) {
	t.Parallel()
	noEnv := config.Options{Env: func(string) (string, bool) { return "", false }}
	for _, name := range []string{"lab-results-to-portal", "refill-to-pharmacy", "patient-sync"} {
		path := fhirExample(t, filepath.Join(name, "clinicbridge.yaml"))
		ag, err := app.Load(path, all.Registry(), noEnv, zerolog.Nop())
		require.NoError(t, err, name)
		t.Cleanup(func() { ag.Close() })
		require.Empty(t, ag.Warnings, name)
		require.NotEmpty(t, ag.Mappings, name)
		for file, prog := range ag.Mappings {
			tests := prog.Tests()
			require.NotEmpty(t, tests, "%s has no tests", file)
			for _, tc := range tests {
				input := tc.Input
				if tc.InputFile != "" {
					raw := fhirJSON(t, filepath.Join(filepath.Dir(file), tc.InputFile))
					now := time.Now().UTC().Format(time.RFC3339) // as `clinicbridge test` wraps a bare payload
					input = map[string]any{"event": map[string]any{"id": "dry-run", "type": "", "source": "", "key": "", "received_at": now, "occurred_at": now}, "payload": raw}
				}
				res := tc.Run(prog, input)
				require.True(t, res.Pass, "%s: %s\n%s%v", file, tc.Name, res.Diff, res.Err)
			}
		}
		readme, err := os.ReadFile(fhirExample(t, filepath.Join(name, "README.md")))
		require.NoError(t, err)
		require.Contains(t, string(readme), "clinicbridge fake fhir", name)
	}
}
