package webhook

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
)

// Signature schemes.
const (
	SchemeStandard = "standard" // Standard Webhooks v1 (webhook-id, webhook-timestamp, webhook-signature)
	SchemeHMAC     = "hmac"     // HMAC-SHA256 of the raw body in one header
)

// Defaults.
const (
	DefaultTolerance  = 5 * time.Minute
	DefaultHMACHeader = "X-Signature-256"
	EncodingHex       = "hex"
	EncodingBase64    = "base64"
)

// Config is a webhook connector's configuration.
type Config struct {
	WebhookSecret string           `yaml:"webhook_secret"`
	Signature     string           `yaml:"signature"`
	HMAC          *HMACConfig      `yaml:"hmac"`
	Tolerance     *config.Duration `yaml:"tolerance"`
	Event         EventExprs       `yaml:"event"`
}

// EventExprs are the expressions that read an event's identity from a
// request. They sit under `event:` because `type` at the top level names the
// connector type.
type EventExprs struct {
	ID         string `yaml:"id"`
	Type       string `yaml:"type"`
	Key        string `yaml:"key"`
	OccurredAt string `yaml:"occurred_at"`
}

// HMACConfig says where and how a plain HMAC-SHA256 signature is carried.
// The zero value means the defaults: header X-Signature-256, hex, no prefix.
type HMACConfig struct {
	Header   string `yaml:"header"`
	Encoding string `yaml:"encoding"`
	Prefix   string `yaml:"prefix"`
}

func (h HMACConfig) withDefaults() HMACConfig {
	if h.Header == "" {
		h.Header = DefaultHMACHeader
	}
	if h.Encoding == "" {
		h.Encoding = EncodingHex
	}
	return h
}

func (h HMACConfig) validate() error {
	h = h.withDefaults()
	if h.Encoding != EncodingHex && h.Encoding != EncodingBase64 {
		return fmt.Errorf("hmac.encoding: %q is not one of hex, base64", h.Encoding)
	}
	if !validHeaderName(h.Header) {
		return fmt.Errorf("hmac.header: %q is not a valid HTTP header name", h.Header)
	}
	return nil
}

func (c *Config) scheme() string {
	if c.Signature == "" {
		return SchemeStandard
	}
	return c.Signature
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat the secret.
func (c *Config) Validate() error {
	var errs []error
	if c.WebhookSecret == "" {
		errs = append(errs, errors.New("webhook_secret: required"))
	}
	switch c.scheme() {
	case SchemeStandard:
		if c.WebhookSecret != "" {
			if _, err := decodeStandardSecret(c.WebhookSecret); err != nil {
				errs = append(errs, fmt.Errorf("webhook_secret: %w", err))
			}
		}
		if c.HMAC != nil {
			errs = append(errs, errors.New("hmac: only applies with signature: hmac"))
		}
		if c.Tolerance != nil && c.Tolerance.Std() <= 0 {
			errs = append(errs, errors.New("tolerance: must be positive"))
		}
	case SchemeHMAC:
		if c.HMAC != nil {
			if err := c.HMAC.validate(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.Tolerance != nil {
			errs = append(errs, errors.New("tolerance: only applies with signature: standard (plain HMAC signs no timestamp)"))
		}
	default:
		errs = append(errs, fmt.Errorf("signature: %q is not one of standard, hmac", c.Signature))
	}
	for _, e := range []struct{ key, src string }{{"event.id", c.Event.ID}, {"event.type", c.Event.Type}, {"event.key", c.Event.Key}, {"event.occurred_at", c.Event.OccurredAt}} {
		if e.src == "" {
			continue
		}
		if _, err := compileExpr(e.src); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", e.key, err))
		}
	}
	return errors.Join(errs...)
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

var fields = []config.Field{
	{
		Name: "webhook_secret", Kind: config.KindString, Required: true, Secret: true,
		Doc: "Signing secret shared with the sender. With signature: standard it is the Standard Webhooks " +
			"secret, `whsec_` followed by base64 of the key bytes (the prefix is optional). With " +
			"signature: hmac it is used as raw bytes, exactly as written.",
		Example: "${INBOX_WEBHOOK_SECRET}",
	},
	{
		Name: "signature", Kind: config.KindString, Default: SchemeStandard, Enum: []string{SchemeStandard, SchemeHMAC},
		Doc: "Signature scheme. `standard`: Standard Webhooks v1 (headers webhook-id, webhook-timestamp, " +
			"webhook-signature; svix-* headers are accepted too). `hmac`: HMAC-SHA256 of the raw body in one " +
			"header, configured under `hmac`.",
	},
	{
		Name: "hmac", Kind: config.KindObject,
		Doc: "Where the plain HMAC signature is carried (signature: hmac only).",
		Fields: []config.Field{
			{Name: "header", Kind: config.KindString, Default: DefaultHMACHeader, Example: "X-Hub-Signature-256",
				Doc: "Request header holding the signature."},
			{Name: "encoding", Kind: config.KindString, Default: EncodingHex, Enum: []string{EncodingHex, EncodingBase64},
				Doc: "How the HMAC bytes are written in the header."},
			{Name: "prefix", Kind: config.KindString, Default: `""`, Example: "sha256=",
				Doc: "Text before the encoded HMAC in the header, e.g. `sha256=`; matched case-insensitively."},
		},
	},
	{
		Name: "tolerance", Kind: config.KindDuration, Default: "5m",
		Doc: "How far webhook-timestamp may be from this agent's clock, either way, before the request is " +
			"rejected as a replay (signature: standard only).",
	},
	{
		Name: "event", Kind: config.KindObject,
		Doc: "Expressions that read the event's identity from the request, over `headers` and `payload`.",
		Fields: []config.Field{
			{
				Name: "id", Kind: config.KindString, Example: `headers["x-delivery-id"]`,
				Doc: "Expression for the event id (the dedupe key), over `headers` (lower-cased names, first value) " +
					"and `payload` (the JSON body). Default: the webhook-id header with signature: standard; with " +
					"signature: hmac, the SHA-256 of the raw body in hex, so a resend of the same body is a duplicate.",
			},
			{
				Name: "type", Kind: config.KindString, Example: "payload.event",
				Doc: "Expression for the event type. Default: the body's `type` field; a body without a string " +
					"`type` is rejected with 400 unless this is set.",
			},
			{
				Name: "key", Kind: config.KindString, Example: "payload.data.booking_id",
				Doc: "Expression for the event key (the business entity, used to schedule and cancel). Default: empty.",
			},
			{
				Name: "occurred_at", Kind: config.KindString, Example: "payload.data.updated_at",
				Doc: "Expression for when the event happened: an RFC 3339 string, a time, or unix seconds. " +
					"Default: the body's `timestamp` field if it is RFC 3339, else the time it was received.",
			},
		},
	},
}
