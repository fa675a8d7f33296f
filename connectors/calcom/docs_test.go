package calcom_test

import (
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors/calcom"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
)

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/calcom.md", calcom.Type().Fields)
}
