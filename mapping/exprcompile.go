package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	exprcompiler "github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
)

// eventFields are the keys of the input's event object. event is typed as a
// closed object so `event.tpye` is a compile error; payload is dynamic.
var eventFields = []string{"id", "type", "source", "key", "received_at", "occurred_at"}

// scope says which top-level names an expression may use: item exists only
// inside each; connectors compile expressions over names of their own
// (a webhook's headers and payload, an HTTP sink's doc).
type scope struct {
	each bool
	vars []string // when set, exactly these names, each dynamic
}

var (
	scopeTop  = scope{}
	scopeEach = scope{each: true}
)

func (s scope) roots() []string {
	if s.vars != nil {
		return s.vars
	}
	if s.each {
		return []string{"event", "payload", "needs", "item"}
	}
	return []string{"event", "payload", "needs"}
}

func (s scope) env() types.Map {
	if s.vars != nil {
		m := types.Map{}
		for _, v := range s.vars {
			m[v] = types.Any
		}
		return m
	}
	ev := types.Map{}
	for _, f := range eventFields {
		ev[f] = types.Any
	}
	m := types.Map{"event": ev, "payload": types.Any, "needs": types.Any}
	if s.each {
		m["item"] = types.Any
	}
	return m
}

// compiled is one compiled expression. A pure path (payload.a[0].b) is walked
// directly; anything else runs on the expr VM.
type compiled struct {
	src  string
	path *path
	prog *vm.Program
}

// eval runs the expression against env (the map holding event, payload, needs
// and item) on m. Errors are reasons, without expr's source snippet.
func (c *compiled) eval(env map[string]any, m *vm.VM) (any, error) {
	if c.path != nil {
		return c.path.walk(env[c.path.root]), nil
	}
	out, err := m.Run(c.prog, env)
	if err != nil {
		return nil, errors.New(reason(err))
	}
	return out, nil
}

// reason strips expr's "(line:col)\n | source\n | ^" decoration (apply errors
// are reported against output paths). Our functions' messages never contain
// values and pass as they are; expr's own runtime messages sometimes quote the
// offending value (`invalid date 07911...`, `parsing time "..."`), so they are
// scrubbed: an apply error ends up as a delivery's failure reason and in logs.
func reason(err error) string {
	var ferr fnError
	if errors.As(err, &ferr) {
		return ferr.err.Error()
	}
	var fe *file.Error
	if errors.As(err, &fe) {
		return scrub(fe.Message)
	}
	return scrub(err.Error())
}

// fnError marks errors returned by our functions (see funcCtx.options).
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }
func (e fnError) Unwrap() error { return e.err }

var (
	quotedRE    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	convRE      = regexp.MustCompile(`\b(int|float|string)\(.*\)`)
	trailingVal = regexp.MustCompile(`^(invalid date|invalid pair length|invalid pair|cannot transform) .*$`)
)

func scrub(msg string) string {
	msg = quotedRE.ReplaceAllString(msg, `"…"`)
	msg = convRE.ReplaceAllString(msg, "$1(…)")
	return trailingVal.ReplaceAllString(msg, "$1 …")
}

// exprError is a compile error inside an expression: offset is the rune offset
// of the problem in the expression source, -1 when unknown.
type exprError struct {
	offset int
	msg    string
}

func newConfig(sc scope, fc *funcCtx) *conf.Config {
	cfg := conf.CreateNew()
	expr.Env(sc.env())(cfg)
	for _, o := range fc.options() {
		o(cfg)
	}
	return cfg
}

// compileExpression parses, type-checks and compiles src. The steps are expr's
// own (parser, checker, optimizer, compiler) run by hand so that errors can be
// reworded with the AST at hand and pure paths can be taken out of the VM.
func compileExpression(src string, sc scope) (c *compiled, xe *exprError) {
	defer func() {
		// expr is well fuzzed, but a panic here would take config loading down.
		if r := recover(); r != nil {
			c, xe = nil, &exprError{offset: -1, msg: fmt.Sprintf("cannot compile expression: %v", r)}
		}
	}()
	if strings.TrimSpace(src) == "" {
		return nil, &exprError{offset: -1, msg: "empty expression"}
	}
	fc := &funcCtx{}
	cfg := newConfig(sc, fc)
	tree, err := parser.ParseWithConfig(src, cfg)
	if err != nil {
		return nil, translate(err, nil, sc)
	}
	if _, err := checker.Check(tree, cfg); err != nil {
		return nil, translate(err, tree, sc)
	}
	if xe := checkConstArgs(tree, fc); xe != nil {
		return nil, xe
	}
	if p, _, ok := pathOf(tree.Node); ok {
		return &compiled{src: src, path: &p}, nil
	}
	ast.Walk(&tree.Node, &pathPatcher{fc: fc, calls: map[*ast.CallNode]int{}})
	if _, err := checker.Check(tree, cfg); err != nil {
		return nil, translate(err, tree, sc)
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			return nil, translate(err, tree, sc)
		}
	}
	prog, err := exprcompiler.Compile(tree, cfg)
	if err != nil {
		return nil, translate(err, tree, sc)
	}
	return &compiled{src: src, prog: prog}, nil
}

