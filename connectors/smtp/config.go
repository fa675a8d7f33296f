package smtp

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
)

// TLS modes.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS; refused if the server does not offer it
	TLSImplicit = "implicit" // TLS from the first byte (SMTPS, usually port 465)
	TLSNone     = "none"     // no encryption: a relay on this machine only, when credentials are set
)

// Defaults.
const (
	DefaultPort         = 587
	DefaultImplicitPort = 465
	DefaultTimeout      = 30 * time.Second
)

// Config is an smtp connector's configuration.
type Config struct {
	Host      string           `yaml:"host"`
	Port      int              `yaml:"port"`
	Username  string           `yaml:"username"`
	Password  string           `yaml:"password"`
	From      string           `yaml:"from"`
	TLS       string           `yaml:"tls"`
	TLSCAFile string           `yaml:"tls_ca_file"`
	Timeout   *config.Duration `yaml:"timeout"`
}

func (c *Config) tlsMode() string {
	if c.TLS == "" {
		return TLSStartTLS
	}
	return c.TLS
}

func (c *Config) port() int {
	switch {
	case c.Port != 0:
		return c.Port
	case c.tlsMode() == TLSImplicit:
		return DefaultImplicitPort
	default:
		return DefaultPort
	}
}

func (c *Config) timeout() time.Duration {
	if c.Timeout == nil {
		return DefaultTimeout
	}
	return c.Timeout.Std()
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat the password.
func (c *Config) Validate() error {
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("host: required"))
	} else if strings.ContainsAny(c.Host, " /:@") && net.ParseIP(c.Host) == nil {
		errs = append(errs, errors.New("host: expected a host name or IP address, without scheme or port"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port: %d is not a TCP port", c.Port))
	}
	if c.From == "" {
		errs = append(errs, errors.New("from: required"))
	} else if _, err := mail.ParseAddress(c.From); err != nil {
		errs = append(errs, errors.New(`from: expected an address such as "North Clinic <reminders@north.example>"`))
	}
	mode := c.tlsMode()
	switch mode {
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		errs = append(errs, fmt.Errorf("tls: %q is not one of starttls, implicit, none", c.TLS))
	}
	switch {
	case c.Username != "" && c.Password == "":
		errs = append(errs, errors.New("password: required when username is set"))
	case c.Username == "" && c.Password != "":
		errs = append(errs, errors.New("username: required when password is set"))
	}
	if mode == TLSNone && c.Username != "" && !loopback(c.Host) {
		errs = append(errs, errors.New("tls: none would send the password unencrypted; it is allowed with credentials only "+
			"for a relay on this machine (localhost, 127.0.0.1, ::1)"))
	}
	if mode == TLSNone && c.TLSCAFile != "" {
		errs = append(errs, errors.New("tls_ca_file: only applies with tls: starttls or implicit"))
	}
	if c.Timeout != nil && c.Timeout.Std() <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	return errors.Join(errs...)
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var fields = []config.Field{
	{
		Name: "host", Kind: config.KindString, Required: true, Example: "smtp.example.clinic",
		Doc: "SMTP server (submission) host name; the TLS certificate is checked against it.",
	},
	{
		Name: "port", Kind: config.KindInt, Default: "587",
		Doc: "SMTP server port. Default 587 (submission with STARTTLS), or 465 with tls: implicit.",
	},
	{
		Name: "username", Kind: config.KindString, Example: "reminders@north.example",
		Doc: "User name for AUTH PLAIN. Credentials are only ever sent over TLS, or to a relay on this " +
			"machine with tls: none.",
	},
	{
		Name: "password", Kind: config.KindString, Secret: true, Example: "${SMTP_PASSWORD}",
		Doc: "Password for AUTH PLAIN (required with username).",
	},
	{
		Name: "from", Kind: config.KindString, Required: true, Example: `"North Clinic <reminders@north.example>"`,
		Doc: "Sender address (From header and MAIL FROM), optionally with a display name.",
	},
	{
		Name: "tls", Kind: config.KindString, Default: TLSStartTLS, Enum: []string{TLSStartTLS, TLSImplicit, TLSNone},
		Doc: "`starttls`: connect in plain text and upgrade with STARTTLS, refusing a server that does not offer " +
			"it. `implicit`: TLS from the start (port 465). `none`: no encryption, for a local relay or a test " +
			"server; with credentials only to a loopback host.",
	},
	{
		Name: "tls_ca_file", Kind: config.KindString, Example: "./certs/relay-ca.pem",
		Doc: "PEM file of the certificate authorities to trust instead of the system's, for a relay with a " +
			"private CA or a test server with a self-signed certificate. Relative to the config file. The " +
			"certificate is always verified; there is no way to turn verification off.",
	},
	{
		Name: "timeout", Kind: config.KindDuration, Default: "30s",
		Doc: "Limit for one delivery attempt, from connecting to the server's answer to the message. A " +
			"timeout after the message was handed over is ambiguous (the server may have accepted it) and is " +
			"not retried.",
	},
}
