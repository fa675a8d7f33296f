package mapping

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestJSONSchema(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(JSONSchema())
	require.NoError(t, err)
	var round map[string]any
	require.NoError(t, json.Unmarshal(b, &round), "the schema is valid JSON")
	require.Equal(t, "https://json-schema.org/draft/2020-12/schema", round["$schema"])

	defs := round["$defs"].(map[string]any)
	props := defs["field"].(map[string]any)["properties"].(map[string]any)
	for _, k := range fieldKeys {
		require.Contains(t, props, k, "field schema documents %q", k)
	}
	testProps := defs["test"].(map[string]any)["properties"].(map[string]any)
	for _, k := range testKeys {
		require.Contains(t, testProps, k)
	}
	require.Contains(t, round["properties"], "fields")
	require.Contains(t, round["properties"], "tests")

	// Every $ref points at a definition that exists.
	var check func(v any)
	check = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				require.Contains(t, defs, ref[len("#/$defs/"):], ref)
			}
			for _, e := range x {
				check(e)
			}
		case []any:
			for _, e := range x {
				check(e)
			}
		}
	}
	check(round)

	// Callers may change their copy.
	JSONSchema()["title"] = "changed"
	require.Equal(t, "clinicbridge mapping", JSONSchema()["title"])
}
