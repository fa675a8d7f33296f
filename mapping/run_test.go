package mapping

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const runMapping = `
fields:
  to: {from: payload.phone, required: true}
  name: {template: '{{ first_name(payload.name) }}'}
  n: {from: payload.n}
  lines:
    each: payload.items
    fields:
      sku: {from: item.sku}
tests:
  - name: passes
    input: {payload: {phone: "+1", name: Ann Smith, n: 3, items: [{sku: a}]}}
    expect: {to: "+1", name: Ann, n: 3, lines: [{sku: a}]}
  - name: fails
    input: {payload: {phone: "+1", name: Bob Jones, n: 3.5, items: [{sku: a}, {sku: b}]}}
    expect: {to: "+2", name: Bob, n: 3, lines: [{sku: a}], extra: x}
  - name: expects an error
    input: {payload: {name: Ann}}
    expect_error: "to: required"
  - name: expects an error that does not happen
    input: {payload: {phone: "+1"}}
    expect_error: "to: required"
  - name: expects output, gets an error
    input: {payload: {}}
    expect: {to: "+1"}
`

func TestRun(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, runMapping)
	tests := p.Tests()
	require.Len(t, tests, 5)

	res := tests[0].Run(p, nil)
	require.True(t, res.Pass, res.Diff)
	require.Empty(t, res.Diff)
	require.NoError(t, res.Err)
	require.Equal(t, "Ann", res.Output["name"])

	res = tests[1].Run(p, nil)
	require.False(t, res.Pass)
	require.NoError(t, res.Err)
	require.Equal(t, `- extra: "x"
+ extra: (missing)
- lines[1]: (missing)
+ lines[1]: {"sku":"b"}
- n: 3
+ n: 3.5
- to: "+2"
+ to: "+1"`, res.Diff)

	res = tests[2].Run(p, nil)
	require.True(t, res.Pass, res.Diff)
	require.EqualError(t, res.Err, "to: required")

	res = tests[3].Run(p, nil)
	require.False(t, res.Pass)
	require.Equal(t, `- error containing "to: required"
+ no error, output: {"lines":null,"n":null,"name":"","to":"+1"}`, res.Diff)

	res = tests[4].Run(p, nil)
	require.False(t, res.Pass)
	require.Equal(t, `- output: {"to":"+1"}
+ error: to: required`, res.Diff)

	// An input read by the caller from input_file is passed explicitly.
	res = Test{Name: "file", InputFile: "x.json", Expect: map[string]any{"to": "+9", "name": "", "n": nil, "lines": nil}}.
		Run(p, map[string]any{"payload": map[string]any{"phone": "+9"}})
	require.True(t, res.Pass, res.Diff)
}
