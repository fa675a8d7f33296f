package mapping

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/vm"
)

// state is the per-Apply scratch space, pooled per Program: the env map the
// expressions read (built once per Apply, item rebound per array element),
// a reusable VM, and the array indexes of the elements being mapped (for
// error paths such as lines[2].sku).
type state struct {
	env map[string]any
	vm  vm.VM
	idx []int
}

func newState() *state {
	return &state{env: make(map[string]any, 4)}
}

// Apply maps one input document ({"event": ..., "payload": ...}) to the output
// document. Errors are *ApplyError. The output may share nested values with
// the input (a `from:` that selects an object returns that object).
func (p *Program) Apply(input map[string]any) (out map[string]any, err error) {
	st := p.states.Get().(*state)
	st.env["event"] = input["event"]
	st.env["payload"] = input["payload"]
	st.env["needs"] = input["needs"]
	st.env["item"] = nil
	defer func() {
		if r := recover(); r != nil {
			// Only a bug gets here (expr's VM recovers its own panics), but
			// the pipeline must get an error, not a crashed worker.
			out, err = nil, &ApplyError{Reason: fmt.Sprintf("internal error: %v", r)}
		}
		// Do not keep patient data alive in the pool.
		clear(st.env)
		scrubVM(&st.vm)
		st.idx = st.idx[:0]
		p.states.Put(st)
	}()
	out = make(map[string]any, len(p.fields))
	if err := applyFields(st, p.fields, out); err != nil {
		return nil, err
	}
	return out, nil
}

func applyFields(st *state, fields []*field, out map[string]any) error {
	for _, f := range fields {
		v, keep, err := applyField(st, f)
		if err != nil {
			return err
		}
		if keep {
			out[f.name] = v
		}
	}
	return nil
}

// applyField computes one field and reports whether to keep it in the output.
func applyField(st *state, f *field) (any, bool, error) {
	var v any
	switch f.kind {
	case kindFrom:
		v = f.from.walk(st.env[f.from.root])
	case kindValue:
		v = cloneValue(f.value)
	case kindExpr:
		var err error
		if v, err = f.ex.eval(st.env, &st.vm); err != nil {
			return nil, false, st.fail(f, err.Error())
		}
	case kindTemplate:
		s, err := f.tmpl.render(st.env, &st.vm)
		if err != nil {
			return nil, false, st.fail(f, err.Error())
		}
		v = s
	case kindObject:
		obj := make(map[string]any, len(f.children))
		if err := applyFields(st, f.children, obj); err != nil {
			return nil, false, err
		}
		v = obj
	case kindEach:
		var err error
		if v, err = applyEach(st, f); err != nil {
			return nil, false, err
		}
	}
	return finish(st, f, v)
}

// applyEach maps each element of the array to an object, with item bound to
// the element. A null array stays null.
func applyEach(st *state, f *field) (any, error) {
	src, err := f.ex.eval(st.env, &st.vm)
	if err != nil {
		return nil, st.fail(f, "each: "+err.Error())
	}
	if src == nil {
		return nil, nil
	}
	items, ok := src.([]any)
	if !ok {
		if items, ok = toSlice(src); !ok {
			return nil, st.fail(f, "each: want an array, got "+typeName(src))
		}
	}
	out := make([]any, len(items))
	prev := st.env["item"]
	st.idx = append(st.idx, 0)
	depth := len(st.idx) - 1
	for i, it := range items {
		st.idx[depth] = i
		st.env["item"] = it
		obj := make(map[string]any, len(f.children))
		if err := applyFields(st, f.children, obj); err != nil {
			return nil, err
		}
		out[i] = obj
	}
	st.idx = st.idx[:depth]
	st.env["item"] = prev
	return out, nil
}

// toSlice accepts any Go slice, for callers that do not pass []any.
func toSlice(v any) ([]any, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, false
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, true
}

// finish applies the modifiers in their documented order: lookup, default,
// required, omit_empty.
func finish(st *state, f *field, v any) (any, bool, error) {
	if f.lookup != nil && !isEmpty(v) {
		key, ok := lookupKey(v)
		if !ok {
			return nil, false, st.fail(f, "lookup: want a string, number or boolean, got "+typeName(v))
		}
		if out, found := f.lookup[key]; found {
			v = cloneValue(out)
		} else if f.hasDefault {
			v = cloneValue(f.def)
		} else {
			return nil, false, st.fail(f, fmt.Sprintf("no lookup entry for %q", truncate(key, 64)))
		}
	}
	if f.hasDefault && isEmpty(v) {
		v = cloneValue(f.def)
	}
	if f.required && isEmpty(v) {
		return nil, false, st.fail(f, "required")
	}
	if f.omitEmpty && isEmptyForOmit(v) {
		return nil, false, nil
	}
	return v, true, nil
}

// lookupKey stringifies scalars the way lookup keys are written.
func lookupKey(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	}
	if _, ok := toFloat(v); ok {
		return stringify(v), true
	}
	return "", false
}

// cloneValue copies composite literals so that a caller mutating one output
// cannot change the program (and every later output).
func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = cloneValue(e)
		}
		return s
	}
	return v
}

// fail builds the ApplyError for f, naming array elements by index.
func (st *state) fail(f *field, reason string) error {
	return &ApplyError{Path: st.pathOf(f), Reason: reason}
}

func (st *state) pathOf(f *field) string {
	var chain []*field
	for a := f; a != nil; a = a.parent {
		chain = append(chain, a)
	}
	var b strings.Builder
	depth := 0
	for i := len(chain) - 1; i >= 0; i-- {
		a := chain[i]
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(a.name)
		if a.kind == kindEach && i > 0 && depth < len(st.idx) {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(st.idx[depth]))
			b.WriteByte(']')
			depth++
		}
	}
	return b.String()
}

// scrubVM drops the values a finished run left on a pooled VM's stack and in
// its variables (expr clears them only at the start of the next run).
func scrubVM(m *vm.VM) {
	clear(m.Stack[:cap(m.Stack)])
	clear(m.Variables)
}
