package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// jsonInput decodes a mapping input exactly as the pipeline does.
func jsonInput(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m))
	return m
}

func mustCompile(t testing.TB, src string) *Program {
	t.Helper()
	p, err := Compile([]byte(src), "m.yaml")
	require.NoError(t, err)
	return p
}

const applyInput = `{
  "event": {"id": "e1", "type": "BOOKING_CREATED", "source": "booking", "key": "bk1"},
  "payload": {
    "uid": "bk1", "status": "ACCEPTED", "count": 3, "half": 2.5, "zero": 0, "no": false, "empty": "",
    "nothing": null, "first-name": "Ann", "startTime": "2025-03-04T09:30:00Z", "unix": 1741080600,
    "tz": "America/New_York", "amount": 1999, "price": 19.99, "currency": "gbp",
    "attendees": [{"name": "Ann Marie Smith", "phoneNumber": "07911 123456", "email": ""}],
    "items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}],
    "tags": ["x", "y"]
  }
}`

func TestApplyFieldForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		field string // one field spec, output key "v"
		want  any
	}{
		// from
		{"from path", "{from: payload.uid}", "bk1"},
		{"from index", "{from: 'payload.attendees[0].name'}", "Ann Marie Smith"},
		{"from negative index", "{from: 'payload.items[-1].sku'}", "B2"},
		{"from string key", `{from: 'payload["first-name"]'}`, "Ann"},
		{"from optional chaining", "{from: 'payload?.uid'}", "bk1"},
		{"from event", "{from: event.type}", "BOOKING_CREATED"},
		{"from missing key", "{from: payload.missing}", nil},
		{"from nil member", "{from: payload.nothing.deeper}", nil},
		{"from member of a string", "{from: payload.uid.deeper}", nil},
		{"from index out of range", "{from: 'payload.attendees[5].name'}", nil},
		{"from key on an array", "{from: payload.items.sku}", nil},
		{"from index on an object", "{from: 'payload.attendees[0][1]'}", nil},
		{"from object", "{from: 'payload.items[0]'}", map[string]any{"sku": "A1", "qty": float64(2)}},
		{"from needs (nil by default)", "{from: needs.x}", nil},
		// value
		{"value string", "{value: reminder}", "reminder"},
		{"value int", "{value: 42}", 42},
		{"value float", "{value: 1.5}", 1.5},
		{"value bool", "{value: true}", true},
		{"value null", "{value: null}", nil},
		{"value object", "{value: {a: 1, b: [x]}}", map[string]any{"a": 1, "b": []any{"x"}}},
		{"value timestamp stays text", "{value: 2025-01-01T00:00:00Z}", "2025-01-01T00:00:00Z"},
		// expr
		{"expr arithmetic", "{expr: payload.count * 2}", float64(6)},
		{"expr builtin", "{expr: upper(payload.status)}", "ACCEPTED"},
		{"expr nil-safe member", "{expr: payload.nothing.deeper == nil}", true},
		{"expr nil-safe index", "{expr: 'payload.attendees[3].phoneNumber ?? \"none\"'}", "none"},
		{"expr optional chaining", `{expr: 'payload?.uid ?? "x"'}`, "bk1"},
		{"expr optional index", `{expr: 'payload.items[9]?.sku ?? "none"'}`, "none"},
		{"expr conditional", "{expr: 'payload.count > 2 ? \"many\" : \"few\"'}", "many"},
		{"expr on a whole array", "{expr: 'map(payload.items, .sku)'}", []any{"A1", "B2"}},
		{"expr len", "{expr: len(payload.items)}", 2},
		// template
		{"template", "{template: 'Booking {{ payload.uid }} is {{ lower(payload.status) }}'}", "Booking bk1 is accepted"},
		{"template nil renders empty", "{template: '[{{ payload.missing }}]'}", "[]"},
		{"template integral number", "{template: '{{ payload.count }}x{{ payload.half }}'}", "3x2.5"},
		{"template computed number", "{template: '{{ payload.count * 1.0 }}'}", "3"},
		{"template bool", "{template: '{{ payload.no }}'}", "false"},
		{"template braces in strings", `{template: '{{ "}}" }}{{ {"a": 1}["a"] }}'}`, "}}1"},
		{"template literal only", "{template: plain text}", "plain text"},
		{"template object renders JSON", "{template: '{{ payload.tags }}'}", `["x","y"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := mustCompile(t, "fields:\n  v: "+tc.field+"\n")
			out, err := p.Apply(jsonInput(t, applyInput))
			require.NoError(t, err)
			require.Equal(t, map[string]any{"v": tc.want}, out)
		})
	}
}

func TestApplyModifiers(t *testing.T) {
	t.Parallel()
	const absent = "<absent>"
	for _, tc := range []struct {
		name, field string
		want        any // absent: key dropped
		wantErr     string
	}{
		{"default on null", "{from: payload.missing, default: x}", "x", ""},
		{"default on empty string", "{from: payload.empty, default: x}", "x", ""},
		{"default not on zero", "{from: payload.zero, default: 1}", float64(0), ""},
		{"default not on false", "{from: payload.no, default: true}", false, ""},
		{"required present", "{from: payload.uid, required: true}", "bk1", ""},
		{"required missing", "{from: payload.missing, required: true}", nil, "v: required"},
		{"required empty", "{from: payload.empty, required: true}", nil, "v: required"},
		{"required satisfied by default", "{from: payload.missing, default: d, required: true}", "d", ""},
		{"required false", "{from: payload.missing, required: false}", nil, ""},
		{"lookup hit", "{from: payload.status, lookup: {ACCEPTED: booked, CANCELLED: cancelled}}", "booked", ""},
		{"lookup miss uses default", "{from: payload.uid, lookup: {ACCEPTED: booked}, default: unknown}", "unknown", ""},
		{"lookup miss without default", "{from: payload.uid, lookup: {ACCEPTED: booked}}", nil, `v: no lookup entry for "bk1"`},
		{"lookup number key", "{from: payload.count, lookup: {3: three, 4: four}}", "three", ""},
		{"lookup float key normalised", "{from: payload.count, lookup: {3.0: three}}", "three", ""},
		{"lookup bool key", "{from: payload.no, lookup: {false: 'no', true: 'yes'}}", "no", ""},
		{"lookup object value", "{from: payload.status, lookup: {ACCEPTED: {code: 1}}}", map[string]any{"code": 1}, ""},
		{"lookup of null uses default", "{from: payload.missing, lookup: {A: b}, default: d}", "d", ""},
		{"lookup of null stays null", "{from: payload.missing, lookup: {A: b}}", nil, ""},
		{"lookup of an object", "{from: 'payload.items[0]', lookup: {A: b}}", nil, "v: lookup: want a string, number or boolean, got object"},
		{"omit_empty null", "{from: payload.missing, omit_empty: true}", absent, ""},
		{"omit_empty empty string", "{from: payload.empty, omit_empty: true}", absent, ""},
		{"omit_empty empty array", "{expr: '[]', omit_empty: true}", absent, ""},
		{"omit_empty empty object", "{expr: '{}', omit_empty: true}", absent, ""},
		{"omit_empty keeps zero", "{from: payload.zero, omit_empty: true}", float64(0), ""},
		{"omit_empty keeps value", "{from: payload.uid, omit_empty: true}", "bk1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := mustCompile(t, "fields:\n  v: "+tc.field+"\n")
			out, err := p.Apply(jsonInput(t, applyInput))
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
				var ae *ApplyError
				require.True(t, errors.As(err, &ae))
				require.Nil(t, out)
				return
			}
			require.NoError(t, err)
			if tc.want == absent {
				require.Equal(t, map[string]any{}, out)
				return
			}
			require.Equal(t, map[string]any{"v": tc.want}, out)
		})
	}
}

func TestApplyFunctions(t *testing.T) {
	t.Parallel()
	london := time.Date(2025, 3, 4, 9, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, expr string
		want       any
		wantErr    string
	}{
		{"e164 national", `e164(payload.attendees[0].phoneNumber, "GB")`, "+447911123456", ""},
		{"e164 already e164", `e164("+447911123456", "GB")`, "+447911123456", ""},
		{"e164 nil", `e164(payload.missing, "GB")`, nil, ""},
		{"e164 empty", `e164(payload.empty, "GB")`, nil, ""},
		{"e164 invalid", `e164("12345", "GB")`, nil, "v: e164: invalid phone number"},
		{"e164 not a string", `e164(payload.count, "GB")`, nil, "v: e164: phone must be a string, got number"},
		{"e164 dynamic bad region", `e164("07911 123456", payload.uid)`, nil, "v: e164: invalid phone number"},
		{"format_time RFC 3339", `format_time(payload.startTime, "Europe/London", "Mon 2 Jan 15:04")`, "Tue 4 Mar 09:30", ""},
		{"format_time unix seconds", `format_time(payload.unix, "UTC", time.RFC3339)`, nil, "unknown name"},
		{"format_time unix number", `format_time(payload.unix, "UTC", "2006-01-02T15:04:05Z07:00")`, "2025-03-04T09:30:00Z", ""},
		{"format_time time value", `format_time(date(payload.startTime) + duration("1h"), "Europe/Paris", "15:04")`, "11:30", ""},
		{"format_time dynamic zone", `format_time(payload.startTime, payload.tz, "15:04 MST")`, "04:30 EST", ""},
		{"format_time empty zone is UTC", `format_time(payload.startTime, "", "15:04")`, "09:30", ""},
		{"format_time nil", `format_time(payload.missing, "UTC", "15:04")`, nil, ""},
		{"format_time bad time", `format_time(payload.uid, "UTC", "15:04")`, nil, "v: format_time: cannot parse time (want RFC 3339 such as 2025-01-31T09:30:00Z)"},
		{"format_time wrong type", `format_time(payload.items, "UTC", "15:04")`, nil, "v: format_time: want a time, RFC 3339 string or unix seconds, got array"},
		{"format_time dynamic unknown zone", `format_time(payload.startTime, payload.status, "15:04")`, nil, `v: format_time: unknown time zone "ACCEPTED"`},
		{"parse_time", `parse_time("04/03/2025 09:30", "02/01/2006 15:04")`, london, ""},
		{"parse_time in zone", `format_time(parse_time("04/03/2025 09:30", "02/01/2006 15:04", "America/New_York"), "UTC", "15:04")`, "14:30", ""},
		{"parse_time mismatch", `parse_time(payload.uid, "2006")`, nil, "v: parse_time: value does not match the layout"},
		{"parse_time nil", `parse_time(payload.missing, "2006")`, nil, ""},
		{"first_name", `first_name(payload.attendees[0].name)`, "Ann", ""},
		{"first_name comma form", `first_name("Smith, Ann Marie")`, "Ann", ""},
		{"first_name single word", `first_name("Madonna")`, "Madonna", ""},
		{"first_name nil", `first_name(payload.missing)`, nil, ""},
		{"first_name wrong type", `first_name(payload.count)`, nil, "v: first_name: want a string, got number"},
		{"last_name", `last_name(payload.attendees[0].name)`, "Smith", ""},
		{"last_name comma form", `last_name("Smith, Ann")`, "Smith", ""},
		{"last_name single word", `last_name("Madonna")`, "", ""},
		{"minor_to_major GBP", `minor_to_major(payload.amount, "GBP")`, 19.99, ""},
		{"minor_to_major lower case", `minor_to_major(payload.amount, payload.currency)`, 19.99, ""},
		{"minor_to_major JPY", `minor_to_major(500, "JPY")`, float64(500), ""},
		{"minor_to_major KWD", `minor_to_major(1234, "kwd")`, 1.234, ""},
		{"minor_to_major nil", `minor_to_major(payload.missing, "GBP")`, nil, ""},
		{"minor_to_major string", `minor_to_major(payload.uid, "GBP")`, nil, "v: minor_to_major: amount must be a number, got string"},
		{"minor_to_major unknown currency", `minor_to_major(1, payload.status)`, nil, `v: minor_to_major: unknown currency "ACCEPTED"`},
		{"major_to_minor GBP", `major_to_minor(payload.price, "GBP")`, 1999, ""},
		{"major_to_minor rounding", `major_to_minor(0.1 + 0.2, "USD")`, 30, ""},
		{"major_to_minor JPY", `major_to_minor(500, "JPY")`, 500, ""},
		{"major_to_minor BHD", `major_to_minor(1.2345, "BHD")`, 1235, ""},
		{"major_to_minor wrong type", `major_to_minor(payload.items, "GBP")`, nil, "v: major_to_minor: amount must be a number, got array"},
		{"sha256", `sha256("abc")`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", ""},
		{"sha256 number", `sha256(payload.count) == sha256("3")`, true, ""},
		{"sha256 nil", `sha256(payload.missing)`, nil, ""},
		{"sha256 wrong type", `sha256(payload.items)`, nil, "v: sha256: want a string, got array"},
		{"coalesce", `coalesce(payload.missing, payload.empty, payload.uid, "x")`, "bk1", ""},
		{"coalesce keeps zero", `coalesce(payload.zero, 1)`, float64(0), ""},
		{"coalesce none", `coalesce(payload.missing, "")`, nil, ""},
		{"runtime error is an apply error", `payload.count / payload.uid`, nil, "v: invalid operation"},
		{"integer division by zero", `1 % int(payload.zero)`, nil, "v: runtime error: integer divide by zero"},
		// expr's own messages are scrubbed of payload values.
		{"builtin error scrubbed", `int(payload.uid)`, nil, "v: invalid operation: int(…)"},
		{"builtin date error scrubbed", `date(payload.uid)`, nil, "v: invalid date …"},
		{"builtin date layout error scrubbed", `date(payload.uid, "2006")`, nil, `v: parsing time "…" as "…": cannot parse "…" as "…"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile([]byte(fmt.Sprintf("fields:\n  v: {expr: %q}\n", tc.expr)), "m.yaml")
			if tc.wantErr == "unknown name" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			out, err := p.Apply(jsonInput(t, applyInput))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.NotContains(t, err.Error(), "bk1", "apply errors must not quote payload values")
				var ae *ApplyError
				require.True(t, errors.As(err, &ae))
				require.Equal(t, "v", ae.Path)
				return
			}
			require.NoError(t, err)
			require.Equal(t, map[string]any{"v": tc.want}, out)
		})
	}
}

