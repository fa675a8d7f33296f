package mapping

import (
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"
)

// Expr is a compiled route expression (when, key, at). It sees the same names
// (event, payload, needs) and functions as a mapping. Safe for concurrent use.
type Expr struct {
	c   *compiled
	vms sync.Pool // *vm.VM
}

// CompileExpr compiles a route expression. The error (an *Error without a
// position) names the problem; the caller adds file:line:col, or uses
// CompileExprNode to have it added. vars, when given, replace the route
// names (event, payload, needs) with these, each dynamic: connectors use it
// for expressions over their own inputs (a webhook's headers and payload).
func CompileExpr(src string, vars ...string) (*Expr, error) {
	sc := scopeTop
	if len(vars) > 0 {
		sc = scope{vars: vars}
	}
	c, xe := compileExpression(src, sc)
	if xe != nil {
		return nil, &Error{Msg: xe.msg}
	}
	return newExpr(c), nil
}

// CompileExprNode compiles the expression held by a YAML scalar and positions
// any error at file:line:col, pointing inside the string where possible
// (as mapping fields do). path names the key in errors, e.g. "routes[0].when".
func CompileExprNode(n *yaml.Node, file, path string) (*Expr, error) {
	cp := &compiler{file: file}
	if n == nil {
		return nil, &Error{File: file, Path: path, Msg: "want an expression"}
	}
	c := cp.expr(n, path, scopeTop)
	if err := cp.errs.err(); err != nil {
		return nil, err
	}
	return newExpr(c), nil
}

func newExpr(c *compiled) *Expr {
	e := &Expr{c: c}
	e.vms.New = func() any { return new(vm.VM) }
	return e
}

// Source returns the expression as written.
func (e *Expr) Source() string { return e.c.src }

// Eval evaluates the expression against a mapping input document. Errors are
// *ApplyError (no path): permanent, like a mapping's.
func (e *Expr) Eval(input map[string]any) (any, error) {
	if e.c.path != nil {
		return e.c.path.walk(input[e.c.path.root]), nil
	}
	m := e.vms.Get().(*vm.VM)
	defer func() {
		scrubVM(m)
		e.vms.Put(m)
	}()
	// The input map itself is the env: its event/payload/needs keys are
	// exactly the names the expression was compiled against.
	out, err := e.c.eval(input, m)
	if err != nil {
		return nil, &ApplyError{Reason: err.Error()}
	}
	return out, nil
}

// Bool evaluates a condition: nil is false, anything but a boolean is an error.
func (e *Expr) Bool(input map[string]any) (bool, error) {
	v, err := e.Eval(input)
	if err != nil {
		return false, err
	}
	switch b := v.(type) {
	case nil:
		return false, nil
	case bool:
		return b, nil
	}
	return false, &ApplyError{Reason: "want a boolean, got " + typeName(v)}
}

// String evaluates to text: nil is "", numbers are plain (42, not 42.0 or
// 4.2e+01), times are RFC 3339. Objects and arrays are an error.
func (e *Expr) String(input map[string]any) (string, error) {
	v, err := e.Eval(input)
	if err != nil {
		return "", err
	}
	switch v.(type) {
	case map[string]any, []any:
		return "", &ApplyError{Reason: "want a string, got " + typeName(v)}
	}
	var b strings.Builder
	writeValue(&b, v)
	return b.String(), nil
}

// Time evaluates to a time: a time.Time, an RFC 3339 string or unix seconds.
// nil is the zero time, for the caller to treat as "not set".
func (e *Expr) Time(input map[string]any) (time.Time, error) {
	v, err := e.Eval(input)
	if err != nil {
		return time.Time{}, err
	}
	if v == nil {
		return time.Time{}, nil
	}
	t, err := toTime("time", v)
	if err != nil {
		return time.Time{}, &ApplyError{Reason: err.Error()}
	}
	return t, nil
}
