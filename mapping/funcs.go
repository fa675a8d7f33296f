package mapping

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/builtin"
)

// customFuncs are the functions clinicbridge adds to expr's builtins, in the
// order the docs list them. "_path" is internal (see pathPatcher) and not listed.
var customFuncs = []string{
	"e164", "format_time", "parse_time", "first_name", "last_name",
	"minor_to_major", "major_to_minor", "sha256", "coalesce",
}

// funcCtx is the per-expression context the functions close over: time zones
// resolved at compile time and the paths pathPatcher pulled out of the AST.
// It is filled while compiling and read-only afterwards.
type funcCtx struct {
	locs  map[string]*time.Location
	paths []path
}

// options registers the functions. Typed signatures let expr's checker reject
// wrong arity and constant arguments of the wrong type at compile time;
// arguments typed `any` are checked at run time by the functions themselves.
func (fc *funcCtx) options() []expr.Option {
	opts := fc.functions()
	for i := range opts {
		opts[i] = opts[i].wrapped()
	}
	out := make([]expr.Option, len(opts))
	for i, o := range opts {
		out[i] = expr.Function(o.name, o.fn, o.types...)
	}
	return out
}

type function struct {
	name  string
	fn    func(p ...any) (any, error)
	types []any
}

// wrapped marks the function's errors as ours (see reason).
func (f function) wrapped() function {
	inner := f.fn
	f.fn = func(p ...any) (any, error) {
		out, err := inner(p...)
		if err != nil {
			return nil, fnError{err}
		}
		return out, nil
	}
	return f
}

func (fc *funcCtx) functions() []function {
	sig := func(types ...any) []any { return types }
	return []function{
		{"e164", func(p ...any) (any, error) { return fnE164(p[0], p[1]) },
			sig(new(func(any, string) any))},
		{"format_time", func(p ...any) (any, error) { return fc.formatTime(p[0], p[1], p[2]) },
			sig(new(func(any, string, string) any))},
		{"parse_time", func(p ...any) (any, error) {
			var tz any
			if len(p) > 2 {
				tz = p[2]
			}
			return fc.parseTime(p[0], p[1], tz)
		}, sig(new(func(any, string) any), new(func(any, string, string) any))},
		{"first_name", func(p ...any) (any, error) { return fnName("first_name", p[0], firstName) },
			sig(new(func(any) any))},
		{"last_name", func(p ...any) (any, error) { return fnName("last_name", p[0], lastName) },
			sig(new(func(any) any))},
		{"minor_to_major", func(p ...any) (any, error) { return fnMinorToMajor(p[0], p[1]) },
			sig(new(func(any, string) any))},
		{"major_to_minor", func(p ...any) (any, error) { return fnMajorToMinor(p[0], p[1]) },
			sig(new(func(any, string) any))},
		{"sha256", func(p ...any) (any, error) { return fnSHA256(p[0]) },
			sig(new(func(any) any))},
		{"coalesce", func(p ...any) (any, error) { return fnCoalesce(p...), nil },
			sig(new(func(...any) any))},
		{"_path", func(p ...any) (any, error) {
			idx, ok := p[1].(int)
			if !ok || idx < 0 || idx >= len(fc.paths) {
				return nil, errors.New("internal: bad path index")
			}
			return fc.paths[idx].walk(p[0]), nil
		}, sig(new(func(any, int) any))},
	}
}

// knownFuncs lists every callable name, for "did you mean" suggestions.
var knownFuncs = func() []string {
	names := append([]string(nil), customFuncs...)
	for _, f := range builtin.Builtins {
		names = append(names, f.Name)
	}
	return names
}()

