package webhook

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// sample signs a webhook for `clinicbridge send-test` exactly as a sender
// configured like this connector would: Standard Webhooks headers, or the
// configured HMAC header. A payload without a `type` gets eventType.
func sample(node *yaml.Node, _ connectors.Env, eventType string, payload []byte) (http.Header, []byte, error) {
	var c Config
	if err := node.Decode(&c); err != nil {
		return nil, nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if eventType == "" {
		eventType = "example.event"
	}
	var body map[string]any
	if payload == nil {
		body = map[string]any{
			"type":      eventType,
			"timestamp": time.Now().UTC().Format(time.RFC3339),
			"data":      map[string]any{"message": "hello from clinicbridge send-test"},
		}
	} else if err := json.Unmarshal(payload, &body); err != nil {
		return nil, nil, fmt.Errorf("--payload must be a JSON object: %w", err)
	}
	if _, ok := body["type"]; !ok {
		body["type"] = eventType
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, nil, err
	}
	var h http.Header
	if c.scheme() == SchemeStandard {
		id := make([]byte, 12)
		_, _ = rand.Read(id)
		h, err = SignStandard(c.WebhookSecret, "msg_"+hex.EncodeToString(id), time.Now(), raw)
	} else {
		var hc HMACConfig
		if c.HMAC != nil {
			hc = *c.HMAC
		}
		h, err = SignHMAC(c.WebhookSecret, hc, raw)
	}
	if err != nil {
		return nil, nil, err
	}
	h.Set("Content-Type", "application/json")
	return h, raw, nil
}
