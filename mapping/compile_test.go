package mapping

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestCompileErrors asserts the exact file:line:col, path and message of every
// compile error integrators can hit.
func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src, want string
	}{
		{
			name: "yaml syntax error",
			src:  "fields:\n  to: {from: payload.a\n  body: {value: x}\n",
			want: `m.yaml:2: invalid YAML: did not find expected ',' or '}' (inside {...} or [...], quote values that contain [ ] { } or commas)`,
		},
		{
			name: "yaml syntax error, unquoted brackets in a flow mapping",
			src:  "fields:\n  kind: {value: x}\n  to: {from: payload.attendees[0].phone}\n",
			want: `m.yaml:3: invalid YAML: did not find expected ',' or '}' (inside {...} or [...], quote values that contain [ ] { } or commas)`,
		},
		{
			name: "yaml scanner error",
			src:  "fields:\n  to: {from: payload.a}\n  body: x: y\n",
			want: `m.yaml:3: invalid YAML: mapping values are not allowed in this context`,
		},
		{
			name: "unknown key in a field spec",
			src:  "fields:\n  to: {form: payload.phone}\n",
			want: `m.yaml:2:8: fields.to: unknown key "form" (did you mean "from"?)`,
		},
		{
			name: "two forms",
			src:  "fields:\n  to:\n    from: payload.phone\n    expr: payload.phone\n",
			want: `m.yaml:4:5: fields.to.expr: both from and expr given: want exactly one of from, value, expr, template or fields`,
		},
		{
			name: "no form",
			src:  "fields:\n  to: {required: true}\n",
			want: `m.yaml:2:3: fields.to: no value: want one of from, value, expr, template or fields`,
		},
		{
			name: "bad expression syntax, plain scalar",
			src:  "fields:\n  n: {expr: payload.a + * 2}\n",
			want: `m.yaml:2:25: fields.n.expr: unexpected token Operator("*")`,
		},
		{
			name: "unknown function in a template, single-quoted",
			src:  "fields:\n  body: {template: 'Hi {{ frist_name(payload.name) }}'}\n",
			want: `m.yaml:2:27: fields.body.template: unknown function "frist_name" (did you mean "first_name"?)`,
		},
		{
			name: "unknown function, double-quoted",
			src:  "fields:\n  to: {expr: \"e164x(payload.phone, 'GB')\"}\n",
			want: `m.yaml:2:15: fields.to.expr: unknown function "e164x" (did you mean "e164"?)`,
		},
		{
			name: "single-quoted with an escaped quote before the error",
			src:  "fields:\n  a: {expr: 'payload.a == ''x'' && nope(1)'}\n",
			want: `m.yaml:2:36: fields.a.expr: unknown function "nope" (did you mean "none"?)`,
		},
		{
			name: "unknown function in a literal block template",
			src:  "fields:\n  body:\n    template: |\n      Hello {{ payload.name }},\n      see you {{ fmt_time(payload.start) }}\n",
			want: `m.yaml:5:18: fields.body.template: unknown function "fmt_time"`,
		},
		{
			name: "unknown variable",
			src:  "fields:\n  to: {from: paylod.phone}\n",
			want: `m.yaml:2:14: fields.to.from: unknown name "paylod" (did you mean "payload"?)`,
		},
		{
			name: "item outside each",
			src:  "fields:\n  sku: {from: item.sku}\n",
			want: `m.yaml:2:15: fields.sku.from: unknown name "item" (item exists only inside each)`,
		},
		{
			name: "unknown event field",
			src:  "fields:\n  t: {expr: 'event.tpye == \"X\"'}\n",
			want: `m.yaml:2:20: fields.t.expr: unknown field "tpye" in event (did you mean "type"?)`,
		},
		{
			name: "from is not a path",
			src:  "fields:\n  t: {from: upper(payload.a)}\n",
			want: `m.yaml:2:13: fields.t.from: from takes a path such as payload.attendees[0].name; use expr: to compute a value`,
		},
		{
			name: "wrong arity",
			src:  "fields:\n  t: {expr: 'first_name(payload.a, 1)'}\n",
			want: `m.yaml:2:14: fields.t.expr: too many arguments to call first_name`,
		},
		{
			name: "unknown constant time zone",
			src:  "fields:\n  t: {expr: 'format_time(payload.at, \"Europe/Lodnon\", \"15:04\")'}\n",
			want: `m.yaml:2:38: fields.t.expr: format_time: unknown time zone "Europe/Lodnon"`,
		},
		{
			name: "unknown constant region",
			src:  "fields:\n  t: {expr: 'e164(payload.phone, \"UK\")'}\n",
			want: `m.yaml:2:34: fields.t.expr: e164: unknown region "UK" (want an ISO 3166 code such as "GB")`,
		},
		{
			name: "unknown constant currency",
			src:  "fields:\n  t: {expr: 'minor_to_major(payload.amount, \"XYZ\")'}\n",
			want: `m.yaml:2:45: fields.t.expr: minor_to_major: unknown currency "XYZ"`,
		},
		{
			name: "template with unbalanced {{",
			src:  "fields:\n  body: {template: 'Hi {{ payload.name'}\n",
			want: `m.yaml:2:24: fields.body.template: unclosed "{{" (want "}}")`,
		},
		{
			name: "empty placeholder",
			src:  "fields:\n  body: {template: 'Hi {{ }}'}\n",
			want: `m.yaml:2:24: fields.body.template: empty placeholder "{{ }}"`,
		},
		{
			name: "each without fields",
			src:  "fields:\n  lines:\n    each: payload.items\n",
			want: `m.yaml:3:5: fields.lines.each: each needs fields: (one object per array element)`,
		},
		{
			name: "each with from",
			src:  "fields:\n  lines:\n    each: payload.items\n    from: item.sku\n    fields: {sku: {from: item.sku}}\n",
			want: `m.yaml:4:5: fields.lines.from: each takes fields:, not from:`,
		},
		{
			name: "lookup not a map",
			src:  "fields:\n  s: {from: payload.status, lookup: [a, b]}\n",
			want: `m.yaml:2:37: fields.s.lookup: lookup must be an object mapping input values to output values, e.g. {ACCEPTED: booked}`,
		},
		{
			name: "default on an object",
			src:  "fields:\n  p:\n    default: x\n    fields: {name: {from: payload.name}}\n",
			want: `m.yaml:3:5: fields.p.default: default does not apply to an object or array (fields:)`,
		},
		{
			name: "required not a boolean",
			src:  "fields:\n  to: {from: payload.phone, required: yes}\n",
			want: `m.yaml:2:39: fields.to.required: want true or false`,
		},
		{
			name: "field spec is a scalar",
			src:  "fields:\n  to: payload.phone\n",
			want: `m.yaml:2:7: fields.to: want a field spec such as {from: payload.x}, {value: ...}, {expr: ...}, {template: ...} or {fields: ...}; did you mean {from: payload.phone}?`,
		},
		{
			name: "duplicate field",
			src:  "fields:\n  to: {from: payload.a}\n  to: {from: payload.b}\n",
			want: `m.yaml:3:3: fields.to: duplicate key "to" (first at line 2)`,
		},
		{
			name: "tests entry with both input and input_file",
			src:  "fields:\n  to: {from: payload.a}\ntests:\n  - name: x\n    input: {payload: {a: 1}}\n    input_file: testdata/x.json\n    expect: {to: 1}\n",
			want: `m.yaml:6:5: tests[0].input_file: both input and input_file given: want one`,
		},
		{
			name: "tests entry without an expectation",
			src:  "fields:\n  to: {from: payload.a}\ntests:\n  - name: x\n    input: {payload: {a: 1}}\n",
			want: `m.yaml:4:5: tests[0]: want expect or expect_error`,
		},
		{
			name: "tests input with a misspelt key",
			src:  "fields:\n  to: {from: payload.a}\ntests:\n  - input: {paylaod: {a: 1}}\n    expect: {to: 1}\n",
			want: `m.yaml:4:13: tests[0].input: unknown key "paylaod" (did you mean "payload"?) (want event, payload)`,
		},
		{
			name: "unknown top-level key",
			src:  "fields:\n  to: {from: payload.a}\ntest:\n  - name: x\n",
			want: `m.yaml:3:1: unknown top-level key "test" (did you mean "tests"?) (want fields, tests)`,
		},
		{
			name: "missing fields",
			src:  "tests: []\n",
			want: `m.yaml:1:1: missing fields:`,
		},
		{
			name: "not an object",
			src:  "- a\n- b\n",
			want: `m.yaml:1:1: a mapping is a YAML object with fields: (and optionally tests:)`,
		},
		{
			name: "empty document",
			src:  "",
			want: `m.yaml:1:1: empty mapping: want a document with fields:`,
		},
		{
			name: "two documents",
			src:  "fields:\n  to: {from: payload.a}\n---\nfields: {}\n",
			want: `m.yaml:3:1: a mapping file holds one YAML document; found a second one`,
		},
		{
			name: "nested field path",
			src:  "fields:\n  patient:\n    fields:\n      name: {frm: payload.name}\n",
			want: `m.yaml:4:14: fields.patient.fields.name: unknown key "frm" (did you mean "from"?)`,
		},
		{
			name: "value with NaN",
			src:  "fields:\n  n: {value: .nan}\n",
			want: `m.yaml:2:14: fields.n.value: NaN and infinity cannot be represented in JSON`,
		},
		{
			name: "recursive alias",
			src:  "fields:\n  n: {value: &a [*a]}\n",
			want: `m.yaml:2:18: fields.n.value: value too large or too deeply nested`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile([]byte(tc.src), "m.yaml")
			require.Nil(t, p)
			require.Error(t, err)
			require.Equal(t, tc.want, err.Error())
			var ce *Error
			require.True(t, errors.As(err, &ce), "error is a *mapping.Error")
			require.Equal(t, "m.yaml", ce.File)
		})
	}
}

