package stripe

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/mapping"
)

// DefaultBaseURL is Stripe's API.
const DefaultBaseURL = "https://api.stripe.com"

// Config is a stripe connector's configuration.
type Config struct {
	WebhookSecret string     `yaml:"webhook_secret"`
	APIKey        string     `yaml:"api_key"`
	BaseURL       string     `yaml:"base_url"`
	Event         EventExprs `yaml:"event"`
}

// EventExprs are expressions over `payload` (the whole Stripe event) that
// derive an event's identity. They sit under `event:` because `type` at the
// top level names the connector type.
type EventExprs struct {
	Key string `yaml:"key"`
}

func (c *Config) baseURL() string {
	if c.BaseURL == "" {
		return DefaultBaseURL
	}
	return strings.TrimRight(c.BaseURL, "/")
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat a secret.
func (c *Config) Validate() error {
	var errs []error
	if c.WebhookSecret == "" {
		errs = append(errs, errors.New("webhook_secret: required"))
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("base_url: must be an http or https URL"))
		} else if u.User != nil {
			errs = append(errs, errors.New("base_url: must not carry credentials (set api_key)"))
		}
	}
	if c.Event.Key != "" {
		if _, err := compileExpr(c.Event.Key); err != nil {
			errs = append(errs, fmt.Errorf("event.key: %v", err))
		}
	}
	return errors.Join(errs...)
}

// compileExpr compiles an event expression over `payload`, the Stripe event.
// Headers are not offered: a reconciliation listing has none, and the key of
// a listed event must equal the key of the same event received as a webhook.
func compileExpr(src string) (*mapping.Expr, error) {
	return mapping.CompileExpr(src, "payload")
}

var fields = []config.Field{
	{
		Name: "webhook_secret", Kind: config.KindString, Required: true, Secret: true,
		Example: "${STRIPE_WEBHOOK_SECRET}",
		Doc: "The endpoint's signing secret from the Stripe Dashboard (or `stripe listen`), `whsec_...`. " +
			"It is used exactly as written, prefix included, as the HMAC key.",
	},
	{
		Name: "api_key", Kind: config.KindString, Secret: true, Example: "${STRIPE_API_KEY}",
		Doc: "Secret or restricted API key (`sk_...` / `rk_...`, with read access to Events), used only to list " +
			"events for reconciliation. Without it the connector receives webhooks but cannot reconcile.",
	},
	{
		Name: "base_url", Kind: config.KindString, Default: DefaultBaseURL, Example: "http://127.0.0.1:12111",
		Doc: "Stripe API root, without /v1. Tests and examples point it at the fake.",
	},
	{
		Name: "event", Kind: config.KindObject,
		Doc: "Expressions that derive the event's identity from `payload`, the whole Stripe event.",
		Fields: []config.Field{
			{
				Name: "key", Kind: config.KindString, Default: "payload.data.object.id",
				Example: "payload.data.object.metadata.booking_id",
				Doc: "Expression for the event key (the business entity, used to schedule, cancel and order). " +
					"Default: the id of the object the event is about (`pi_...`, `ch_...`, `in_...`).",
			},
		},
	},
}