// translate turns expr's errors into ours, rewording the ones integrators hit
// most: a misspelt function, variable or event field.
func translate(err error, tree *parser.Tree, sc scope) *exprError {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return &exprError{offset: -1, msg: err.Error()}
	}
	msg := strings.TrimSpace(fe.Message)
	if name, ok := strings.CutPrefix(msg, "unknown name "); ok && tree != nil {
		if isCallee(tree.Node, name) {
			msg = fmt.Sprintf("unknown function %q", name) + suggest(name, knownFuncs)
		} else {
			msg = fmt.Sprintf("unknown name %q", name)
			if s := suggest(name, sc.roots()); s != "" {
				msg += s
			} else if name == "item" {
				msg += " (item exists only inside each)"
			} else {
				msg += " (top-level names are " + strings.Join(sc.roots(), ", ") + ")"
			}
		}
	} else if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		msg = fmt.Sprintf("unknown field %q in event", name) + suggest(name, eventFields)
	}
	return &exprError{offset: fe.From, msg: msg}
}

// isCallee reports whether name is called as a function somewhere in n.
func isCallee(n ast.Node, name string) bool {
	found := false
	ast.Walk(&n, visitFunc(func(node *ast.Node) {
		if call, ok := (*node).(*ast.CallNode); ok {
			if id, ok := call.Callee.(*ast.IdentifierNode); ok && id.Value == name {
				found = true
			}
		}
	}))
	return found
}

type visitFunc func(*ast.Node)

func (f visitFunc) Visit(n *ast.Node) { f(n) }

// checkConstArgs validates constant arguments that would otherwise only fail
// per event: time zones (also resolved once here, so format_time does not load
// the zone database per call), phone regions and currencies.
func checkConstArgs(tree *parser.Tree, fc *funcCtx) *exprError {
	var xe *exprError
	constArg := func(call *ast.CallNode, i int) (string, int, bool) {
		if i >= len(call.Arguments) {
			return "", 0, false
		}
		s, ok := call.Arguments[i].(*ast.StringNode)
		if !ok {
			return "", 0, false
		}
		return s.Value, s.Location().From, true
	}
	ast.Walk(&tree.Node, visitFunc(func(node *ast.Node) {
		call, ok := (*node).(*ast.CallNode)
		if !ok || xe != nil {
			return
		}
		id, ok := call.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		tzArg := -1
		switch id.Value {
		case "_path": // internal; see pathPatcher
			xe = &exprError{offset: id.Location().From, msg: `unknown function "_path"`}
		case "format_time":
			tzArg = 1
		case "parse_time":
			tzArg = 2
		case "e164":
			if r, off, ok := constArg(call, 1); ok && r != "" && !validRegion(r) {
				xe = &exprError{offset: off, msg: fmt.Sprintf("e164: unknown region %q (want an ISO 3166 code such as \"GB\")", truncate(r, 16))}
			}
		case "minor_to_major", "major_to_minor":
			if c, off, ok := constArg(call, 1); ok {
				if _, known := currencyExponent(c); !known {
					xe = &exprError{offset: off, msg: fmt.Sprintf("%s: unknown currency %q", id.Value, truncate(c, 16))}
				}
			}
		}
		if tzArg < 0 {
			return
		}
		if tz, off, ok := constArg(call, tzArg); ok {
			loc, err := loadLocation(id.Value, tz)
			if err != nil {
				xe = &exprError{offset: off, msg: err.Error()}
				return
			}
			if fc.locs == nil {
				fc.locs = map[string]*time.Location{}
			}
			fc.locs[tz] = loc
		}
	}))
	return xe
}

// pathPatcher replaces every maximal path inside a larger expression by a call
// _path(root, i) that walks fc.paths[i] nil-safely, so `upper(payload.a.b)`
// and `payload.list[3] != nil` behave like a `from:` path instead of failing
// with "cannot fetch b from nil" or "index out of range". ast.Walk visits
// children first, so a chain is grown one member at a time.
type pathPatcher struct {
	fc    *funcCtx
	calls map[*ast.CallNode]int
}

func (pp *pathPatcher) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok || m.Method {
		return
	}
	s, ok := stepOf(m.Property)
	if !ok {
		return
	}
	base := m.Node
	if ch, ok := base.(*ast.ChainNode); ok {
		base = ch.Node
	}
	var p path
	var root ast.Node
	switch b := base.(type) {
	case *ast.IdentifierNode:
		if b.Value == "$env" {
			return
		}
		p, root = path{root: b.Value}, b
	case *ast.CallNode:
		idx, ok := pp.calls[b]
		if !ok {
			return
		}
		prev := pp.fc.paths[idx]
		p = path{root: prev.root, steps: append([]step(nil), prev.steps...)}
		root = b.Arguments[0]
	default:
		return
	}
	p.steps = append(p.steps, s)
	pp.fc.paths = append(pp.fc.paths, p)
	idx := len(pp.fc.paths) - 1
	call := &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: "_path"},
		Arguments: []ast.Node{root, &ast.IntegerNode{Value: idx}},
	}
	call.Callee.SetLocation(m.Location())
	call.Arguments[1].SetLocation(m.Location())
	ast.Patch(node, call)
	pp.calls[call] = idx
}
