package calcom

import (
	"errors"
	"net/url"

	"github.com/clinicbridge/clinicbridge/config"
)

// Defaults.
const (
	DefaultBaseURL = "https://api.cal.com"
)

// Config is a calcom connector's configuration.
type Config struct {
	WebhookSecret string `yaml:"webhook_secret"`
	APIKey        string `yaml:"api_key"`
	BaseURL       string `yaml:"base_url"`
}

func (c *Config) baseURL() string {
	if c.BaseURL == "" {
		return DefaultBaseURL
	}
	return c.BaseURL
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat a secret (or a base_url, which may carry credentials).
func (c *Config) Validate() error {
	var errs []error
	if c.WebhookSecret == "" {
		errs = append(errs, errors.New("webhook_secret: required (the secret set on the Cal.com webhook)"))
	}
	if c.BaseURL != "" {
		if _, err := parseBaseURL(c.BaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("base_url: expected an http or https URL such as https://api.cal.com")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("base_url: must not carry a query or fragment")
	}
	return u, nil
}

var fields = []config.Field{
	{
		Name: "webhook_secret", Kind: config.KindString, Required: true, Secret: true,
		Doc: "The secret set on the Cal.com webhook (Settings > Developer > Webhooks). Requests are verified " +
			"with X-Cal-Signature-256 = hex(HMAC-SHA256(secret, raw body)); a webhook created without a secret " +
			"(header `no-secret-provided`) is rejected.",
		Example: "${CALCOM_WEBHOOK_SECRET}",
	},
	{
		Name: "api_key", Kind: config.KindString, Secret: true,
		Doc: "Cal.com API key (`cal_live_...`), sent as a Bearer token to API v2. Needed only for " +
			"reconciliation, which lists bookings with GET /v2/bookings.",
		Example: "${CALCOM_API_KEY}",
	},
	{
		Name: "base_url", Kind: config.KindString, Default: DefaultBaseURL,
		Doc:     "Cal.com API base URL: change it for a self-hosted Cal.com or to point at the fake (`clinicbridge fake calcom`).",
		Example: "http://127.0.0.1:9090",
	},
}
