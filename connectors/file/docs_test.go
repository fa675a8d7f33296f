package file_test

import (
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/file"
)

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/file.md", file.Type().Fields)
}