const nestedMapping = `
fields:
  patient:
    fields:
      name: {from: 'payload.attendees[0].name', required: true}
      contact:
        fields:
          phone: {expr: 'e164(payload.attendees[0].phoneNumber, "GB")'}
  lines:
    each: payload.items
    fields:
      sku: {from: item.sku, required: true}
      qty: {from: item.qty, default: 1}
      booking: {from: payload.uid}
      event: {from: event.type}
      label: {template: '{{ item.sku }} x{{ item.qty }}'}
      parts:
        each: item.parts
        omit_empty: true
        fields:
          id: {from: item.id, required: true}
`

func TestApplyNestedAndEach(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, nestedMapping)
	out, err := p.Apply(jsonInput(t, `{"event": {"type": "T"}, "payload": {"uid": "u",
		"attendees": [{"name": "Ann", "phoneNumber": "+447911123456"}],
		"items": [{"sku": "A", "qty": 2, "parts": [{"id": 1}]}, {"sku": "B", "parts": []}]}}`))
	require.NoError(t, err)
	require.Equal(t, map[string]any{
		"patient": map[string]any{"name": "Ann", "contact": map[string]any{"phone": "+447911123456"}},
		"lines": []any{
			map[string]any{"sku": "A", "qty": float64(2), "booking": "u", "event": "T", "label": "A x2",
				"parts": []any{map[string]any{"id": float64(1)}}},
			map[string]any{"sku": "B", "qty": 1, "booking": "u", "event": "T", "label": "B x"},
		},
	}, out)
}

