// Package calcom is the Cal.com connector: a source of Cal.com booking
// webhooks (X-Cal-Signature-256) and a lister of bookings from API v2
// (GET /v2/bookings) for reconciliation. Both paths produce the same event
// ids and the same payload shape, so one mapping serves both and the store
// dedupes a webhook against the reconciliation that found the same change.
package calcom

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
)

const provider = "calcom"

// Cal.com webhook triggers clinicbridge gives meaning to. Other triggers are
// passed through under their own names.
const (
	TriggerBookingCreated     = "BOOKING_CREATED"
	TriggerBookingRescheduled = "BOOKING_RESCHEDULED"
	TriggerBookingCancelled   = "BOOKING_CANCELLED"
	TriggerBookingRequested   = "BOOKING_REQUESTED"
	TriggerBookingRejected    = "BOOKING_REJECTED"
	TriggerBookingPaid        = "BOOKING_PAID"
)

// oncePerBooking are the triggers Cal.com sends at most once per booking
// uid: their event id is `<TRIGGER>:<uid>`, which the lister can rebuild
// from a booking's state. (A reschedule makes a new uid; a booking that
// needs confirmation goes REQUESTED, then CREATED or REJECTED.)
var oncePerBooking = map[string]bool{
	TriggerBookingCreated:     true,
	TriggerBookingRescheduled: true,
	TriggerBookingCancelled:   true,
	TriggerBookingRequested:   true,
	TriggerBookingRejected:    true,
	TriggerBookingPaid:        true,
}

// Type declares the `calcom` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "calcom",
		Doc: "Receives Cal.com booking webhooks (X-Cal-Signature-256) and lists bookings from Cal.com API v2 " +
			"for reconciliation. Event types are Cal.com triggers (BOOKING_CREATED, BOOKING_RESCHEDULED, " +
			"BOOKING_CANCELLED, ...); the key is the booking uid; the payload is the webhook's inner `payload`.",
		Fields: fields,
		Source: true,
		Lister: true,
		Sample: sample,
		Fake: func(w io.Writer) http.Handler {
			s := calcomfake.New(calcomfake.WithLog(w), calcomfake.AcceptAnyAPIKey())
			s.Populate(5)
			return s
		},
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Connector verifies and parses Cal.com webhooks and lists bookings.
type Connector struct {
	secret  []byte
	apiKey  string
	base    *url.URL
	now     func() time.Time
	client  *http.Client
	sleep   func(ctx context.Context, d time.Duration) error
	maxWait time.Duration
}

// Option changes how a Connector lists (tests use them).
type Option func(*Connector)

// WithHTTPClient lists with c instead of the default client (30 s timeout,
// redirects not followed).
func WithHTTPClient(c *http.Client) Option { return func(k *Connector) { k.client = c } }

// WithSleep replaces the wait before a rate-limited page is asked again. The
// default is a timer that returns early with ctx's error.
func WithSleep(f func(ctx context.Context, d time.Duration) error) Option {
	return func(k *Connector) { k.sleep = f }
}

// WithMaxWait bounds one rate-limit wait (default DefaultMaxWait): when
// Cal.com asks for longer, List returns a RateLimited error instead.
func WithMaxWait(d time.Duration) Option { return func(k *Connector) { k.maxWait = d } }

// New builds a connector from a config. It does not touch the network.
func New(c *Config, env connectors.Env, opts ...Option) (*Connector, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	base, err := parseBaseURL(c.baseURL())
	if err != nil {
		return nil, err
	}
	k := &Connector{
		secret:  []byte(c.WebhookSecret),
		apiKey:  c.APIKey,
		base:    base,
		now:     env.Clock(),
		maxWait: DefaultMaxWait,
		sleep:   connectors.Sleep,
		client: &http.Client{
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	for _, o := range opts {
		o(k)
	}
	return k, nil
}

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrUnauthorized, reason)
}

func malformed(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrMalformed, reason)
}

