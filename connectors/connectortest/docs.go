package connectortest

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/config"
)

// DocumentsFields fails t unless the Markdown file at path mentions every
// key of fields, nested ones as `parent.child`, in backquotes: the page may
// be written by hand, but it may not forget a key.
func DocumentsFields(t *testing.T, path string, fields []config.Field) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	doc := string(b)
	var walk func(prefix string, fs []config.Field)
	walk = func(prefix string, fs []config.Field) {
		for _, f := range fs {
			name := prefix + f.Name
			require.True(t, strings.Contains(doc, "`"+name+"`"), "%s does not document `%s`", path, name)
			require.NotEmpty(t, f.Doc, "field %s has no Doc", name)
			walk(name+".", f.Fields)
		}
	}
	walk("", fields)
}