func TestApplyErrorPaths(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, nestedMapping)
	for _, tc := range []struct{ input, want string }{
		{`{"payload": {"attendees": [{}]}}`, "patient.name: required"},
		{`{"payload": {"attendees": [{"name": "A", "phoneNumber": "123"}]}}`, "patient.contact.phone: e164: invalid phone number"},
		{`{"payload": {"attendees": [{"name": "A"}], "items": [{"sku": "A"}, {"sku": "B"}, {"qty": 1}]}}`, "lines[2].sku: required"},
		{`{"payload": {"attendees": [{"name": "A"}], "items": [{"sku": "A"}, {"sku": "B", "parts": [{"id": 1}, {}]}]}}`, "lines[1].parts[1].id: required"},
		{`{"payload": {"attendees": [{"name": "A"}], "items": "oops"}}`, "lines: each: want an array, got string"},
		{`{"payload": {"attendees": [{"name": "A"}], "items": [{"sku": "A", "parts": {"id": 1}}]}}`, "lines[0].parts: each: want an array, got object"},
	} {
		_, err := p.Apply(jsonInput(t, tc.input))
		require.EqualError(t, err, tc.want, tc.input)
		var ae *ApplyError
		require.True(t, errors.As(err, &ae))
	}
	// A null array stays null (and omit_empty drops it inside lines).
	out, err := p.Apply(jsonInput(t, `{"payload": {"attendees": [{"name": "A"}]}}`))
	require.NoError(t, err)
	require.Nil(t, out["lines"])
	require.Contains(t, out, "lines")
}

