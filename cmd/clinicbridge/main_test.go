package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

const testConfig = `version: 1
connectors:
  inbox: {type: webhook, webhook_secret: "whsec_dGVzdC1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZS10ZXN0cw=="}
  out: {type: file, path: ./out.jsonl}
routes:
  - name: r
    from: inbox
    map: m.yaml
    to: out
`

func TestValidateExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, dir, "m.yaml", "fields:\n  a: {value: 1}\n")
	good := write(t, dir, "clinicbridge.yaml", testConfig)
	code, out, _ := cli(t, "validate", "-c", good)
	require.Equal(t, 0, code)
	require.Contains(t, out, "ok")
	_, err := os.Stat(filepath.Join(dir, "out.jsonl"))
	require.True(t, os.IsNotExist(err), "validate must not create the sink's file")

	bad := write(t, dir, "bad.yaml", strings.Replace(testConfig, "  out: {type: file, path:", "  out: {type: file, pth:", 1))
	code, _, stderr := cli(t, "validate", "-c", bad)
	require.Equal(t, 2, code)
	require.Equal(t, bad+`:4:21: connectors.out.pth: unknown key (did you mean "path"?)`+"\n"+bad+`:4:8: connectors.out: missing required key "path"`+"\n", stderr)

	code, _, stderr = cli(t, "validate", "-c", filepath.Join(dir, "missing.yaml"))
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "no such file")
}

func TestMappingTestsReportPassAndFail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := write(t, dir, "m.yaml", `fields:
  greeting: {template: "Hi {{ first_name(payload.name) }}"}
tests:
  - name: passes
    input: {event: {type: x}, payload: {name: Ada Lovelace}}
    expect: {greeting: Hi Ada}
  - name: fails
    input_file: testdata/grace.json
    expect: {greeting: Hi Ada}
`)
	write(t, dir, "testdata/grace.json", `{"name": "Grace Hopper"}`)
	code, out, _ := cli(t, "test", m)
	require.Equal(t, 1, code)
	require.Contains(t, out, "ok   "+m+": passes")
	require.Contains(t, out, "FAIL "+m+": fails (line 7)")
	require.Contains(t, out, "Hi Grace")
	require.Contains(t, out, "1 passed, 1 failed")
}

func TestMapDryRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := write(t, dir, "clinicbridge.yaml", strings.Replace(testConfig, "    map: m.yaml\n", "    map: m.yaml\n    when: 'payload.n > 1'\n    key: payload.id\n    at: 'date(payload.start) - duration(\"24h\")'\n", 1))
	write(t, dir, "m.yaml", "fields:\n  id: {from: payload.id, required: true}\n")
	in := write(t, dir, "in.json", `{"id": "b1", "n": 2, "start": "2026-12-03T14:30:00Z"}`)
	code, out, stderr := cli(t, "map", "-c", cfg, "--route", "r", "--input", in)
	require.Equal(t, 0, code, stderr)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, map[string]any{"document": map[string]any{"id": "b1"}, "when": true, "key": "b1", "at": "2026-12-02T14:30:00Z"}, got)

	empty := write(t, dir, "empty.json", `{}`)
	code, out, _ = cli(t, "map", "-c", cfg, "--route", "r", "--input", empty)
	require.Equal(t, 1, code)
	require.Contains(t, out, "id: required")
}

// TestSchema checks the JSON Schema against every example: it accepts each
// config and mapping, and rejects a misspelled key.
func TestSchema(t *testing.T) {
	t.Parallel()
	compile := func(which string) *jsonschema.Schema {
		var buf bytes.Buffer
		require.NoError(t, writeSchema(&buf, which))
		doc, err := jsonschema.UnmarshalJSON(&buf)
		require.NoError(t, err)
		c := jsonschema.NewCompiler()
		require.NoError(t, c.AddResource("schema.json", doc))
		s, err := c.Compile("schema.json")
		require.NoError(t, err)
		return s
	}
	configSchema, mappingSchema := compile("config"), compile("mapping")
	asJSON := func(path string) any {
		src, err := os.ReadFile(path)
		require.NoError(t, err)
		var v any
		require.NoError(t, yaml.Unmarshal(src, &v))
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		require.NoError(t, err)
		return out
	}
	configs, _ := filepath.Glob("../../examples/*/clinicbridge.yaml")
	mappings, _ := filepath.Glob("../../examples/*/mappings/*.yaml")
	require.NotEmpty(t, configs)
	require.NotEmpty(t, mappings)
	for _, p := range configs {
		require.NoError(t, configSchema.Validate(asJSON(p)), p)
	}
	for _, p := range mappings {
		require.NoError(t, mappingSchema.Validate(asJSON(p)), p)
	}
	dir := t.TempDir()
	bad := write(t, dir, "c.yaml", strings.Replace(testConfig, "    from: inbox", "    form: inbox", 1))
	require.Error(t, configSchema.Validate(asJSON(bad)))
	badMap := write(t, dir, "m.yaml", "fields:\n  a: {vaule: 1}\n")
	require.Error(t, mappingSchema.Validate(asJSON(badMap)))
}

// TestExamples runs what CI runs on every example: validate and the mapping tests.
func TestExamples(t *testing.T) {
	t.Parallel()
	configs, _ := filepath.Glob("../../examples/*/clinicbridge.yaml")
	for _, p := range configs {
		code, _, stderr := cli(t, "validate", "-c", p)
		require.Equal(t, 0, code, "%s: %s", p, stderr)
		code, out, stderr := cli(t, "test", "-c", p)
		require.Equal(t, 0, code, "%s: %s%s", p, out, stderr)
	}
}
