package twilio

import (
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
)

// Defaults.
const (
	DefaultBaseURL = "https://api.twilio.com"
	DefaultTimeout = 30 * time.Second
)

// Config is a twilio connector's configuration.
type Config struct {
	AccountSID          string           `yaml:"account_sid"`
	AuthToken           string           `yaml:"auth_token"`
	From                string           `yaml:"from"`
	MessagingServiceSID string           `yaml:"messaging_service_sid"`
	BaseURL             string           `yaml:"base_url"`
	Timeout             *config.Duration `yaml:"timeout"`
}

func (c *Config) baseURL() string {
	if c.BaseURL == "" {
		return DefaultBaseURL
	}
	return strings.TrimRight(c.BaseURL, "/")
}

func (c *Config) timeout() time.Duration {
	if c.Timeout == nil {
		return DefaultTimeout
	}
	return c.Timeout.Std()
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat the auth token.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.AccountSID == "":
		errs = append(errs, errors.New("account_sid: required"))
	case !sidLike(c.AccountSID, "AC"):
		errs = append(errs, errors.New("account_sid: expected a Twilio Account SID (AC followed by letters and digits)"))
	}
	if c.AuthToken == "" {
		errs = append(errs, errors.New("auth_token: required"))
	}
	switch {
	case c.From == "" && c.MessagingServiceSID == "":
		errs = append(errs, errors.New("set exactly one of from, messaging_service_sid"))
	case c.From != "" && c.MessagingServiceSID != "":
		errs = append(errs, errors.New("set exactly one of from, messaging_service_sid, not both"))
	case c.MessagingServiceSID != "" && !sidLike(c.MessagingServiceSID, "MG"):
		errs = append(errs, errors.New("messaging_service_sid: expected a Messaging Service SID (MG followed by letters and digits)"))
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			errs = append(errs, errors.New("base_url: expected an http or https URL without query, fragment or credentials"))
		}
	}
	if c.Timeout != nil && c.Timeout.Std() <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	return errors.Join(errs...)
}

// sidLike reports whether s is prefix followed by at least one letter or digit.
func sidLike(s, prefix string) bool {
	if !strings.HasPrefix(s, prefix) || len(s) == len(prefix) {
		return false
	}
	for _, r := range s[len(prefix):] {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

var fields = []config.Field{
	{
		Name: "account_sid", Kind: config.KindString, Required: true, Example: "${TWILIO_ACCOUNT_SID}",
		Doc: "Twilio Account SID (AC…). It is the Basic auth user name and part of the API path.",
	},
	{
		Name: "auth_token", Kind: config.KindString, Required: true, Secret: true, Example: "${TWILIO_AUTH_TOKEN}",
		Doc: "Auth Token of the account. It authenticates sends (Basic auth password) and is the key Twilio " +
			"signs webhooks with (X-Twilio-Signature), so status callbacks and inbound SMS are verified with it.",
	},
	{
		Name: "from", Kind: config.KindString, Example: `"+447700900000"`,
		Doc: "Sender: a Twilio number in E.164, a short code or an alphanumeric sender ID. Set exactly one of " +
			"`from` and `messaging_service_sid`; a document's own `from` or `messaging_service_sid` overrides it.",
	},
	{
		Name: "messaging_service_sid", Kind: config.KindString, Example: "MG9752274e9e519418a7406176694466fa",
		Doc: "Messaging Service (MG…) that picks the sender from its pool. Set exactly one of `from` and " +
			"`messaging_service_sid`.",
	},
	{
		Name: "base_url", Kind: config.KindString, Default: DefaultBaseURL,
		Doc: "API root. Point it at `clinicbridge fake twilio` or the twiliofake package in tests.",
	},
	{
		Name: "timeout", Kind: config.KindDuration, Default: "30s",
		Doc: "Limit for one send, connecting and reading the answer included. A timeout after the request " +
			"was sent is ambiguous (Twilio may have queued the message) and is not retried: Twilio has no " +
			"idempotency key.",
	},
}
