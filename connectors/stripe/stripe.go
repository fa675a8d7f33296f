// Package stripe is the Stripe source: it verifies Stripe-Signature webhooks,
// turns each Stripe event into one clinicbridge event (the whole Stripe event
// is the payload), and lists /v1/events for reconciliation.
package stripe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
	"github.com/clinicbridge/clinicbridge/mapping"
)

const provider = "stripe"

// Type declares the `stripe` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "stripe",
		Doc: "Receives Stripe webhooks (Stripe-Signature, HMAC-SHA256) and reconciles missed ones from " +
			"GET /v1/events. Each Stripe event is one event; its payload is the whole Stripe event.",
		Fields: fields,
		Source: true,
		Lister: true,
		Fake:   func(w io.Writer) http.Handler { return stripefake.New(stripefake.WithLog(w)) },
		Sample: sample,
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Connector is one configured Stripe account: a webhook source and an
// events lister.
type Connector struct {
	secret  string
	apiKey  string
	baseURL string
	keyExpr *mapping.Expr
	now     func() time.Time
	client  *http.Client
	// sleep waits between 429 retries of a listing; tests replace it.
	sleep func(ctxDone <-chan struct{}, d time.Duration) bool
}

// New builds a connector from a config. It does not touch the network.
func New(c *Config, env connectors.Env) (*Connector, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Connector{
		secret:  c.WebhookSecret,
		apiKey:  c.APIKey,
		baseURL: c.baseURL(),
		now:     env.Clock(),
		client:  &http.Client{Timeout: listTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}, // own pool: nothing else closes its connections
		sleep:   sleepCtx,
	}
	if c.Event.Key != "" {
		e, err := compileExpr(c.Event.Key)
		if err != nil {
			return nil, fmt.Errorf("event.key: %v", err) // Validate compiled it already
		}
		s.keyExpr = e
	}
	return s, nil
}

// Verify checks the Stripe-Signature header against the raw body. Failures
// wrap ErrUnauthorized with a reason that never carries the secret, a
// signature or the body.
func (s *Connector) Verify(r *connectors.Request) error {
	return verify(s.secret, connectors.Header(r.Header, SignatureHeader), r.Body, s.now(), DefaultTolerance)
}

// Parse turns a verified Stripe event into one event. Failures wrap
// ErrMalformed and never carry payload values.
func (s *Connector) Parse(r *connectors.Request) (connectors.Inbound, error) {
	ev, err := s.event(r.Body)
	if err != nil {
		return connectors.Inbound{}, err
	}
	return connectors.Inbound{Events: []connectors.Event{ev}}, nil
}

// stripeEvent is what the connector reads of a Stripe event.
type stripeEvent struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Created json.Number     `json:"created"`
	Data    json.RawMessage `json:"data"`
}

// event turns one Stripe event (a webhook body or an element of a listing's
// data) into an event. Both paths go through here, so a webhook and a
// reconciliation run give the same id, type, key and time.
func (s *Connector) event(raw []byte) (connectors.Event, error) {
	if !connectors.IsJSONObject(raw) {
		return connectors.Event{}, malformed("body is not a JSON object")
	}
	var se stripeEvent
	if err := json.Unmarshal(raw, &se); err != nil {
		return connectors.Event{}, malformed("body is not a Stripe event (id, type and created have the wrong JSON types)")
	}
	if se.ID == "" {
		return connectors.Event{}, malformed(`body has no string "id"`)
	}
	if se.Type == "" {
		return connectors.Event{}, malformed(`body has no string "type"`)
	}
	ev := connectors.Event{ID: se.ID, Type: se.Type, Payload: json.RawMessage(bytes.Clone(raw))}
	if sec, err := se.Created.Int64(); err == nil && sec > 0 {
		ev.OccurredAt = time.Unix(sec, 0).UTC()
	} else {
		ev.OccurredAt = s.now().UTC()
	}
	if s.keyExpr == nil {
		var d struct {
			Object struct {
				ID any `json:"id"`
			} `json:"object"`
		}
		if len(se.Data) > 0 && json.Unmarshal(se.Data, &d) == nil {
			if id, ok := d.Object.ID.(string); ok {
				ev.Key = id
			}
		}
		return ev, nil
	}
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil {
		return connectors.Event{}, malformed("body is not a JSON object")
	}
	key, err := s.keyExpr.String(map[string]any{"payload": payload})
	if err != nil {
		return connectors.Event{}, malformed("evaluating event.key failed")
	}
	ev.Key = key
	return ev, nil
}

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrUnauthorized, reason)
}

func malformed(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrMalformed, reason)
}

// Close releases the lister's idle connections.
func (s *Connector) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

var (
	_ connectors.Source = (*Connector)(nil)
	_ connectors.Lister = (*Connector)(nil)
	_ connectors.Closer = (*Connector)(nil)
)