func TestCompileErrorFields(t *testing.T) {
	t.Parallel()
	_, err := Compile([]byte("fields:\n  body: {template: 'Hi {{ frist_name(payload.name) }}'}\n"), "reminder.yaml")
	var ce *Error
	require.True(t, errors.As(err, &ce))
	require.Equal(t, Error{File: "reminder.yaml", Line: 2, Col: 27, Path: "fields.body.template",
		Msg: `unknown function "frist_name" (did you mean "first_name"?)`}, *ce)
}

func TestCompileReportsSeveralErrors(t *testing.T) {
	t.Parallel()
	_, err := Compile([]byte("fields:\n  a: {form: payload.a}\n  b: {from: paylod.b}\n"), "m.yaml")
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Equal(t, []string{
		`m.yaml:2:7: fields.a: unknown key "form" (did you mean "from"?)`,
		`m.yaml:3:13: fields.b.from: unknown name "paylod" (did you mean "payload"?)`,
	}, lines)
	var ce *Error
	require.True(t, errors.As(err, &ce))
	require.Equal(t, 2, ce.Line)
}

// TestCompileNode compiles a mapping inline in a larger config: positions are
// the config file's.
func TestCompileNode(t *testing.T) {
	t.Parallel()
	cfg := "version: 1\nroutes:\n  - name: r\n    map:\n      fields:\n        to: {from: payload.phone}\n        body: {template: 'Hi {{ frist_name(payload.name) }}'}\n"
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	mapNode := doc.Content[0].Content[3].Content[0].Content[3]
	_, err := CompileNode(mapNode, "clinicbridge.yaml")
	require.EqualError(t, err, `clinicbridge.yaml:7:33: fields.body.template: unknown function "frist_name" (did you mean "first_name"?)`)

	ok := "version: 1\nmap:\n  fields:\n    to: {from: payload.phone}\n"
	require.NoError(t, yaml.Unmarshal([]byte(ok), &doc))
	p, err := CompileNode(doc.Content[0].Content[3], "clinicbridge.yaml")
	require.NoError(t, err)
	out, err := p.Apply(map[string]any{"payload": map[string]any{"phone": "+1"}})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"to": "+1"}, out)

	_, err = CompileNode(nil, "c.yaml")
	require.Error(t, err)
}

