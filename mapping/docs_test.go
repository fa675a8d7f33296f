package mapping

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDocExamples keeps docs/mapping.md honest: its first example compiles
// and maps a booking as its test claims, and every function example in the
// table gives the documented result.
func TestDocExamples(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/mapping.md")
	if os.IsNotExist(err) {
		t.Skip("docs/mapping.md not present")
	}
	require.NoError(t, err)
	blocks := yamlBlocks(string(doc))
	require.GreaterOrEqual(t, len(blocks), 2)

	p, err := Compile([]byte(blocks[0]), "mapping.md")
	require.NoError(t, err)
	tests := p.Tests()
	require.Len(t, tests, 1)
	in := jsonInput(t, `{"event": {"type": "BOOKING_CREATED"}, "payload": {"status": "ACCEPTED",
		"startTime": "2025-03-04T09:30:00Z", "items": [{"sku": "A1"}],
		"attendees": [{"name": "Ann Smith", "phoneNumber": "+447911123456"}]}}`)
	res := tests[0].Run(p, in)
	require.True(t, res.Pass, res.Diff)

	// The tests: example, under a mapping that produces what it expects.
	p, err = Compile([]byte(`fields:
  to: {from: 'payload.attendees[0].phoneNumber', required: true}
  status: {from: payload.status, lookup: {ACCEPTED: booked}}
`+blocks[1]), "mapping.md")
	require.NoError(t, err)
	res = p.Tests()[0].Run(p, nil)
	require.True(t, res.Pass, res.Diff)
	require.Equal(t, "testdata/no-phone.json", p.Tests()[1].InputFile)

	// Block style allows brackets unquoted, as the docs say.
	_, err = Compile([]byte("fields:\n  sku:\n    from: payload.items[0].sku\n"), "m.yaml")
	require.NoError(t, err)
}

func yamlBlocks(md string) []string {
	var out []string
	for _, part := range strings.Split(md, "```yaml\n")[1:] {
		out = append(out, part[:strings.Index(part, "```")])
	}
	return out
}

func TestDocFunctionTable(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	for src, want := range map[string]any{
		`e164("07911 123456", "GB")`:      "+447911123456",
		`e164("+1 (415) 555-2671", "GB")`: "+14155552671",
		`e164("", "GB")`:                  nil,
		`format_time("2025-03-04T09:30:00Z", "Europe/London", "Mon 2 Jan 15:04")`:    "Tue 4 Mar 09:30",
		`format_time(1741080600, "UTC", "2006-01-02")`:                               "2025-03-04",
		`parse_time("04/03/2025 09:30", "02/01/2006 15:04")`:                         time.Date(2025, 3, 4, 9, 30, 0, 0, time.UTC),
		`parse_time("04/03/2025 09:30", "02/01/2006 15:04", "America/New_York")`:     time.Date(2025, 3, 4, 9, 30, 0, 0, ny),
		`first_name("Ann Marie Smith")`:                                              "Ann",
		`first_name("Smith, Ann")`:                                                   "Ann",
		`last_name("Ann Marie Smith")`:                                               "Smith",
		`last_name("Madonna")`:                                                       "",
		`minor_to_major(1999, "GBP")`:                                                19.99,
		`minor_to_major(500, "JPY")`:                                                 500.0,
		`minor_to_major(1234, "KWD")`:                                                1.234,
		`major_to_minor(19.99, "gbp")`:                                               1999,
		`sha256("patient-42")`:                                                       "7e9b4c8f2c43c14bf88590860bc8b44e64d7734b0c22254c4938c51f8710d17a",
		`coalesce(payload.mobile, payload.phone, "none")`:                            "none",
		`map(payload.items, .sku)`:                                                   []any{"a"},
		`payload.patient?.name ?? "unknown"`:                                         "unknown",
		`"x" in payload.tags && payload.s matches "^A" && payload.s startsWith "AB"`: true,
	} {
		e, err := CompileExpr(src)
		require.NoError(t, err, src)
		got, err := e.Eval(map[string]any{"payload": map[string]any{
			"items": []any{map[string]any{"sku": "a"}}, "tags": []any{"x"}, "s": "ABC"}})
		require.NoError(t, err, src)
		if w, ok := want.(time.Time); ok {
			require.True(t, w.Equal(got.(time.Time)), "%s: %v", src, got)
			require.Equal(t, w.Format(time.RFC3339), got.(time.Time).Format(time.RFC3339))
			continue
		}
		require.Equal(t, want, got, src)
	}
	for src, want := range map[string]string{
		`e164(payload.p, 44)`: "cannot use int as argument (type string) to call e164",
		`e164(payload.p)`:     "not enough arguments to call e164",
	} {
		_, err := CompileExpr(src)
		require.Error(t, err, src)
		require.Equal(t, want, strings.TrimSpace(err.Error()), src)
	}
	e, err := CompileExpr(`e164("12345", "GB")`)
	require.NoError(t, err)
	_, err = e.Eval(nil)
	require.EqualError(t, err, "e164: invalid phone number")
}
