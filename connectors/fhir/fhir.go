// Package fhir is the FHIR R4 connector. As a source it receives
// Subscription notifications (classic R4 rest-hook and the topic-based
// notification Bundles of the R5 Backport IG, R4B and R5) and lists changed
// resources by _lastUpdated for reconciliation; as a sink it creates,
// conditionally creates, updates and upserts resources and posts
// transactions. fhirfake is a faithful in-memory FHIR server to test against.
package fhir

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

const provider = "fhir"

// Type declares the `fhir` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "fhir",
		Doc: "FHIR R4 servers (EHRs, patient portals, labs): receives Subscription notifications (classic " +
			"rest-hook and topic-based Bundles), lists changed resources by _lastUpdated, and creates, " +
			"conditionally creates, updates and upserts resources or posts transactions.",
		Fields:  fields,
		Source:  true,
		Lister:  true,
		Actions: actions(),
		Fake:    func(w io.Writer) http.Handler { return fhirfake.New(fhirfake.WithLog(w)) },
		Sample:  sample,
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Connector is one configured FHIR server: source, lister and sink.
type Connector struct {
	base      string
	secret    []byte
	resources map[string]bool
	order     []string
	timeout   time.Duration
	client    *http.Client
	auth      authorizer
	state     connectors.State
	now       func() time.Time
	// sleep waits d or until ctx is done (tests replace it).
	sleep func(ctx context.Context, d time.Duration) error

	// stateMu serialises read-modify-write of the event-number watermarks.
	stateMu sync.Mutex
}

// New builds a connector from a config. It reads the private key file for
// client_credentials but does not touch the network.
func New(c *Config, env connectors.Env) (*Connector, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: min(c.timeout(), 10*time.Second), KeepAlive: 30 * time.Second}).DialContext
	client := &http.Client{
		Transport: tr,
		// A redirect would resend the credential elsewhere or turn a POST into a GET.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	k := &Connector{
		base:      trimBase(c.BaseURL),
		secret:    []byte(c.WebhookSecret),
		resources: map[string]bool{},
		order:     append([]string{}, c.Resources...),
		timeout:   c.timeout(),
		client:    client,
		state:     env.State,
		now:       env.Clock(),
		sleep:     connectors.Sleep,
	}
	for _, r := range c.Resources {
		k.resources[r] = true
	}
	auth, err := newAuthorizer(c.Auth, env.Dir, client, k.now)
	if err != nil {
		return nil, err
	}
	k.auth = auth
	return k, nil
}

// Close releases idle connections.
func (c *Connector) Close() error {
	c.client.CloseIdleConnections()
	return nil
}

var (
	_ connectors.Source = (*Connector)(nil)
	_ connectors.Lister = (*Connector)(nil)
	_ connectors.Sink   = (*Connector)(nil)
	_ connectors.Closer = (*Connector)(nil)
)
