package mapping

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestCompileExprErrors(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]string{
		`frist_name(payload.name) == "A"`: `unknown function "frist_name" (did you mean "first_name"?)`,
		`paylod.x != nil`:                 `unknown name "paylod" (did you mean "payload"?)`,
		`item.sku`:                        `unknown name "item" (item exists only inside each)`,
		`event.tpye == "X"`:               `unknown field "tpye" in event (did you mean "type"?)`,
		`payload.a +`:                     `unexpected token EOF`,
		``:                                `empty expression`,
		`_path(payload, 0)`:               `unknown function "_path"`,
	} {
		_, err := CompileExpr(src)
		require.EqualError(t, err, want, src)
		var ce *Error
		require.True(t, errors.As(err, &ce))
	}
}

func TestCompileExprNode(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("routes:\n  - when: 'payload.x != nil && frist_name(payload.n) == \"A\"'\n"), &doc))
	when := doc.Content[0].Content[1].Content[0].Content[1]
	_, err := CompileExprNode(when, "c.yaml", "routes[0].when")
	require.EqualError(t, err, `c.yaml:2:32: routes[0].when: unknown function "frist_name" (did you mean "first_name"?)`)

	require.NoError(t, yaml.Unmarshal([]byte("when: payload.x == 1\n"), &doc))
	e, err := CompileExprNode(doc.Content[0].Content[1], "c.yaml", "when")
	require.NoError(t, err)
	ok, err := e.Bool(map[string]any{"payload": map[string]any{"x": 1.0}})
	require.NoError(t, err)
	require.True(t, ok)
}

func TestExprEval(t *testing.T) {
	t.Parallel()
	in := jsonInput(t, `{"event": {"type": "BOOKING_CREATED", "key": "bk1"},
		"payload": {"uid": "bk1", "n": 42, "f": 2.5, "startTime": "2025-03-04T09:30:00Z", "unix": 1741080600,
		"attendees": [], "obj": {"a": 1}}}`)
	start := time.Date(2025, 3, 4, 9, 30, 0, 0, time.UTC)

	e, err := CompileExpr(`payload.attendees[0].phoneNumber != nil`)
	require.NoError(t, err)
	require.Equal(t, `payload.attendees[0].phoneNumber != nil`, e.Source())
	b, err := e.Bool(in)
	require.NoError(t, err)
	require.False(t, b, "nil-safe: no attendee means no phone, not an error")

	for src, want := range map[string]bool{
		`event.type == "BOOKING_CREATED"`: true,
		`payload.missing`:                 false, // nil is false
		`payload.n > 40 && payload.f < 3`: true,
	} {
		e, err := CompileExpr(src)
		require.NoError(t, err)
		got, err := e.Bool(in)
		require.NoError(t, err, src)
		require.Equal(t, want, got, src)
	}
	e, _ = CompileExpr(`payload.uid`)
	_, err = e.Bool(in)
	require.EqualError(t, err, "want a boolean, got string")
	var ae *ApplyError
	require.True(t, errors.As(err, &ae))

	for src, want := range map[string]string{
		`payload.uid`:             "bk1",
		`payload.n`:               "42",
		`payload.f`:               "2.5",
		`payload.n * 1.5`:         "63",
		`payload.missing`:         "",
		`event.key + "-" + "r"`:   "bk1-r",
		`true`:                    "true",
		`date(payload.startTime)`: "2025-03-04T09:30:00Z",
	} {
		e, err := CompileExpr(src)
		require.NoError(t, err)
		got, err := e.String(in)
		require.NoError(t, err, src)
		require.Equal(t, want, got, src)
	}
	e, _ = CompileExpr(`payload.obj`)
	_, err = e.String(in)
	require.EqualError(t, err, "want a string, got object")

	for src, want := range map[string]time.Time{
		`date(payload.startTime) - duration("24h")`: start.Add(-24 * time.Hour),
		`payload.startTime`:                         start,
		`payload.unix`:                              start,
		`payload.missing`:                           {},
	} {
		e, err := CompileExpr(src)
		require.NoError(t, err)
		got, err := e.Time(in)
		require.NoError(t, err, src)
		require.True(t, want.Equal(got), "%s: got %v", src, got)
	}
	e, _ = CompileExpr(`payload.uid`)
	_, err = e.Time(in)
	require.EqualError(t, err, "time: cannot parse time (want RFC 3339 such as 2025-01-31T09:30:00Z)")

	e, _ = CompileExpr(`e164(payload.uid, "GB")`)
	_, err = e.Eval(in)
	require.EqualError(t, err, "e164: invalid phone number")
	require.True(t, errors.As(err, &ae))
}
