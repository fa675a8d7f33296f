// Package calendly is the Calendly connector: a source of Calendly webhooks
// (invitee.created, invitee.canceled; Calendly-Webhook-Signature) and a
// lister of scheduled events and their invitees for reconciliation. Both
// paths produce the same event ids and the same payload (an Invitee with its
// scheduled_event), so one mapping serves both and the store dedupes them.
package calendly

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
	"strconv"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/calendly/calendlyfake"
)

const provider = "calendly"

// Webhook events clinicbridge gives meaning to; others pass through by name.
const (
	EventInviteeCreated  = "invitee.created"
	EventInviteeCanceled = "invitee.canceled"
)

// Type declares the `calendly` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "calendly",
		Doc: "Receives Calendly webhooks (invitee.created, invitee.canceled; Calendly-Webhook-Signature) and " +
			"lists scheduled events and their invitees for reconciliation. The key is the invitee URI; the " +
			"payload is the webhook's inner `payload`: the Invitee with its scheduled_event.",
		Fields: fields,
		Source: true,
		Lister: true,
		Sample: sample,
		Fake: func(w io.Writer) http.Handler {
			s := calendlyfake.New(calendlyfake.WithLog(w), calendlyfake.AcceptAnyToken())
			s.Populate(5)
			return s
		},
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Connector verifies and parses Calendly webhooks and lists invitees.
type Connector struct {
	key          []byte
	tolerance    time.Duration
	lookahead    time.Duration
	apiKey       string
	organization string
	base         *url.URL
	now          func() time.Time
	client       *http.Client
	sleep        func(ctx context.Context, d time.Duration) error
	maxWait      time.Duration
}

// Option changes how a Connector lists (tests use them).
type Option func(*Connector)

// WithHTTPClient lists with c instead of the default client (30 s timeout,
// redirects not followed).
func WithHTTPClient(c *http.Client) Option { return func(k *Connector) { k.client = c } }

// WithSleep replaces the wait before a rate-limited request is sent again.
// The default is a timer that returns early with ctx's error.
func WithSleep(f func(ctx context.Context, d time.Duration) error) Option {
	return func(k *Connector) { k.sleep = f }
}

// WithMaxWait bounds one rate-limit wait (default DefaultMaxWait): when
// Calendly asks for longer, List returns a RateLimited error instead.
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
		key:          []byte(c.WebhookSecret),
		tolerance:    c.tolerance(),
		lookahead:    c.lookahead(),
		apiKey:       c.APIKey,
		organization: c.Organization,
		base:         base,
		now:          env.Clock(),
		maxWait:      DefaultMaxWait,
		sleep:        connectors.Sleep,
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

// Verify checks Calendly-Webhook-Signature: the timestamp must be within the
// tolerance of this agent's clock, either way, and a v1 signature must match
// HMAC-SHA256(key, "<t>." + raw body), compared in constant time. Failures
// wrap ErrUnauthorized with a reason that never contains the key, a
// signature or the body.
func (k *Connector) Verify(r *connectors.Request) error {
	h := connectors.Header(r.Header, HeaderSignature)
	if h == "" {
		return unauthorized("missing " + HeaderSignature + " header")
	}
	var ts string
	var sigs []string
	for _, part := range strings.Split(h, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(name) {
		case "t":
			if ts == "" {
				ts = strings.TrimSpace(val)
			}
		case "v1":
			sigs = append(sigs, strings.TrimSpace(val))
		}
	}
	switch {
	case ts == "":
		return unauthorized(HeaderSignature + " has no t= timestamp")
	case len(sigs) == 0:
		return unauthorized(HeaderSignature + " has no v1= signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ts[0] < '0' || ts[0] > '9' {
		return unauthorized(HeaderSignature + " timestamp is not unix seconds")
	}
	now, tol := k.now().Unix(), int64(k.tolerance/time.Second)
	if sec < now-tol {
		return unauthorized(HeaderSignature + " timestamp is too old (outside tolerance)")
	}
	if sec > now+tol {
		return unauthorized(HeaderSignature + " timestamp is in the future (outside tolerance)")
	}
	want := signedMAC(k.key, ts, r.Body)
	badHex := false
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		if err != nil {
			badHex = true
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	if badHex {
		return unauthorized(HeaderSignature + " v1 is not hex and no v1 signature matches")
	}
	return unauthorized("signature does not match")
}

// envelope is Calendly's webhook body.
type envelope struct {
	Event     string          `json:"event"`
	CreatedAt json.RawMessage `json:"created_at"`
	Payload   json.RawMessage `json:"payload"`
}

// Parse turns a verified webhook into one event whose Payload is the
// envelope's inner `payload` (for invitee events, the Invitee with its
// scheduled_event). Failures wrap ErrMalformed and never contain payload values.
func (k *Connector) Parse(r *connectors.Request) (connectors.Inbound, error) {
	var env envelope
	if !connectors.IsJSONObject(r.Body) || json.Unmarshal(r.Body, &env) != nil {
		return connectors.Inbound{}, malformed("body is not a JSON object")
	}
	if env.Event == "" {
		return connectors.Inbound{}, malformed(`body has no string "event"`)
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

	uri := jsonString(p["uri"])
	ev := connectors.Event{Type: env.Event, Payload: env.Payload}
	switch env.Event {
	case EventInviteeCreated, EventInviteeCanceled:
		if uri == "" {
			return connectors.Inbound{}, malformed(`"payload" has no string "uri" (the invitee URI)`)
		}
		ev.Key = uri
		if env.Event == EventInviteeCreated {
			if old := jsonString(p["old_invitee"]); old != uri {
				ev.Replaces = old
			}
		}
	default:
		// invitee_no_show.* and the like name the invitee they are about.
		ev.Key = jsonString(p["invitee"])
		if ev.Key == "" {
			ev.Key = uri
		}
	}
	ev.ID = eventID(env.Event, uri, createdAt, r.Body)
	if t, ok := parseTime(createdAt); ok {
		ev.OccurredAt = t
	} else {
		ev.OccurredAt = k.now().UTC()
	}
	return connectors.Inbound{Events: []connectors.Event{ev}}, nil
}

// eventID is `<event>:<payload uri>`: an invitee is created once and
// canceled at most once (a reschedule makes a new invitee), so the id of an
// invitee event is stable across Calendly's retries and is what the lister
// rebuilds from the invitee's state. Payloads without a uri use the
// envelope's created_at, else the SHA-256 of the body.
func eventID(event, uri, createdAt string, body []byte) string {
	if uri != "" {
		return event + ":" + uri
	}
	if t, ok := parseTime(createdAt); ok {
		return event + ":" + t.Format(time.RFC3339Nano)
	}
	sum := sha256.Sum256(body)
	return event + ":sha256-" + hex.EncodeToString(sum[:16])
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
