package http

import (
	"errors"
	"fmt"
	stdhttp "net/http"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
)

// Defaults.
const (
	DefaultMethod            = stdhttp.MethodPost
	DefaultTimeout           = 30 * time.Second
	DefaultIdempotencyHeader = "Idempotency-Key"
)

// Config is an http connector's configuration.
type Config struct {
	URL               string            `yaml:"url"`
	Method            string            `yaml:"method"`
	Headers           map[string]string `yaml:"headers"`
	Auth              *Auth             `yaml:"auth"`
	Timeout           *config.Duration  `yaml:"timeout"`
	IdempotencyHeader string            `yaml:"idempotency_header"`
}

// Auth is one of bearer, basic or header.
type Auth struct {
	Bearer string      `yaml:"bearer"`
	Basic  *BasicAuth  `yaml:"basic"`
	Header *HeaderAuth `yaml:"header"`
}

// BasicAuth is HTTP Basic credentials.
type BasicAuth struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// HeaderAuth is a credential sent in a header of its own (an API key).
type HeaderAuth struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

var methods = []string{stdhttp.MethodPost, stdhttp.MethodPut, stdhttp.MethodPatch, stdhttp.MethodDelete}

func (c *Config) method() string {
	if c.Method == "" {
		return DefaultMethod
	}
	return c.Method
}

func (c *Config) timeout() time.Duration {
	if c.Timeout == nil {
		return DefaultTimeout
	}
	return c.Timeout.Std()
}

func (c *Config) idempotencyHeader() string {
	if c.IdempotencyHeader == "" {
		return DefaultIdempotencyHeader
	}
	return c.IdempotencyHeader
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat a header value or credential.
func (c *Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: required"))
	} else if _, err := parseURLTemplate(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	m := c.method()
	ok := false
	for _, x := range methods {
		ok = ok || m == x
	}
	if !ok {
		errs = append(errs, fmt.Errorf("method: %q is not one of %s", c.Method, strings.Join(methods, ", ")))
	}
	for name := range c.Headers {
		if !validHeaderName(name) {
			errs = append(errs, fmt.Errorf("headers: %q is not a valid HTTP header name", name))
		}
	}
	if c.Timeout != nil && c.Timeout.Std() <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	if !validHeaderName(c.idempotencyHeader()) {
		errs = append(errs, fmt.Errorf("idempotency_header: %q is not a valid HTTP header name", c.IdempotencyHeader))
	}
	if c.Auth != nil {
		errs = append(errs, c.Auth.Validate())
	}
	return errors.Join(errs...)
}

// Validate checks that exactly one credential is set and well formed.
func (a *Auth) Validate() error { return errors.Join(a.validate()...) }

// Apply sets the credential on h. Other connectors that call HTTP APIs with
// configurable auth (poll) share it, so `auth:` means the same everywhere.
func (a *Auth) Apply(h stdhttp.Header) {
	switch {
	case a == nil:
	case a.Bearer != "":
		h.Set("Authorization", "Bearer "+a.Bearer)
	case a.Basic != nil:
		r := &stdhttp.Request{Header: stdhttp.Header{}}
		r.SetBasicAuth(a.Basic.Username, a.Basic.Password)
		h.Set("Authorization", r.Header.Get("Authorization"))
	case a.Header != nil:
		h.Set(a.Header.Name, a.Header.Value)
	}
}

func (a *Auth) validate() []error {
	var errs []error
	set := 0
	if a.Bearer != "" {
		set++
	}
	if a.Basic != nil {
		set++
		if a.Basic.Username == "" {
			errs = append(errs, errors.New("auth.basic.username: required"))
		}
		if strings.Contains(a.Basic.Username, ":") {
			errs = append(errs, errors.New("auth.basic.username: must not contain ':'"))
		}
	}
	if a.Header != nil {
		set++
		if !validHeaderName(a.Header.Name) {
			errs = append(errs, fmt.Errorf("auth.header.name: %q is not a valid HTTP header name", a.Header.Name))
		}
		if a.Header.Value == "" {
			errs = append(errs, errors.New("auth.header.value: required"))
		}
	}
	if set != 1 {
		errs = append(errs, errors.New("auth: set exactly one of bearer, basic, header"))
	}
	return errs
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
		Name: "url", Kind: config.KindString, Required: true,
		Example: "https://portal.example.clinic/api/patients/{{ doc.patient_id }}/notes",
		Doc: "Where to send each document; http or https. `{{ expr }}` placeholders are evaluated over " +
			"`doc`, the mapped document, and escaped for their place (path segment or query value). " +
			"Placeholders may not appear in the scheme or host, and one that evaluates to empty fails the " +
			"delivery (permanent) rather than calling a different URL.",
	},
	{
		Name: "method", Kind: config.KindString, Default: DefaultMethod, Enum: methods,
		Doc: "HTTP method. The mapped document is always sent as the JSON body.",
	},
	{
		Name: "headers", Kind: config.KindStringMap, Example: `{X-Clinic: north}`,
		Doc: "Extra request headers. Their values never appear in errors or logs. Content-Type defaults to " +
			"application/json and may be overridden here.",
	},
	AuthField,
	{
		Name: "timeout", Kind: config.KindDuration, Default: "30s",
		Doc: "Limit for one delivery attempt, connecting and reading the answer included. A timeout after " +
			"the request was sent is reported as ambiguous: the remote may have acted, and only one that " +
			"honours the idempotency header can safely drop a repeat.",
	},
	{
		Name: "idempotency_header", Kind: config.KindString, Default: DefaultIdempotencyHeader,
		Doc: "Header carrying the delivery's idempotency key, which is the same on every attempt and replay " +
			"of one (event, route).",
	},
}

// AuthField declares the `auth:` block; connectors that take the same
// credentials (poll) declare it with this value.
var AuthField = config.Field{
	Name: "auth", Kind: config.KindObject, OneOf: true,
	Doc: "Credentials: exactly one of bearer, basic or header.",
	Fields: []config.Field{
		{Name: "bearer", Kind: config.KindString, Secret: true, Example: "${PORTAL_TOKEN}",
			Doc: "Token sent as `Authorization: Bearer <token>`."},
		{Name: "basic", Kind: config.KindObject, Doc: "HTTP Basic authentication.",
			Fields: []config.Field{
				{Name: "username", Kind: config.KindString, Required: true, Doc: "User name."},
				{Name: "password", Kind: config.KindString, Required: true, Secret: true, Example: "${PORTAL_PASSWORD}", Doc: "Password."},
			}},
		{Name: "header", Kind: config.KindObject, Doc: "A credential in a header of its own (an API key).",
			Fields: []config.Field{
				{Name: "name", Kind: config.KindString, Required: true, Example: "X-Api-Key", Doc: "Header name."},
				{Name: "value", Kind: config.KindString, Required: true, Secret: true, Example: "${PORTAL_API_KEY}", Doc: "Header value."},
			}},
	},
}
