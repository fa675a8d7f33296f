package stripe

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
)

// DefaultSampleType is what `clinicbridge send-test` sends by default.
const DefaultSampleType = "payment_intent.succeeded"

// sample builds and signs a Stripe event for `clinicbridge send-test`
// exactly as Stripe would deliver it to this connector's endpoint. A
// payload, when given, is the Stripe event (a missing id, type, created or
// api_version is filled in); otherwise a realistic object for eventType is used.
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
	if eventType == "" {
		eventType = DefaultSampleType
	}
	now := env.Clock()()
	var ev map[string]any
	if payload == nil {
		ev = map[string]any{
			"object":           "event",
			"livemode":         false,
			"pending_webhooks": 1,
			"request":          map[string]any{"id": nil, "idempotency_key": nil},
			"data":             map[string]any{"object": stripefake.SampleObject(eventType)},
		}
	} else if err := json.Unmarshal(payload, &ev); err != nil || ev == nil {
		return nil, nil, fmt.Errorf("--payload must be a JSON object (a Stripe event)")
	}
	setDefault(ev, "id", "evt_"+randomID())
	setDefault(ev, "type", eventType)
	setDefault(ev, "created", now.Unix())
	setDefault(ev, "api_version", stripefake.APIVersion)
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	h.Set(SignatureHeader, Sign(c.WebhookSecret, now, body))
	return h, body, nil
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
