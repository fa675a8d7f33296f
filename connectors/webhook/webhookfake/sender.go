// Package webhookfake stands in for a system that sends signed webhooks: it
// posts events signed with Standard Webhooks v1 or a plain HMAC, and can
// corrupt, age or strip the signature to exercise the receiving side.
package webhookfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors/webhook"
)

// Sender posts signed webhooks. The zero value is not usable: set Secret.
type Sender struct {
	// Secret is the signing secret: `whsec_<base64>` for Standard Webhooks,
	// used as raw bytes for HMAC.
	Secret string
	// HMAC, when set, signs with a plain HMAC-SHA256 of the body as it
	// describes instead of Standard Webhooks.
	HMAC *webhook.HMACConfig
	// Client sends the requests; nil means http.DefaultClient.
	Client *http.Client
	// Now is the clock for webhook-timestamp; nil means time.Now.
	Now func() time.Time
}

// NewSender returns a Standard Webhooks sender.
func NewSender(secret string) *Sender { return &Sender{Secret: secret} }

// Option changes one send.
type Option func(*sendOpts)

type sendOpts struct {
	id          string
	ts          time.Time
	corrupt     bool
	omit        []string
	header      http.Header
	rawBody     bool
	wrongSecret string
}

// WithID sets webhook-id (default: a new random msg_ id per send). Use the
// same id to resend the same event, as a sender retrying would.
func WithID(id string) Option { return func(o *sendOpts) { o.id = id } }

// WithTimestamp signs with ts instead of now.
func WithTimestamp(ts time.Time) Option { return func(o *sendOpts) { o.ts = ts } }

// Stale signs with a timestamp ten minutes old, outside the default tolerance.
func Stale() Option { return func(o *sendOpts) { o.ts = o.ts.Add(-10 * time.Minute) } }

// CorruptSignature flips a bit in the signature after signing.
func CorruptSignature() Option { return func(o *sendOpts) { o.corrupt = true } }

// WrongSecret signs with secret instead of the sender's.
func WrongSecret(secret string) Option { return func(o *sendOpts) { o.wrongSecret = secret } }

// OmitHeaders drops the named headers after signing (no names: every
// signature header of the scheme).
func OmitHeaders(names ...string) Option {
	return func(o *sendOpts) {
		if len(names) == 0 {
			names = []string{"*"}
		}
		o.omit = append(o.omit, names...)
	}
}

// WithHeader adds a header to the request.
func WithHeader(name, value string) Option {
	return func(o *sendOpts) { o.header.Add(name, value) }
}

// Raw sends body verbatim instead of wrapping it in the envelope.
func Raw() Option { return func(o *sendOpts) { o.rawBody = true } }

// Envelope is the Standard Webhooks recommended payload that Send posts.
type Envelope struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// Send posts a signed event of eventType to url. body is the event's `data`
// (nil means {}) and is wrapped as {"type","timestamp","data"}; with Raw() it
// is sent verbatim and eventType is ignored. The webhook-id used is in
// resp.Request.Header. The caller closes resp.Body.
func (s *Sender) Send(ctx context.Context, url, eventType string, body []byte, opts ...Option) (*http.Response, error) {
	req, err := s.Request(ctx, url, eventType, body, opts...)
	if err != nil {
		return nil, err
	}
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	return c.Do(req)
}

// Request builds the signed request Send would post, without sending it.
func (s *Sender) Request(ctx context.Context, url, eventType string, body []byte, opts ...Option) (*http.Request, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	o := sendOpts{ts: now(), header: http.Header{}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = NewID()
	}
	if !o.rawBody {
		if body == nil {
			body = []byte("{}")
		}
		if !json.Valid(body) {
			return nil, errors.New("webhookfake: body is not JSON (use Raw() to send it verbatim)")
		}
		b, err := json.Marshal(Envelope{Type: eventType, Timestamp: o.ts.UTC(), Data: body})
		if err != nil {
			return nil, err
		}
		body = b
	}
	secret := s.Secret
	if o.wrongSecret != "" {
		secret = o.wrongSecret
	}
	var sig http.Header
	var sigHeaders []string
	var err error
	if s.HMAC != nil {
		sig, err = webhook.SignHMAC(secret, *s.HMAC, body)
		h := s.HMAC.Header
		if h == "" {
			h = webhook.DefaultHMACHeader
		}
		sigHeaders = []string{h}
	} else {
		sig, err = webhook.SignStandard(secret, o.id, o.ts, body)
		sigHeaders = []string{webhook.HeaderID, webhook.HeaderTimestamp, webhook.HeaderSignature}
	}
	if err != nil {
		return nil, err
	}
	if o.corrupt {
		k := sigHeaders[len(sigHeaders)-1]
		if s.HMAC != nil {
			sig.Set(k, corrupt(sig.Get(k), len(s.HMAC.Prefix), s.HMAC.Encoding != webhook.EncodingBase64))
		} else {
			sig.Set(k, corrupt(sig.Get(k), len("v1,"), false))
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "clinicbridge-webhookfake")
	for k, vs := range sig {
		req.Header[k] = vs
	}
	for k, vs := range o.header {
		req.Header[k] = append(req.Header[k], vs...)
	}
	for _, name := range o.omit {
		if name == "*" {
			for _, h := range sigHeaders {
				req.Header.Del(h)
			}
			continue
		}
		req.Header.Del(name)
	}
	return req, nil
}

// corrupt changes the first character of the encoded MAC (at offset at) to
// another of the same alphabet: the header still decodes but no longer
// matches. (The last base64 character may carry only padding bits, which a
// lenient decoder ignores, so it is the wrong one to change.)
func corrupt(sig string, at int, hexAlphabet bool) string {
	if at >= len(sig) {
		return sig + "x"
	}
	b := []byte(sig)
	switch {
	case hexAlphabet && b[at] == '0':
		b[at] = '1'
	case hexAlphabet:
		b[at] = '0'
	case b[at] == 'A':
		b[at] = 'B'
	default:
		b[at] = 'A'
	}
	return string(b)
}

// NewID returns a random webhook id in the msg_ style senders use.
func NewID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "msg_" + hex.EncodeToString(b)
}
