package xero

import (
	"errors"
	"net/url"
	"strings"

	"github.com/clinicbridge/clinicbridge/config"
)

// Defaults: Xero's production endpoints.
const (
	DefaultBaseURL      = "https://api.xero.com"
	DefaultTokenURL     = "https://identity.xero.com/connect/token"
	DefaultAuthorizeURL = "https://login.xero.com/identity/connect/authorize"
)

// Scopes are what `clinicbridge xero connect` asks for.
var Scopes = []string{"offline_access", "accounting.transactions", "accounting.contacts"}

// Config is a xero connector's configuration.
type Config struct {
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
	TenantID     string `yaml:"tenant_id"`
	RefreshToken string `yaml:"refresh_token"`
	BaseURL      string `yaml:"base_url"`
	TokenURL     string `yaml:"token_url"`
	AuthorizeURL string `yaml:"authorize_url"`
}

func (c *Config) baseURL() string  { return orDefault(c.BaseURL, DefaultBaseURL) }
func (c *Config) tokenURL() string { return orDefault(c.TokenURL, DefaultTokenURL) }
func (c *Config) authorizeURL() string {
	return orDefault(c.AuthorizeURL, DefaultAuthorizeURL)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return strings.TrimRight(s, "/")
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat a secret.
func (c *Config) Validate() error {
	var errs []error
	for _, r := range []struct{ key, v string }{{"client_id", c.ClientID}, {"client_secret", c.ClientSecret}, {"tenant_id", c.TenantID}} {
		if r.v == "" {
			errs = append(errs, errors.New(r.key+": required"))
		}
	}
	for _, u := range []struct{ key, v string }{{"base_url", c.BaseURL}, {"token_url", c.TokenURL}, {"authorize_url", c.AuthorizeURL}} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, errors.New(u.key+": must be an http or https URL"))
		} else if p.User != nil {
			errs = append(errs, errors.New(u.key+": must not carry credentials"))
		}
	}
	return errors.Join(errs...)
}

var fields = []config.Field{
	{
		Name: "client_id", Kind: config.KindString, Required: true, Example: "${XERO_CLIENT_ID}",
		Doc: "Client id of your Xero app (developer.xero.com > My Apps), a Web app with the redirect URI " +
			"`http://localhost:8765/callback` (or the one `xero connect --listen` uses).",
	},
	{
		Name: "client_secret", Kind: config.KindString, Required: true, Secret: true, Example: "${XERO_CLIENT_SECRET}",
		Doc: "The app's client secret.",
	},
	{
		Name: "tenant_id", Kind: config.KindString, Required: true, Example: "${XERO_TENANT_ID}",
		Doc: "The organisation to write to (its tenantId from GET /connections; `xero connect` prints the " +
			"organisations the grant covers). Sent as the xero-tenant-id header.",
	},
	{
		Name: "refresh_token", Kind: config.KindString, Secret: true, Example: "${XERO_REFRESH_TOKEN}",
		Doc: "Optional. Seeds the token store the first time the connector runs. Xero rotates refresh tokens " +
			"on every use, so from then on the newest token in the connector's state wins and this value " +
			"is ignored; use `clinicbridge xero connect` to replace a revoked grant.",
	},
	{
		Name: "base_url", Kind: config.KindString, Default: DefaultBaseURL,
		Doc: "Xero API root (the Accounting API is under /api.xro/2.0). Tests and examples point it at the fake.",
	},
	{
		Name: "token_url", Kind: config.KindString, Default: DefaultTokenURL,
		Doc: "OAuth 2.0 token endpoint.",
	},
	{
		Name: "authorize_url", Kind: config.KindString, Default: DefaultAuthorizeURL,
		Doc: "OAuth 2.0 authorization endpoint, used by `clinicbridge xero connect` only.",
	},
}
