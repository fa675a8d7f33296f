package stripe_test

import (
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/stripe"
)

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/stripe.md", stripe.Type().Fields)
}
