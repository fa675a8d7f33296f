package calendly_test

import (
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors/calendly"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
)

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/calendly.md", calendly.Type().Fields)
}
