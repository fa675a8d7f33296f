// Package webhook is the generic webhook source: any system that signs its
// webhooks with Standard Webhooks v1 or a plain HMAC-SHA256 of the body, with
// the event id, type, key and time taken from headers and body by expressions.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// Type declares the `webhook` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "webhook",
		Doc: "Receives signed JSON webhooks from any system: Standard Webhooks v1 (default) or a plain " +
			"HMAC-SHA256 of the body. Event id, type, key and time come from headers and body.",
		Fields: fields,
		Source: true,
		Sample: sample,
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Source verifies and parses webhooks for one configured connector.
type Source struct {
	scheme    string
	macKey    []byte // HMAC key: decoded whsec_ secret, or the raw secret for hmac
	hmac      HMACConfig
	tolerance time.Duration
	now       func() time.Time

	idExpr, typeExpr, keyExpr, timeExpr evaluator
}

// New builds a source from a validated config. It does not touch the network.
func New(c *Config, env connectors.Env) (*Source, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Source{scheme: c.scheme(), tolerance: DefaultTolerance, now: env.Clock()}
	if s.scheme == SchemeStandard {
		s.macKey, _ = decodeStandardSecret(c.WebhookSecret) // checked by Validate
		if c.Tolerance != nil {
			s.tolerance = c.Tolerance.Std()
		}
	} else {
		s.macKey = []byte(c.WebhookSecret)
		if c.HMAC != nil {
			s.hmac = *c.HMAC
		}
		s.hmac = s.hmac.withDefaults()
	}
	for _, e := range []struct {
		src string
		dst *evaluator
	}{{c.Event.ID, &s.idExpr}, {c.Event.Type, &s.typeExpr}, {c.Event.Key, &s.keyExpr}, {c.Event.OccurredAt, &s.timeExpr}} {
		if e.src == "" {
			continue
		}
		ev, err := compileExpr(e.src)
		if err != nil {
			return nil, err // Validate compiled it already
		}
		*e.dst = ev
	}
	return s, nil
}

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrUnauthorized, reason)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{connectors.ErrMalformed}, args...)...)
}

// Verify authenticates the raw request. Failures wrap ErrUnauthorized with a
// reason that never contains the secret, a signature or the body.
func (s *Source) Verify(r *connectors.Request) error {
	if s.scheme == SchemeStandard {
		return s.verifyStandard(r)
	}
	return s.verifyHMAC(r)
}

// standardHeaders returns webhook-id, webhook-timestamp and webhook-signature,
// falling back to Svix's svix-* names (the same scheme) when webhook-id is absent.
func standardHeaders(h http.Header) (id, ts, sig string) {
	id, ts, sig = connectors.Header(h, HeaderID), connectors.Header(h, HeaderTimestamp), connectors.Header(h, HeaderSignature)
	if id == "" && ts == "" && sig == "" {
		id, ts, sig = connectors.Header(h, "Svix-Id"), connectors.Header(h, "Svix-Timestamp"), connectors.Header(h, "Svix-Signature")
	}
	return id, ts, sig
}