func TestApplyNilAndOddInputs(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, nestedMapping+"  raw: {from: payload}\n  x: {expr: 'payload.a.b[1] ?? 0'}\n")
	_, err := p.Apply(nil)
	require.EqualError(t, err, "patient.name: required")
	// Go shapes other than encoding/json's are walked too.
	out, err := p.Apply(map[string]any{"payload": map[string]any{
		"attendees": []map[string]any{{"name": "A"}},
		"items":     []map[string]any{{"sku": "S"}},
	}})
	require.NoError(t, err)
	require.Equal(t, "A", out["patient"].(map[string]any)["name"])
	require.Equal(t, "S", out["lines"].([]any)[0].(map[string]any)["sku"])
}

func TestApplyOutputDoesNotAliasProgram(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, "fields:\n  v: {value: {a: [1]}}\n  s: {from: payload.s, lookup: {x: {b: 1}}}\n")
	in := map[string]any{"payload": map[string]any{"s": "x"}}
	out, err := p.Apply(in)
	require.NoError(t, err)
	out["v"].(map[string]any)["a"] = "changed"
	out["s"].(map[string]any)["b"] = "changed"
	out, err = p.Apply(in)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"v": map[string]any{"a": []any{1}}, "s": map[string]any{"b": 1}}, out)
}

// TestApplyConcurrent runs one Program from many goroutines (run with -race).
func TestApplyConcurrent(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, benchMapping)
	in := benchInput(t)
	want, err := p.Apply(in)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				got, err := p.Apply(in)
				if err != nil || got["body"] != want["body"] {
					t.Errorf("concurrent Apply: %v %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