// fnE164: nil or "" in, nil out, so that an absent phone is handled by
// required/omit_empty rather than failing the event.
func fnE164(phone, region any) (any, error) {
	var s string
	switch p := phone.(type) {
	case nil:
		return nil, nil
	case string:
		s = p
	default:
		return nil, fmt.Errorf("e164: phone must be a string, got %s", typeName(phone))
	}
	// Trimmed here, not left to the library, which rejects "+44...\n".
	if s = strings.TrimSpace(s); s == "" {
		return nil, nil
	}
	r, ok := region.(string)
	if !ok && region != nil {
		return nil, fmt.Errorf("e164: region must be a string, got %s", typeName(region))
	}
	out, err := toE164(s, r)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// location resolves a time zone, from the compile-time cache when the zone was
// a constant. "" means UTC.
func (fc *funcCtx) location(fn string, tz any) (*time.Location, error) {
	var name string
	switch t := tz.(type) {
	case nil:
		return time.UTC, nil
	case string:
		name = t
	default:
		return nil, fmt.Errorf("%s: time zone must be a string, got %s", fn, typeName(tz))
	}
	if loc, ok := fc.locs[name]; ok {
		return loc, nil
	}
	return loadLocation(fn, name)
}

// loadLocation refuses "Local": a mapping must not depend on the host's zone.
func loadLocation(fn, name string) (*time.Location, error) {
	if name == "Local" {
		return nil, fmt.Errorf(`%s: time zone "Local" depends on the host; name a zone such as "Europe/London"`, fn)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%s: unknown time zone %q", fn, truncate(name, 64))
	}
	return loc, nil
}

// toTime accepts what providers send: RFC 3339 strings, unix seconds, or a
// time.Time produced by another function.
func toTime(fn string, v any) (time.Time, error) {
	switch t := v.(type) {
	case time.Time:
		return t, nil
	case string:
		tm, err := time.Parse(time.RFC3339, strings.TrimSpace(t))
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: cannot parse time (want RFC 3339 such as 2025-01-31T09:30:00Z)", fn)
		}
		return tm, nil
	}
	if f, ok := toFloat(v); ok {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e13 {
			return time.Time{}, fmt.Errorf("%s: unix time out of range", fn)
		}
		sec := math.Floor(f)
		return time.Unix(int64(sec), int64(math.Round((f-sec)*1e9))).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%s: want a time, RFC 3339 string or unix seconds, got %s", fn, typeName(v))
}

func (fc *funcCtx) formatTime(v, tz, layout any) (any, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := layout.(string)
	if !ok {
		return nil, fmt.Errorf("format_time: layout must be a string, got %s", typeName(layout))
	}
	t, err := toTime("format_time", v)
	if err != nil {
		return nil, err
	}
	loc, err := fc.location("format_time", tz)
	if err != nil {
		return nil, err
	}
	return t.In(loc).Format(l), nil
}

func (fc *funcCtx) parseTime(v, layout, tz any) (any, error) {
	if v == nil {
		return nil, nil
	}
	if t, ok := v.(time.Time); ok {
		return t, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("parse_time: want a string, got %s", typeName(v))
	}
	l, ok := layout.(string)
	if !ok {
		return nil, fmt.Errorf("parse_time: layout must be a string, got %s", typeName(layout))
	}
	loc, err := fc.location("parse_time", tz)
	if err != nil {
		return nil, err
	}
	t, err := time.ParseInLocation(l, strings.TrimSpace(s), loc)
	if err != nil {
		return nil, errors.New("parse_time: value does not match the layout")
	}
	return t, nil
}

func fnName(fn string, v any, f func(string) string) (any, error) {
	switch s := v.(type) {
	case nil:
		return nil, nil
	case string:
		return f(s), nil
	}
	return nil, fmt.Errorf("%s: want a string, got %s", fn, typeName(v))
}

// firstName: "Ann Marie Smith" -> "Ann"; "Smith, Ann" -> "Ann". No
// allocation: the result is a substring.
func firstName(full string) string {
	full = strings.TrimSpace(full)
	if last, first, ok := strings.Cut(full, ","); ok && strings.TrimSpace(last) != "" {
		full = strings.TrimSpace(first)
	}
	if i := strings.IndexAny(full, " \t\n"); i >= 0 {
		return full[:i]
	}
	return full
}

// lastName: "Ann Marie Smith" -> "Smith"; "Smith, Ann" -> "Smith"; a single
// word has no last name ("Madonna" -> "").
func lastName(full string) string {
	full = strings.TrimSpace(full)
	if last, _, ok := strings.Cut(full, ","); ok && strings.TrimSpace(last) != "" {
		return strings.TrimSpace(last)
	}
	if i := strings.LastIndexAny(full, " \t\n"); i >= 0 {
		return full[i+1:]
	}
	return ""
}

func amountArgs(fn string, amount, currency any) (float64, int, error) {
	f, ok := toFloat(amount)
	if !ok {
		return 0, 0, fmt.Errorf("%s: amount must be a number, got %s", fn, typeName(amount))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, 0, fmt.Errorf("%s: amount is not a finite number", fn)
	}
	c, ok := currency.(string)
	if !ok {
		return 0, 0, fmt.Errorf("%s: currency must be a string, got %s", fn, typeName(currency))
	}
	exp, ok := currencyExponent(c)
	if !ok {
		return 0, 0, fmt.Errorf("%s: unknown currency %q", fn, truncate(c, 16))
	}
	return f, exp, nil
}

// fnMinorToMajor: 1999 GBP -> 19.99, 500 JPY -> 500, 1234 KWD -> 1.234.
func fnMinorToMajor(amount, currency any) (any, error) {
	if amount == nil {
		return nil, nil
	}
	f, exp, err := amountArgs("minor_to_major", amount, currency)
	if err != nil {
		return nil, err
	}
	// Division, not multiplication by 0.01: 1999/100 is the float nearest 19.99.
	return f / pow10[exp], nil
}

// fnMajorToMinor: 19.99 GBP -> 1999 (an integer, rounded half away from zero).
func fnMajorToMinor(amount, currency any) (any, error) {
	if amount == nil {
		return nil, nil
	}
	f, exp, err := amountArgs("major_to_minor", amount, currency)
	if err != nil {
		return nil, err
	}
	m := math.Round(f * pow10[exp])
	if math.Abs(m) > 1<<53 {
		return nil, errors.New("major_to_minor: amount too large")
	}
	return int(m), nil
}

// fnSHA256 hashes a string (numbers in their plain text form) to lowercase hex,
// for pseudonymous identifiers.
func fnSHA256(v any) (any, error) {
	var s string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		s = x
	default:
		if _, ok := toFloat(v); !ok {
			return nil, fmt.Errorf("sha256: want a string, got %s", typeName(v))
		}
		s = stringify(v)
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:]), nil
}

// fnCoalesce returns the first argument that is neither nil nor "".
func fnCoalesce(args ...any) any {
	for _, a := range args {
		if !isEmpty(a) {
			return a
		}
	}
	return nil
}
