package calendly

import (
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
)

// Defaults.
const (
	DefaultBaseURL   = "https://api.calendly.com"
	DefaultTolerance = 3 * time.Minute
	DefaultLookahead = 90 * 24 * time.Hour
)

// Config is a calendly connector's configuration.
type Config struct {
	WebhookSecret string           `yaml:"webhook_secret"`
	APIKey        string           `yaml:"api_key"`
	Organization  string           `yaml:"organization"`
	BaseURL       string           `yaml:"base_url"`
	Tolerance     *config.Duration `yaml:"tolerance"`
	Lookahead     *config.Duration `yaml:"lookahead"`
}

func (c *Config) baseURL() string {
	if c.BaseURL == "" {
		return DefaultBaseURL
	}
	return c.BaseURL
}

func (c *Config) tolerance() time.Duration {
	if c.Tolerance == nil {
		return DefaultTolerance
	}
	return c.Tolerance.Std()
}

func (c *Config) lookahead() time.Duration {
	if c.Lookahead == nil {
		return DefaultLookahead
	}
	return c.Lookahead.Std()
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat a secret.
func (c *Config) Validate() error {
	var errs []error
	if c.WebhookSecret == "" {
		errs = append(errs, errors.New("webhook_secret: required (the signing_key of the Calendly webhook subscription)"))
	}
	if c.BaseURL != "" {
		if _, err := parseBaseURL(c.BaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Organization != "" {
		u, err := url.Parse(c.Organization)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || !strings.Contains(u.Path, "/organizations/") {
			errs = append(errs, errors.New("organization: expected the organization's URI, e.g. https://api.calendly.com/organizations/AAAAAAAAAAAAAAAA"))
		}
	}
	if c.Tolerance != nil && c.Tolerance.Std() <= 0 {
		errs = append(errs, errors.New("tolerance: must be positive"))
	}
	if c.Lookahead != nil && c.Lookahead.Std() <= 0 {
		errs = append(errs, errors.New("lookahead: must be positive"))
	}
	return errors.Join(errs...)
}

func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("base_url: expected an http or https URL such as https://api.calendly.com")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("base_url: must not carry a query or fragment")
	}
	return u, nil
}

var fields = []config.Field{
	{
		Name: "webhook_secret", Kind: config.KindString, Required: true, Secret: true,
		Doc: "The webhook subscription's signing key (the `signing_key` given when the subscription was " +
			"created). Requests are verified with Calendly-Webhook-Signature: t=<unix>,v1=hex(HMAC-SHA256(key, \"<t>.\" + raw body)).",
		Example: "${CALENDLY_WEBHOOK_SIGNING_KEY}",
	},
	{
		Name: "api_key", Kind: config.KindString, Secret: true,
		Doc: "A Calendly personal access token (or OAuth access token) of an organization admin or owner, " +
			"sent as a Bearer token. Needed only for reconciliation.",
		Example: "${CALENDLY_TOKEN}",
	},
	{
		Name: "organization", Kind: config.KindString,
		Doc: "The organization's URI, whose scheduled events reconciliation lists " +
			"(GET /users/me answers it as `current_organization`). Needed only for reconciliation.",
		Example: "https://api.calendly.com/organizations/AAAAAAAAAAAAAAAA",
	},
	{
		Name: "base_url", Kind: config.KindString, Default: DefaultBaseURL,
		Doc:     "Calendly API base URL: change it to point at the fake (`clinicbridge fake calendly`).",
		Example: "http://127.0.0.1:9090",
	},
	{
		Name: "tolerance", Kind: config.KindDuration, Default: "3m",
		Doc: "How far the signature's timestamp may be from this agent's clock, either way, before the " +
			"request is rejected as a replay.",
	},
	{
		Name: "lookahead", Kind: config.KindDuration, Default: "90d",
		Doc: "How far ahead of now reconciliation looks for scheduled events (Calendly lists by start time, " +
			"not by change time); set it to at least how far ahead patients can book.",
	},
}