func (s *Source) verifyStandard(r *connectors.Request) error {
	id, ts, sigs := standardHeaders(r.Header)
	switch {
	case id == "":
		return unauthorized("missing webhook-id header")
	case ts == "":
		return unauthorized("missing webhook-timestamp header")
	case sigs == "":
		return unauthorized("missing webhook-signature header")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return unauthorized("webhook-timestamp is not unix seconds")
	}
	now, tol := s.now().Unix(), int64(s.tolerance/time.Second)
	if sec < now-tol {
		return unauthorized("webhook-timestamp is too old (outside tolerance)")
	}
	if sec > now+tol {
		return unauthorized("webhook-timestamp is in the future (outside tolerance)")
	}
	want := standardMAC(s.macKey, id, ts, r.Body)
	sawV1, badBase64 := false, false
	for _, sig := range strings.Fields(sigs) {
		version, val, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue // v1a (asymmetric) and future versions
		}
		sawV1 = true
		got, err := base64.StdEncoding.DecodeString(val)
		if err != nil {
			badBase64 = true
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	switch {
	case !sawV1:
		return unauthorized("webhook-signature has no v1 signature")
	case badBase64:
		return unauthorized("webhook-signature is not valid base64 and no v1 signature matches")
	default:
		return unauthorized("no v1 signature matches")
	}
}

func (s *Source) verifyHMAC(r *connectors.Request) error {
	v := connectors.Header(r.Header, s.hmac.Header)
	if v == "" {
		return unauthorized("missing " + s.hmac.Header + " header")
	}
	if p := s.hmac.Prefix; p != "" {
		if len(v) < len(p) || !strings.EqualFold(v[:len(p)], p) {
			return unauthorized(s.hmac.Header + " does not start with the configured prefix")
		}
		v = v[len(p):]
	}
	v = strings.TrimSpace(v)
	var got []byte
	var err error
	if s.hmac.Encoding == EncodingBase64 {
		got, err = base64.StdEncoding.DecodeString(v)
		if err != nil {
			got, err = base64.RawStdEncoding.DecodeString(v)
		}
	} else {
		got, err = hex.DecodeString(v)
	}
	if err != nil {
		return unauthorized(s.hmac.Header + " is not valid " + s.hmac.Encoding)
	}
	if !hmac.Equal(got, bodyMAC(s.macKey, r.Body)) {
		return unauthorized("signature does not match")
	}
	return nil
}

// Parse turns a verified request into one event. The body must be a JSON
// object. Failures wrap ErrMalformed and never contain payload values.
func (s *Source) Parse(r *connectors.Request) (connectors.Inbound, error) {
	// Expressions see the whole payload; without them only two fields are
	// read, and decoding just those spares building a map of the whole body.
	var in map[string]any
	var top struct {
		Type      any `json:"type"`
		Timestamp any `json:"timestamp"`
	}
	if !connectors.IsJSONObject(r.Body) {
		return connectors.Inbound{}, malformed("body is not a JSON object")
	}
	if s.idExpr != nil || s.typeExpr != nil || s.keyExpr != nil || s.timeExpr != nil {
		var payload map[string]any
		if connectors.UnmarshalJSON(r.Body, &payload) != nil {
			return connectors.Inbound{}, malformed("body is not a JSON object")
		}
		in = map[string]any{"payload": payload, "headers": headerMap(r.Header)}
		top.Type, top.Timestamp = payload["type"], payload["timestamp"]
	} else if connectors.UnmarshalJSON(r.Body, &top) != nil {
		return connectors.Inbound{}, malformed("body is not a JSON object")
	}
	ev := connectors.Event{Payload: json.RawMessage(r.Body)}
	var err error

	switch {
	case s.idExpr != nil:
		if ev.ID, err = s.idExpr.String(in); err != nil {
			return connectors.Inbound{}, malformed("evaluating id failed")
		}
	case s.scheme == SchemeStandard:
		ev.ID, _, _ = standardHeaders(r.Header)
	default:
		sum := sha256.Sum256(r.Body)
		ev.ID = hex.EncodeToString(sum[:])
	}
	if ev.ID == "" {
		return connectors.Inbound{}, malformed("event id is empty")
	}

	if s.typeExpr != nil {
		if ev.Type, err = s.typeExpr.String(in); err != nil {
			return connectors.Inbound{}, malformed("evaluating type failed")
		}
	} else {
		ev.Type, _ = top.Type.(string)
	}
	if ev.Type == "" {
		if s.typeExpr != nil {
			return connectors.Inbound{}, malformed("the type expression gave an empty event type")
		}
		return connectors.Inbound{}, malformed(`body has no string "type" field (set type: in the connector config to derive one)`)
	}

	if s.keyExpr != nil {
		if ev.Key, err = s.keyExpr.String(in); err != nil {
			return connectors.Inbound{}, malformed("evaluating key failed")
		}
	}

	if s.timeExpr != nil {
		if ev.OccurredAt, err = s.timeExpr.Time(in); err != nil {
			return connectors.Inbound{}, malformed("evaluating occurred_at failed")
		}
	} else if ts, ok := top.Timestamp.(string); ok {
		ev.OccurredAt, _ = time.Parse(time.RFC3339Nano, ts)
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = s.now()
	}
	ev.OccurredAt = ev.OccurredAt.UTC()
	return connectors.Inbound{Events: []connectors.Event{ev}}, nil
}

// headerMap is the `headers` expression variable: lower-cased name -> first value.
func headerMap(h http.Header) map[string]any {
	m := make(map[string]any, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			m[strings.ToLower(k)] = vs[0]
		}
	}
	return m
}

var _ connectors.Source = (*Source)(nil)