func TestFieldsAndWholePayload(t *testing.T) {
	t.Parallel()
	p, err := Compile([]byte(`
fields:
  raw: {from: payload}
  to: {from: payload.phone}
  copy: {expr: payload}
  patient:
    fields:
      all: {from: payload}
      name: {from: payload.name}
  lines:
    each: payload.items
    fields:
      raw: {from: payload}
`), "m.yaml")
	require.NoError(t, err)
	require.Equal(t, []string{"copy", "lines", "patient", "raw", "to"}, p.Fields())
	require.Equal(t, []string{"copy", "lines[].raw", "patient.all", "raw"}, p.WholePayloadFields())
}

func TestTestsParsed(t *testing.T) {
	t.Parallel()
	p, err := Compile([]byte(`fields:
  to: {from: payload.phone, required: true}
tests:
  - name: has phone
    input: {event: {type: X}, payload: {phone: "+1", n: 3}}
    expect: {to: "+1"}
  - name: no phone
    input_file: testdata/no-phone.json
    expect_error: "to: required"
`), "m.yaml")
	require.NoError(t, err)
	tests := p.Tests()
	require.Len(t, tests, 2)
	require.Equal(t, Test{
		Name:   "has phone",
		Input:  map[string]any{"event": map[string]any{"type": "X"}, "payload": map[string]any{"phone": "+1", "n": float64(3)}},
		Expect: map[string]any{"to": "+1"},
		Line:   4,
	}, tests[0])
	require.Equal(t, Test{Name: "no phone", InputFile: "testdata/no-phone.json", ExpectError: "to: required", Line: 7}, tests[1])
}
