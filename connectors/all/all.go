// Package all lists every connector type the binary ships. The list is
// explicit (no init() registration), so what a binary contains is readable here.
package all

import (
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/file"
	"github.com/clinicbridge/clinicbridge/connectors/http"
	"github.com/clinicbridge/clinicbridge/connectors/poll"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
)

// Registry returns a registry holding every shipped connector type.
func Registry() *connectors.Registry {
	return connectors.NewRegistry(
		webhook.Type(),
		http.Type(),
		file.Type(),
		poll.Type(),
	)
}
