package fhir

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
)

// Defaults.
const (
	DefaultTimeout = 30 * time.Second
	// DefaultScope is the SMART scope asked for with client_credentials
	// (SMART v1 syntax, which v2 servers also accept).
	DefaultScope = "system/*.*"
)

// Config is a fhir connector's configuration.
type Config struct {
	BaseURL       string           `yaml:"base_url"`
	Auth          *Auth            `yaml:"auth"`
	WebhookSecret string           `yaml:"webhook_secret"`
	Resources     []string         `yaml:"resources"`
	Timeout       *config.Duration `yaml:"timeout"`
}

// Auth is how the connector authenticates to the FHIR server: a static
// bearer token or SMART Backend Services (client credentials with a signed
// JWT assertion). Nil means no Authorization header.
type Auth struct {
	Bearer            string             `yaml:"bearer"`
	ClientCredentials *ClientCredentials `yaml:"client_credentials"`
}

// ClientCredentials is a SMART Backend Services client: the token request
// is authenticated by a JWT signed with PrivateKeyFile (RS384 for an RSA
// key, ES384 for a P-384 EC key).
type ClientCredentials struct {
	TokenURL       string `yaml:"token_url"`
	ClientID       string `yaml:"client_id"`
	PrivateKeyFile string `yaml:"private_key_file"`
	KeyID          string `yaml:"key_id"`
	Scope          string `yaml:"scope"`
}

var resourceTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)

func (c *Config) timeout() time.Duration {
	if c.Timeout == nil {
		return DefaultTimeout
	}
	return c.Timeout.Std()
}

// Validate checks the config without touching the network or the key file.
// Errors name the key and never repeat a secret.
func (c *Config) Validate() error {
	var errs []error
	if c.BaseURL == "" {
		errs = append(errs, errors.New("base_url: required"))
	} else if err := checkHTTPURL(c.BaseURL); err != nil {
		errs = append(errs, fmt.Errorf("base_url: %w", err))
	}
	if c.Auth != nil {
		errs = append(errs, c.Auth.validate()...)
	}
	seen := map[string]bool{}
	for i, r := range c.Resources {
		switch {
		case !resourceTypeRE.MatchString(r):
			errs = append(errs, fmt.Errorf("resources[%d]: %q is not a FHIR resource type name", i, r))
		case seen[r]:
			errs = append(errs, fmt.Errorf("resources[%d]: %q is listed twice", i, r))
		}
		seen[r] = true
	}
	if c.WebhookSecret != "" && len(c.Resources) == 0 {
		errs = append(errs, errors.New("resources: required with webhook_secret (notifications are accepted only for the listed types)"))
	}
	if c.Timeout != nil && c.Timeout.Std() <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	return errors.Join(errs...)
}

func (a *Auth) validate() []error {
	var errs []error
	switch {
	case a.Bearer != "" && a.ClientCredentials != nil:
		errs = append(errs, errors.New("auth: set exactly one of bearer, client_credentials"))
	case a.Bearer == "" && a.ClientCredentials == nil:
		errs = append(errs, errors.New("auth: set exactly one of bearer, client_credentials"))
	case a.ClientCredentials != nil:
		cc := a.ClientCredentials
		if cc.TokenURL == "" {
			errs = append(errs, errors.New("auth.client_credentials.token_url: required"))
		} else if err := checkHTTPURL(cc.TokenURL); err != nil {
			errs = append(errs, fmt.Errorf("auth.client_credentials.token_url: %w", err))
		}
		if cc.ClientID == "" {
			errs = append(errs, errors.New("auth.client_credentials.client_id: required"))
		}
		if cc.PrivateKeyFile == "" {
			errs = append(errs, errors.New("auth.client_credentials.private_key_file: required"))
		}
	}
	return errs
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an absolute http(s) URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	return nil
}

var fields = []config.Field{
	{
		Name: "base_url", Kind: config.KindString, Required: true, Example: "https://ehr.example.clinic/fhir/r4",
		Doc: "The FHIR server's base URL ([base]): resources live at [base]/Type/id. Reads (id-only " +
			"notifications, reconciliation) and writes go here, and only here.",
	},
	{
		Name: "auth", Kind: config.KindObject, OneOf: true,
		Doc: "How to authenticate to the FHIR server: one of `bearer` or `client_credentials`. Omit for a server without auth.",
		Fields: []config.Field{
			{Name: "bearer", Kind: config.KindString, Secret: true, Example: "${EHR_FHIR_TOKEN}",
				Doc: "A static access token, sent as `Authorization: Bearer <token>`."},
			{
				Name: "client_credentials", Kind: config.KindObject,
				Doc: "SMART Backend Services: a client_credentials token request authenticated by a JWT signed " +
					"with a private key (RS384 or ES384); the access token is cached until shortly before it expires.",
				Fields: []config.Field{
					{Name: "token_url", Kind: config.KindString, Required: true, Example: "https://ehr.example.clinic/oauth2/token",
						Doc: "The authorization server's token endpoint; also the JWT assertion's `aud`."},
					{Name: "client_id", Kind: config.KindString, Required: true, Example: "clinicbridge",
						Doc: "The registered client id; the assertion's `iss` and `sub`."},
					{Name: "private_key_file", Kind: config.KindString, Required: true, Secret: true, Example: "./keys/fhir-client.pem",
						Doc: "PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC). An RSA key (2048 bits or more) " +
							"signs RS384; a P-384 EC key signs ES384. Relative paths resolve against the config file's folder."},
					{Name: "key_id", Kind: config.KindString, Default: "JWK thumbprint", Example: "clinicbridge-2026",
						Doc: "The `kid` header of the assertion: the key's id in the JWK Set registered with the server. " +
							"Default: the key's RFC 7638 JWK thumbprint."},
					{Name: "scope", Kind: config.KindString, Default: DefaultScope, Example: "system/Patient.rs system/MedicationRequest.cu",
						Doc: "The scopes asked for, space-separated."},
				},
			},
		},
	},
	{
		Name: "webhook_secret", Kind: config.KindString, Secret: true, Example: "${EHR_FHIR_WEBHOOK_SECRET}",
		Doc: "Subscription notifications must carry `Authorization: Bearer <webhook_secret>` (put it in the " +
			"Subscription's channel.header). Without it the connector accepts no notifications (sink and reconciliation only).",
	},
	{
		Name: "resources", Kind: config.KindStringList, Example: "[Patient, Appointment, DiagnosticReport, MedicationRequest]",
		Doc: "Resource types to accept from notifications and to list when reconciling; notified resources of " +
			"other types are ignored. Required with webhook_secret.",
	},
	{
		Name: "timeout", Kind: config.KindDuration, Default: "30s",
		Doc: "Per-request timeout for calls to the FHIR server and the token endpoint.",
	},
}

// trimBase returns the base URL without a trailing slash.
func trimBase(s string) string { return strings.TrimRight(s, "/") }