// Verify checks X-Cal-Signature-256 against the raw body in constant time.
// Failures wrap ErrUnauthorized with a reason that never contains the
// secret, the signature or the body.
func (k *Connector) Verify(r *connectors.Request) error {
	v := strings.TrimSpace(connectors.Header(r.Header, HeaderSignature))
	switch {
	case v == "":
		return unauthorized("missing " + HeaderSignature + " header")
	case v == NoSecretProvided:
		return unauthorized(HeaderSignature + " is no-secret-provided: the Cal.com webhook has no secret; " +
			"set the same secret there as in webhook_secret")
	}
	got, err := hex.DecodeString(v)
	if err != nil || len(got) != sha256.Size {
		return unauthorized(HeaderSignature + " is not a hex HMAC-SHA256")
	}
	if !hmac.Equal(got, bodyMAC(k.secret, r.Body)) {
		return unauthorized("signature does not match")
	}
	return nil
}

// envelope is Cal.com's webhook body: {"triggerEvent","createdAt","payload"}.
type envelope struct {
	TriggerEvent string          `json:"triggerEvent"`
	CreatedAt    json.RawMessage `json:"createdAt"`
	Payload      json.RawMessage `json:"payload"`
}

// Parse turns a verified webhook into one event whose Payload is the
// envelope's inner `payload` object. Failures wrap ErrMalformed and never
// contain payload values.
func (k *Connector) Parse(r *connectors.Request) (connectors.Inbound, error) {
	var env envelope
	if !connectors.IsJSONObject(r.Body) || json.Unmarshal(r.Body, &env) != nil {
		return connectors.Inbound{}, malformed("body is not a JSON object (Cal.com's default payload template sends one)")
	}
	if env.TriggerEvent == "" {
		return connectors.Inbound{}, malformed(`body has no string "triggerEvent"`)
	}
	if !connectors.IsJSONObject(env.Payload) {
		return connectors.Inbound{}, malformed(`body has no "payload" object`)
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(env.Payload, &p) != nil {
		return connectors.Inbound{}, malformed(`"payload" is not a JSON object`)
	}
	var createdAt string
	_ = json.Unmarshal(env.CreatedAt, &createdAt)

	trigger := env.TriggerEvent
	uid := jsonString(p["uid"])
	key := uid
	if key == "" {
		key = jsonString(p["bookingUid"]) // BOOKING_NO_SHOW_UPDATED
	}
	if oncePerBooking[trigger] && uid == "" {
		return connectors.Inbound{}, malformed(`"payload" has no string "uid" (the booking uid)`)
	}
	ev := connectors.Event{
		ID:      eventID(trigger, key, createdAt, r.Body),
		Type:    trigger,
		Key:     key,
		Payload: env.Payload,
	}
	if trigger == TriggerBookingRescheduled {
		if old := jsonString(p["rescheduleUid"]); old != uid {
			ev.Replaces = old
		}
	}
	if t, ok := parseTime(createdAt); ok {
		ev.OccurredAt = t
	} else {
		ev.OccurredAt = k.now().UTC()
	}
	return connectors.Inbound{Events: []connectors.Event{ev}}, nil
}

// eventID derives the event id (Cal.com sends none). Triggers that happen at
// most once per booking get `<TRIGGER>:<uid>`, which the lister rebuilds from
// the booking's state, so webhook and reconciliation dedupe against each
// other. Triggers that can repeat for one booking (BOOKING_NO_SHOW_UPDATED,
// MEETING_STARTED, MEETING_ENDED, RECORDING_READY, ...) and triggers about no
// booking (FORM_SUBMITTED, OOO_CREATED, PING) add the envelope's createdAt,
// which Cal.com sets once per trigger and keeps across its retries:
// `<TRIGGER>:<key>:<createdAt>` (`<TRIGGER>:<createdAt>` without a key).
// Without a readable createdAt, the SHA-256 of the body stands in.
func eventID(trigger, key, createdAt string, body []byte) string {
	if oncePerBooking[trigger] && key != "" {
		return trigger + ":" + key
	}
	var at string
	if t, ok := parseTime(createdAt); ok {
		at = t.Format(time.RFC3339Nano)
	} else {
		sum := sha256.Sum256(body)
		at = "sha256-" + hex.EncodeToString(sum[:16])
	}
	if key == "" {
		return trigger + ":" + at
	}
	return trigger + ":" + key + ":" + at
}

func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// jsonString decodes raw as a JSON string; anything else gives "".
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

var (
	_ connectors.Source = (*Connector)(nil)
	_ connectors.Lister = (*Connector)(nil)
)
