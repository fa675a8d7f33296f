package mapping

import (
	"reflect"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// step is one member access of a path: .key / ["key"] or [index].
type step struct {
	key     string
	index   int
	isIndex bool
}

// path is a pre-parsed member chain such as payload.attendees[0].name. It is
// walked directly on the decoded JSON, without the expr VM: that is both the
// fast path (most fields are plain paths) and the place where nil-safety lives.
type path struct {
	root  string
	steps []step
}

// walk follows the steps from v. A missing key, a nil member, an index out of
// range or a member of a value that has none yields nil, never an error: the
// payload is dynamic and a mapping says what it wants, not what must exist.
func (p *path) walk(v any) any {
	for i := range p.steps {
		if v == nil {
			return nil
		}
		s := &p.steps[i]
		switch c := v.(type) {
		case map[string]any:
			if s.isIndex {
				return nil
			}
			v = c[s.key]
		case []any:
			if !s.isIndex {
				return nil
			}
			idx := s.index
			if idx < 0 {
				idx += len(c) // like expr: -1 is the last element
			}
			if idx < 0 || idx >= len(c) {
				return nil
			}
			v = c[idx]
		default:
			v = reflectStep(v, s)
		}
	}
	return v
}

// reflectStep handles inputs that are not encoding/json's shapes (a caller may
// pass map[string]string or a []map[string]any); it never panics.
func reflectStep(v any, s *step) any {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	switch rv.Kind() {
	case reflect.Map:
		if s.isIndex || rv.Type().Key().Kind() != reflect.String {
			return nil
		}
		e := rv.MapIndex(reflect.ValueOf(s.key).Convert(rv.Type().Key()))
		if !e.IsValid() || !e.CanInterface() {
			return nil
		}
		return e.Interface()
	case reflect.Slice, reflect.Array:
		if !s.isIndex {
			return nil
		}
		idx := s.index
		if idx < 0 {
			idx += rv.Len()
		}
		if idx < 0 || idx >= rv.Len() {
			return nil
		}
		e := rv.Index(idx)
		if !e.CanInterface() {
			return nil
		}
		return e.Interface()
	}
	return nil
}

func (p *path) String() string {
	var b strings.Builder
	b.WriteString(p.root)
	for _, s := range p.steps {
		if s.isIndex {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		} else {
			b.WriteByte('.')
			b.WriteString(s.key)
		}
	}
	return b.String()
}

// pathOf recognises a pure path in an expr AST: a root identifier followed by
// constant member accesses (.a, ?.a, ["a"], [0], [-1]). rootNode is the
// identifier node, useful for error positions.
func pathOf(n ast.Node) (p path, rootNode *ast.IdentifierNode, ok bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			return path{}, nil, false
		}
		return path{root: n.Value}, n, true
	case *ast.ChainNode:
		return pathOf(n.Node)
	case *ast.MemberNode:
		if n.Method {
			return path{}, nil, false
		}
		s, ok := stepOf(n.Property)
		if !ok {
			return path{}, nil, false
		}
		p, root, ok := pathOf(n.Node)
		if !ok {
			return path{}, nil, false
		}
		p.steps = append(p.steps, s)
		return p, root, true
	}
	return path{}, nil, false
}

// stepOf turns a constant member property into a step.
func stepOf(n ast.Node) (step, bool) {
	switch n := n.(type) {
	case *ast.StringNode:
		return step{key: n.Value}, true
	case *ast.IntegerNode:
		return step{index: n.Value, isIndex: true}, true
	case *ast.UnaryNode:
		if i, ok := n.Node.(*ast.IntegerNode); ok && n.Operator == "-" {
			return step{index: -i.Value, isIndex: true}, true
		}
	}
	return step{}, false
}
