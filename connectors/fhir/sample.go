package fhir

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// sample builds a classic rest-hook notification for `clinicbridge
// send-test`: the resource POSTed with `Authorization: Bearer
// <webhook_secret>`, as a Subscription with payload application/fhir+json
// sends it. eventType is `Type.create` or `Type.update` (default: the first
// configured resource type, created); a payload replaces the built-in
// example resource and gets meta filled in where it has none.
func sample(node *yaml.Node, env connectors.Env, eventType string, payload []byte) (http.Header, []byte, error) {
	var c Config
	if node != nil {
		if err := node.Decode(&c); err != nil {
			return nil, nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if c.WebhookSecret == "" {
		return nil, nil, errors.New("webhook_secret is not set: this connector accepts no notifications")
	}
	if eventType == "" {
		eventType = c.Resources[0] + "." + Create
	}
	rt, kind, _ := strings.Cut(eventType, ".")
	if !resourceTypeRE.MatchString(rt) || (kind != Create && kind != Update) {
		return nil, nil, fmt.Errorf("event type %q is not Type.create or Type.update", eventType)
	}
	var res map[string]any
	if payload != nil {
		if err := json.Unmarshal(payload, &res); err != nil {
			return nil, nil, fmt.Errorf("--payload must be a FHIR resource as JSON: %w", err)
		}
	} else {
		res = exampleResource(rt)
	}
	if _, ok := res["resourceType"]; !ok {
		res["resourceType"] = rt
	}
	if _, ok := res["id"]; !ok {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		res["id"] = "sample-" + hex.EncodeToString(b)
	}
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		res["meta"] = meta
	}
	if _, ok := meta["versionId"]; !ok {
		meta["versionId"] = map[string]string{Create: "1", Update: "2"}[kind]
	}
	if _, ok := meta["lastUpdated"]; !ok {
		meta["lastUpdated"] = env.Clock()().UTC().Format(sinceLayout)
	}
	body, err := json.Marshal(res)
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+c.WebhookSecret)
	h.Set("Content-Type", ContentType)
	return h, body, nil
}

// exampleResource is a fictional resource of type rt.
func exampleResource(rt string) map[string]any {
	patient := map[string]any{"reference": "Patient/example"}
	switch rt {
	case "Patient":
		return map[string]any{
			"identifier": []any{map[string]any{"system": "http://clinic.example/mrn", "value": "MRN-0001"}},
			"name":       []any{map[string]any{"family": "Example", "given": []any{"Alex"}}},
			"birthDate":  "1980-01-01",
		}
	case "Appointment":
		start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Hour)
		return map[string]any{
			"status": "booked",
			"start":  start.Format(time.RFC3339), "end": start.Add(30 * time.Minute).Format(time.RFC3339),
			"participant": []any{map[string]any{"actor": patient, "status": "accepted"}},
		}
	case "DiagnosticReport":
		return map[string]any{
			"status": "final", "subject": patient,
			"code": map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "58410-2"}}},
		}
	case "MedicationRequest":
		return map[string]any{
			"status": "draft", "intent": "proposal", "subject": patient,
			"medicationCodeableConcept": map[string]any{"text": "example medication"},
			"priorPrescription":         map[string]any{"reference": "MedicationRequest/original"},
		}
	default:
		return map[string]any{}
	}
}
