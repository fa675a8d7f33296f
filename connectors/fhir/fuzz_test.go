package fhir_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

const fuzzR4Notification = `{"resourceType":"Bundle","type":"history","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Parameters",` +
	`"parameter":[{"name":"subscription","valueReference":{"reference":"https://ehr.example/fhir/Subscription/s1"}},` +
	`{"name":"type","valueCode":"event-notification"},{"name":"events-since-subscription-start","valueString":"2"},` +
	`{"name":"notification-event","part":[{"name":"event-number","valueString":"2"},{"name":"focus","valueReference":{"reference":"https://ehr.example/fhir/Appointment/a1"}}]}]}},` +
	`{"fullUrl":"https://ehr.example/fhir/Appointment/a1","resource":{"resourceType":"Appointment","id":"a1","status":"booked",` +
	`"meta":{"versionId":"2","lastUpdated":"2026-11-02T09:30:00.000Z"}},"request":{"method":"PUT","url":"Appointment/a1"}}]}`

const fuzzR5IDOnly = `{"resourceType":"Bundle","type":"subscription-notification","entry":[{"resource":{"resourceType":"SubscriptionStatus",` +
	`"type":"event-notification","eventsSinceSubscriptionStart":"7","subscription":{"reference":"Subscription/s2"},` +
	`"notificationEvent":[{"eventNumber":"7","focus":{"reference":"Patient/p1/_history/3"}}]}}]}`

const fuzzHeartbeat = `{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"SubscriptionStatus","type":"heartbeat",` +
	`"eventsSinceSubscriptionStart":9,"subscription":{"reference":"Subscription/s3"}}}]}`

const fuzzResource = `{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2026-11-02T09:00:00Z"},"name":[{"family":"Example"}]}`

// FuzzParse feeds arbitrary notifications to Parse: it must never panic,
// fail only with ErrMalformed (messages free of the body's values), and
// give events with an id, type and key for configured types only.
func FuzzParse(f *testing.F) {
	f.Add(false, "", []byte(fuzzR4Notification))
	f.Add(false, "", []byte(fuzzR5IDOnly))
	f.Add(false, "", []byte(fuzzHeartbeat))
	f.Add(true, "Patient/p1", []byte(fuzzResource))
	f.Add(false, "", []byte(fuzzResource))
	f.Add(false, "", []byte{})
	f.Add(true, "Patient/p1/_history/1", []byte(fuzzResource))
	f.Add(false, "", []byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Parameters","parameter":[{"name":"type"}]}}]}`))

	fake := fhirfake.New()
	base := serve(f, fake)
	fake.SetBaseURL(base)
	if _, err := fake.Update(map[string]any{"resourceType": "Patient", "id": "p1"}); err != nil {
		f.Fatal(err)
	}
	c, err := fhir.New(&fhir.Config{BaseURL: base, WebhookSecret: webhookSecret, Resources: []string{"Patient", "Appointment"}},
		connectors.Env{State: newState()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, put bool, subpath string, body []byte) {
		method := http.MethodPost
		if put {
			method = http.MethodPut
		}
		r := &connectors.Request{Method: method, Header: bearer(webhookSecret), Body: body, Subpath: subpath}
		if err := c.Verify(r); err != nil {
			t.Fatalf("a correct bearer failed: %v", err)
		}
		in, err := c.Parse(r)
		if err != nil {
			if !errors.Is(err, connectors.ErrMalformed) {
				t.Fatalf("parse error %v does not wrap ErrMalformed", err)
			}
			if len(body) >= 12 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("the error repeats the body")
			}
			return
		}
		for _, ev := range in.Events {
			if ev.ID == "" || ev.Key == "" || !strings.HasPrefix(ev.ID, ev.Key+"/_history/") {
				t.Fatalf("bad event identity %q %q", ev.ID, ev.Key)
			}
			if !strings.HasPrefix(ev.Type, "Patient.") && !strings.HasPrefix(ev.Type, "Appointment.") {
				t.Fatalf("event of an unconfigured type %q", ev.Type)
			}
		}
	})
}

// FuzzVerify checks that only the exact secret verifies.
func FuzzVerify(f *testing.F) {
	f.Add("Bearer " + webhookSecret)
	f.Add("bearer  " + webhookSecret + " ")
	f.Add("Bearer")
	f.Add("Basic " + webhookSecret)
	f.Add("")
	c, err := fhir.New(&fhir.Config{BaseURL: "http://127.0.0.1:1", WebhookSecret: webhookSecret, Resources: []string{"Patient"}}, connectors.Env{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, auth string) {
		err := c.Verify(&connectors.Request{Header: http.Header{"Authorization": {auth}}})
		if err == nil {
			scheme, tok, _ := strings.Cut(strings.TrimSpace(auth), " ")
			if !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) != webhookSecret {
				t.Fatalf("verified %q", auth)
			}
			return
		}
		if !errors.Is(err, connectors.ErrUnauthorized) {
			t.Fatalf("error %v does not wrap ErrUnauthorized", err)
		}
		if strings.Contains(err.Error(), webhookSecret) {
			t.Fatal("error leaks the secret")
		}
	})
}
