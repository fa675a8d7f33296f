package mapping

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// badReason flags errors that only a recovered panic produces: Apply and
// Compile never crash, so the fuzzers look for these instead.
func badReason(msg string) bool {
	return strings.Contains(msg, "internal error") ||
		strings.Contains(msg, "runtime error") ||
		strings.Contains(msg, "cannot compile expression")
}

func FuzzCompile(f *testing.F) {
	f.Add([]byte(benchMapping))
	f.Add([]byte(nestedMapping))
	f.Add([]byte(runMapping))
	f.Add([]byte("fields:\n  a: {value: &x [*x]}\n"))
	f.Add([]byte("fields:\n  a:\n    template: |\n      {{ payload.x }} {{\n"))
	f.Add([]byte("fields: {a: {expr: 'e164(payload.p, \"GB\")', lookup: {1: x}, default: 0, omit_empty: true}}\n"))
	inputs := []map[string]any{
		nil,
		jsonInput(f, applyInput),
		{"payload": "text", "event": 3.0},
		{"payload": []any{nil, 1.0, map[string]any{"items": []any{"x"}}}},
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		defer slowGuard(t, time.Now())
		p, err := Compile(src, "f.yaml")
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || err.Error() == "" || badReason(err.Error()) {
				t.Fatalf("bad compile error %T: %v", err, err)
			}
			return
		}
		_ = p.Fields()
		_ = p.WholePayloadFields()
		for _, in := range inputs {
			checkApply(t, p, in)
		}
		for _, tc := range p.Tests() {
			if tc.Input != nil {
				if r := tc.Run(p, nil); r.Err != nil && badReason(r.Err.Error()) {
					t.Fatalf("test %q: %v", tc.Name, r.Err)
				}
			}
		}
	})
}

// slowGuard fails inputs that take far longer than any real mapping should:
// compile and apply must stay cheap whatever the input.
func slowGuard(t *testing.T, start time.Time) {
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func checkApply(t *testing.T, p *Program, in map[string]any) {
	t.Helper()
	_, err := p.Apply(in)
	if err == nil {
		return
	}
	var ae *ApplyError
	if !errors.As(err, &ae) || badReason(err.Error()) {
		t.Fatalf("bad apply error %T: %v", err, err)
	}
}

// fuzzMapping exercises every field form, modifier and function.
const fuzzMapping = `
fields:
  to:      {expr: 'e164(payload.attendees[0].phoneNumber, "GB")'}
  to2:     {expr: 'e164(payload.phone, payload.region)', omit_empty: true}
  name:    {from: 'payload.attendees[0].name', default: unknown}
  first:   {expr: 'first_name(payload.attendees[0].name)'}
  last:    {expr: 'last_name(payload.name)'}
  when:    {expr: 'format_time(payload.startTime, "Europe/London", "Mon 2 Jan 15:04")'}
  when2:   {expr: 'format_time(payload.at, payload.tz, "15:04")'}
  parsed:  {expr: 'parse_time(payload.date, "2006-01-02", payload.tz)'}
  body:    {template: "Hi {{ first_name(payload.attendees[0].name) }} {{ payload.n }} {{ payload }}"}
  status:  {from: payload.status, lookup: {ACCEPTED: booked, 1: one, true: yes}, default: unknown}
  strict:  {from: payload.kind, lookup: {a: b}, omit_empty: true}
  major:   {expr: 'minor_to_major(payload.amount, payload.currency ?? "GBP")'}
  minor:   {expr: 'major_to_minor(payload.price, "JPY")'}
  id:      {expr: 'sha256(payload.id)'}
  any:     {expr: 'coalesce(payload.a, payload.b, event.id)'}
  count:   {expr: 'len(payload.items ?? [])'}
  flag:    {expr: 'payload.x.y.z != nil && payload.list[3] == nil'}
  kind:    {value: {a: [1, 2]}}
  raw:     {from: payload}
  patient:
    omit_empty: true
    fields:
      name: {from: payload.patient.name, required: false}
      dob:  {from: payload.patient.dob, omit_empty: true}
  lines:
    each: payload.items
    fields:
      sku:  {from: item.sku}
      qty:  {expr: 'item.qty ?? 1'}
      text: {template: '{{ item }}'}
      sub:
        each: item.sub
        fields:
          v: {from: item}
`

func FuzzApply(f *testing.F) {
	f.Add([]byte(benchPayload))
	f.Add([]byte(applyInput))
	f.Add([]byte(`{"payload": {"items": [{"sub": [1, "x", null]}, null, 3], "amount": "12", "price": 1e308}}`))
	f.Add([]byte(`{"payload": {"attendees": [{"phoneNumber": 447911123456}], "status": 1, "kind": "zzz"}}`))
	f.Add([]byte(`[1, 2, {"a": null}]`))
	f.Add([]byte(`"just text"`))
	f.Add([]byte(`{"event": "x", "payload": null, "needs": {"a": 1}}`))
	p, err := Compile([]byte(fuzzMapping), "fuzz.yaml")
	if err != nil {
		f.Fatal(err)
	}
	exprs := []string{
		`payload.attendees[0].phoneNumber != nil`,
		`payload.uid`,
		`date(payload.startTime) - duration("24h")`,
	}
	var compiled []*Expr
	for _, s := range exprs {
		e, err := CompileExpr(s)
		if err != nil {
			f.Fatal(err)
		}
		compiled = append(compiled, e)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer slowGuard(t, time.Now())
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		in, ok := v.(map[string]any)
		if !ok {
			in = map[string]any{"payload": v}
		}
		checkApply(t, p, in)
		for _, e := range compiled {
			for _, err := range []error{
				func() error { _, err := e.Bool(in); return err }(),
				func() error { _, err := e.String(in); return err }(),
				func() error { _, err := e.Time(in); return err }(),
			} {
				if err != nil && badReason(err.Error()) {
					t.Fatalf("%s: %v", e.Source(), err)
				}
			}
		}
	})
}
