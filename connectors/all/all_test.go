package all_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
)

func TestRegistry(t *testing.T) {
	t.Parallel()
	reg := all.Registry()
	require.Subset(t, reg.Names(), []string{"file", "http", "webhook", "poll"})
	for _, ty := range reg.Types() {
		require.NotEmpty(t, ty.Doc, ty.Name)
		require.NotNil(t, ty.Build, ty.Name)
		require.True(t, ty.Source || ty.Sink(), ty.Name)
		var walk func(prefix string, fs []config.Field)
		walk = func(prefix string, fs []config.Field) {
			for _, f := range fs {
				require.NotEmpty(t, f.Doc, "%s: %s%s has no Doc", ty.Name, prefix, f.Name)
				walk(prefix+f.Name+".", f.Fields)
			}
		}
		walk("", ty.Fields)
	}
}

// TestDesignExamples builds the connectors exactly as DESIGN.md's config
// example writes them.
func TestDesignExamples(t *testing.T) {
	t.Parallel()
	reg := all.Registry()
	dir := t.TempDir()
	for _, tc := range []struct{ typ, cfg string }{
		{"webhook", "{webhook_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}"},
		{"file", "{path: ./data/out.jsonl}"},
		{"http", "{url: 'https://portal.example.clinic/api/notes/{{ doc.id }}', auth: {bearer: t0k}}"},
	} {
		ty, ok := reg.Lookup(tc.typ)
		require.True(t, ok)
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(tc.cfg), &doc))
		require.Empty(t, config.Check("c.yaml", doc.Content[0], ty.Fields, "connectors.x"))
		c, err := ty.Build(doc.Content[0], connectors.Env{Name: "x", Dir: dir})
		require.NoError(t, err, tc.typ)
		if ty.Source {
			require.Implements(t, (*connectors.Source)(nil), c)
		}
		if ty.Sink() {
			require.Implements(t, (*connectors.Sink)(nil), c)
		}
		if cl, ok := c.(connectors.Closer); ok {
			require.NoError(t, cl.Close())
		}
	}
}
