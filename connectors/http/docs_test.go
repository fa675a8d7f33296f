package http_test

import (
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	cbhttp "github.com/clinicbridge/clinicbridge/connectors/http"
)

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/http.md", cbhttp.Type().Fields)
}
