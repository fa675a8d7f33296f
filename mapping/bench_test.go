package mapping

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchMapping is the acceptance mapping: 10 fields with paths, a template,
// e164, format_time, a lookup and a nested object.
const benchMapping = `
fields:
  to:         {expr: 'e164(payload.attendees[0].phoneNumber, "GB")', required: true}
  name:       {from: 'payload.attendees[0].name'}
  email:      {from: 'payload.attendees[0].email', omit_empty: true}
  booking:    {from: payload.uid, required: true}
  event_type: {from: event.type}
  when:       {expr: 'format_time(payload.startTime, "Europe/London", "Mon 2 Jan 15:04")'}
  body:       {template: "Hi {{ first_name(payload.attendees[0].name) }}, your appointment with {{ payload.organizer.name }} is confirmed."}
  status:     {from: payload.status, lookup: {ACCEPTED: booked, CANCELLED: cancelled}, default: unknown}
  kind:       {value: reminder}
  clinic:
    fields:
      name: {from: payload.organizer.name}
      tz:   {from: payload.organizer.timeZone}
`

const benchPayload = `{
  "event": {"id": "evt_1", "type": "BOOKING_CREATED", "source": "booking", "key": "bk_123"},
  "payload": {
    "uid": "bk_123",
    "status": "ACCEPTED",
    "startTime": "2025-03-04T09:30:00Z",
    "endTime": "2025-03-04T10:00:00Z",
    "title": "Physio follow-up",
    "organizer": {"name": "Dr Jane Doe", "email": "jane@clinic.example", "timeZone": "Europe/London"},
    "attendees": [{"name": "Ann Marie Smith", "email": "ann@example.com", "phoneNumber": "+447911123456", "timeZone": "Europe/London"}],
    "metadata": {"videoCallUrl": null}
  }
}`

func benchInput(tb testing.TB) map[string]any {
	var in map[string]any
	require.NoError(tb, json.Unmarshal([]byte(benchPayload), &in))
	return in
}

// handWritten does the work of benchMapping in plain Go, with the same helper
// functions the mapping calls, so the ratio measures the mapping engine.
func handWritten(in map[string]any, london *time.Location) (map[string]any, error) {
	ev, _ := in["event"].(map[string]any)
	p, _ := in["payload"].(map[string]any)
	var att map[string]any
	if list, ok := p["attendees"].([]any); ok && len(list) > 0 {
		att, _ = list[0].(map[string]any)
	}
	org, _ := p["organizer"].(map[string]any)
	out := make(map[string]any, 10)

	phone, _ := att["phoneNumber"].(string)
	to, err := toE164(phone, "GB")
	if err != nil {
		return nil, &ApplyError{Path: "to", Reason: err.Error()}
	}
	out["to"] = to
	out["name"] = att["name"]
	if e, _ := att["email"].(string); e != "" {
		out["email"] = e
	}
	if p["uid"] == nil || p["uid"] == "" {
		return nil, &ApplyError{Path: "booking", Reason: "required"}
	}
	out["booking"] = p["uid"]
	out["event_type"] = ev["type"]
	if s, ok := p["startTime"].(string); ok {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, &ApplyError{Path: "when", Reason: "format_time: cannot parse time"}
		}
		out["when"] = t.In(london).Format("Mon 2 Jan 15:04")
	}
	name, _ := att["name"].(string)
	orgName, _ := org["name"].(string)
	var b strings.Builder
	b.Grow(64)
	b.WriteString("Hi ")
	b.WriteString(firstName(name))
	b.WriteString(", your appointment with ")
	b.WriteString(orgName)
	b.WriteString(" is confirmed.")
	out["body"] = b.String()
	switch p["status"] {
	case "ACCEPTED":
		out["status"] = "booked"
	case "CANCELLED":
		out["status"] = "cancelled"
	default:
		out["status"] = "unknown"
	}
	out["kind"] = "reminder"
	out["clinic"] = map[string]any{"name": org["name"], "tz": org["timeZone"]}
	return out, nil
}

func TestHandWrittenMatchesMapping(t *testing.T) {
	t.Parallel()
	p, err := Compile([]byte(benchMapping), "bench.yaml")
	require.NoError(t, err)
	london, err := time.LoadLocation("Europe/London")
	require.NoError(t, err)
	in := benchInput(t)
	got, err := p.Apply(in)
	require.NoError(t, err)
	want, err := handWritten(in, london)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Len(t, p.Fields(), 10)
}

func BenchmarkMapping(b *testing.B) {
	p, err := Compile([]byte(benchMapping), "bench.yaml")
	require.NoError(b, err)
	in := benchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Apply(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandWritten(b *testing.B) {
	london, err := time.LoadLocation("Europe/London")
	require.NoError(b, err)
	in := benchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := handWritten(in, london); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMappingParallel checks that the pools scale across goroutines.
func BenchmarkMappingParallel(b *testing.B) {
	p, err := Compile([]byte(benchMapping), "bench.yaml")
	require.NoError(b, err)
	in := benchInput(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Apply(in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The e164 benchmarks show why toE164 has a fast path: the library alone
// costs several times the whole mapping budget.
func BenchmarkE164FastPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := toE164("+447911123456", "GB"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkE164NationalFormat(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := toE164("07911 123456", "GB"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkE164Library(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e164Library("+447911123456", "GB"); err != nil {
			b.Fatal(err)
		}
	}
}
