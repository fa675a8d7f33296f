package docgen_test

import (
	"flag"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/internal/docgen"
)

var update = flag.Bool("update", false, "rewrite docs/reference.md")

func TestReferenceUpToDate(t *testing.T) {
	got := docgen.Reference(all.Registry())
	const path = "../../docs/reference.md"
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	if string(want) != got {
		t.Fatal("docs/reference.md is stale: run go test ./internal/docgen -update")
	}
}
