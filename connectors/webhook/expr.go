package webhook

import (
	"fmt"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// evaluator is what the event expressions (id, type, key, occurred_at) need.
// *mapping.Expr from mapping.CompileExpr(src, "headers", "payload") is meant
// to satisfy it; until that exists, compileExpr below is a stand-in on
// expr-lang with the same syntax, so only this file changes when it lands.
type evaluator interface {
	String(input map[string]any) (string, error)
	Time(input map[string]any) (time.Time, error)
}

// compileExpr compiles an event expression over the variables `headers`
// (lower-cased header name -> first value) and `payload` (the decoded body).
// TODO(mapping): return mapping.CompileExpr(src, "headers", "payload").
func compileExpr(src string) (evaluator, error) {
	p, err := expr.Compile(src, expr.Env(map[string]any{
		"headers": map[string]any{},
		"payload": map[string]any{},
	}))
	if err != nil {
		return nil, err
	}
	return stubExpr{p}, nil
}

type stubExpr struct{ p *vm.Program }

func (e stubExpr) String(input map[string]any) (string, error) {
	v, err := expr.Run(e.p, input)
	if err != nil {
		return "", err
	}
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case bool:
		return strconv.FormatBool(v), nil
	default:
		return "", fmt.Errorf("expected a string, got %T", v)
	}
}

func (e stubExpr) Time(input map[string]any) (time.Time, error) {
	v, err := expr.Run(e.p, input)
	if err != nil {
		return time.Time{}, err
	}
	switch v := v.(type) {
	case nil:
		return time.Time{}, nil // not set: the caller falls back
	case time.Time:
		return v, nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("expected an RFC 3339 time")
		}
		return t, nil
	case float64:
		return time.Unix(0, int64(v*float64(time.Second))), nil
	case int:
		return time.Unix(int64(v), 0), nil
	case int64:
		return time.Unix(v, 0), nil
	default:
		return time.Time{}, fmt.Errorf("expected a time, got %T", v)
	}
}
