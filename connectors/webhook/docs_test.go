package webhook_test

import (
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
)

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/webhook.md", webhook.Type().Fields)
}
