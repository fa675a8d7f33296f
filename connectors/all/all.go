// Package all lists every connector type the binary ships. The list is
// explicit (no init() registration), so what a binary contains is readable here.
package all

import (
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/calcom"
	"github.com/clinicbridge/clinicbridge/connectors/calendly"
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/file"
	"github.com/clinicbridge/clinicbridge/connectors/http"
	"github.com/clinicbridge/clinicbridge/connectors/poll"
	"github.com/clinicbridge/clinicbridge/connectors/smtp"
	"github.com/clinicbridge/clinicbridge/connectors/stripe"
	"github.com/clinicbridge/clinicbridge/connectors/twilio"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/connectors/xero"
)

// Registry returns a registry holding every shipped connector type.
func Registry() *connectors.Registry {
	return connectors.NewRegistry(
		webhook.Type(),
		http.Type(),
		file.Type(),
		calcom.Type(),
		calendly.Type(),
		poll.Type(),
		stripe.Type(),
		xero.Type(),
		twilio.Type(),
		smtp.Type(),
		fhir.Type(),
	)
}
