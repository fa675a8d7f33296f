package mapping

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Program is a compiled mapping. It is immutable and safe for concurrent use.
type Program struct {
	fields []*field
	names  []string // sorted top-level output names
	whole  []string // output paths whose source is the whole payload
	tests  []Test
	states sync.Pool // *state, see apply.go
}

type fieldKind uint8

const (
	kindFrom fieldKind = iota + 1
	kindValue
	kindExpr
	kindTemplate
	kindObject // fields:
	kindEach   // each: + fields:
)

// field is one compiled output field.
type field struct {
	name   string
	parent *field
	kind   fieldKind

	from     *path
	value    any
	ex       *compiled // expr:, and each: for kindEach
	tmpl     *template
	children []*field

	def        any
	hasDefault bool
	lookup     map[string]any // nil without lookup:
	required   bool
	omitEmpty  bool
}

var (
	topKeys   = []string{"fields", "tests"}
	formKeys  = []string{"from", "value", "expr", "template", "fields"}
	fieldKeys = []string{"from", "value", "expr", "template", "fields", "each", "default", "required", "lookup", "omit_empty"}
	testKeys  = []string{"name", "input", "input_file", "expect", "expect_error"}
)

// Compile parses and compiles a mapping file's YAML. file is used only in error messages.
func Compile(src []byte, file string) (p *Program, err error) {
	defer recoverCompile(file, &p, &err)
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(err, file)
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: file, Line: 1, Col: 1, Msg: "empty mapping: want a document with fields:"}
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &Error{File: file, Line: next.Line, Col: next.Column, Msg: "a mapping file holds one YAML document; found a second one"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err, file)
	}
	cp := &compiler{file: file, src: src}
	return cp.program(doc.Content[0])
}

// CompileNode compiles a mapping given as a yaml.v3 node (inline under a route's `map:`); line/col come from the node.
func CompileNode(n *yaml.Node, file string) (p *Program, err error) {
	defer recoverCompile(file, &p, &err)
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n == nil || n.Kind == 0 {
		return nil, &Error{File: file, Msg: "empty mapping: want fields:"}
	}
	cp := &compiler{file: file}
	return cp.program(n)
}

// recoverCompile turns a panic (a bug, or one in a dependency) into an error:
// a bad mapping must never crash `validate` or the agent's config load.
func recoverCompile(file string, p **Program, err *error) {
	if r := recover(); r != nil {
		*p, *err = nil, &Error{File: file, Msg: fmt.Sprintf("internal error compiling mapping: %v", r)}
	}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserErrors are yaml.v3's parser (not scanner) errors. For these it
// reports the 0-based line of the construct being parsed (parser.fail adds 1
// for scanner errors only), so we add the 1.
var yamlParserErrors = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"found undefined tag handle", "did not find expected node content",
	"did not find expected '-' indicator", "did not find expected key",
	"did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"found duplicate %YAML directive", "found incompatible YAML document",
	"found duplicate %TAG directive",
}

// yamlError positions a yaml.v3 syntax error; yaml.v3 gives a line, no column.
func yamlError(err error, file string) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if contains(yamlParserErrors, m[2]) {
			line++
		}
		msg := "invalid YAML: " + m[2]
		if strings.HasPrefix(m[2], "did not find expected ',' or") {
			msg += " (inside {...} or [...], quote values that contain [ ] { } or commas)"
		}
		return &Error{File: file, Line: line, Msg: msg}
	}
	return &Error{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// compiler holds the state of one Compile: the file name and source for
// positions, and the errors found so far.
type compiler struct {
	file  string
	src   []byte   // nil for CompileNode
	lines []string // src split, on demand
	errs  errorList
}

func (cp *compiler) errAt(n *yaml.Node, path, msg string) {
	line, col := 0, 0
	if n != nil {
		line, col = n.Line, n.Column
	}
	cp.errs.add(&Error{File: cp.file, Line: line, Col: col, Path: path, Msg: msg})
}

func (cp *compiler) exprErr(n *yaml.Node, path string, xe *exprError) {
	line, col := cp.exprPos(n, xe.offset)
	cp.errs.add(&Error{File: cp.file, Line: line, Col: col, Path: path, Msg: xe.msg})
}

// pairs iterates a mapping node's key/value pairs (aliases resolved),
// reporting non-string, merge and duplicate keys instead of passing them on.
func (cp *compiler) pairs(n *yaml.Node, path string, each func(k, v *yaml.Node)) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k == nil || v == nil {
			cp.errAt(n.Content[i], path, "alias loop")
			continue
		}
		if k.Kind != yaml.ScalarNode {
			cp.errAt(k, path, "keys must be strings")
			continue
		}
		if k.Tag == "!!merge" {
			cp.errAt(k, path, "merge keys (<<) are not supported")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			cp.errAt(k, join(path, k.Value), fmt.Sprintf("duplicate key %q (first at line %d)", truncate(k.Value, 64), first.Line))
			continue
		}
		seen[k.Value] = k
		each(k, v)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (cp *compiler) program(root *yaml.Node) (*Program, error) {
	root = resolve(root)
	if root == nil || root.Kind != yaml.MappingNode {
		cp.errAt(root, "", "a mapping is a YAML object with fields: (and optionally tests:)")
		return nil, cp.errs.err()
	}
	p := &Program{}
	var fieldsNode *yaml.Node
	cp.pairs(root, "", func(k, v *yaml.Node) {
		switch k.Value {
		case "fields":
			fieldsNode = v
			p.fields = cp.fields(v, "fields", nil, scopeTop)
		case "tests":
			p.tests = cp.tests(v)
		default:
			cp.errAt(k, "", fmt.Sprintf("unknown top-level key %q", truncate(k.Value, 64))+suggest(k.Value, topKeys)+" (want fields, tests)")
		}
	})
	if fieldsNode == nil {
		cp.errAt(root, "", "missing fields:")
	}
	if err := cp.errs.err(); err != nil {
		return nil, err
	}
	for _, f := range p.fields {
		p.names = append(p.names, f.name)
	}
	sort.Strings(p.names)
	p.whole = wholePayload(p.fields, "")
	sort.Strings(p.whole)
	p.states.New = func() any { return newState() }
	return p, nil
}

// fields compiles a `fields:` object.
func (cp *compiler) fields(n *yaml.Node, path string, parent *field, sc scope) []*field {
	if n.Kind != yaml.MappingNode {
		cp.errAt(n, path, "want an object of output fields, e.g. {to: {from: payload.phone}}")
		return nil
	}
	if len(n.Content) == 0 {
		cp.errAt(n, path, "want at least one field")
		return nil
	}
	var out []*field
	cp.pairs(n, path, func(k, v *yaml.Node) {
		if k.Value == "" {
			cp.errAt(k, path, "field name must not be empty")
			return
		}
		if f := cp.field(k, v, join(path, k.Value), parent, sc); f != nil {
			out = append(out, f)
		}
	})
	return out
}

// specNodes are the keys of one field spec, as written.
type specNodes struct {
	keys map[string]*yaml.Node // key nodes, for positions
	vals map[string]*yaml.Node
}

func (cp *compiler) field(keyNode, n *yaml.Node, path string, parent *field, sc scope) *field {
	f := &field{name: keyNode.Value, parent: parent}
	if n.Kind != yaml.MappingNode {
		msg := "want a field spec such as {from: payload.x}, {value: ...}, {expr: ...}, {template: ...} or {fields: ...}"
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			msg += fmt.Sprintf("; did you mean {from: %s}?", truncate(n.Value, 64))
		}
		cp.errAt(n, path, msg)
		return nil
	}
	s := specNodes{keys: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}}
	var forms []string
	unknown := false
	cp.pairs(n, path, func(k, v *yaml.Node) {
		if !contains(fieldKeys, k.Value) {
			cp.errAt(k, path, fmt.Sprintf("unknown key %q", truncate(k.Value, 64))+suggest(k.Value, fieldKeys))
			unknown = true
			return
		}
		s.keys[k.Value], s.vals[k.Value] = k, v
		if contains(formKeys, k.Value) {
			forms = append(forms, k.Value)
		}
	})
	ok := true
	if s.keys["each"] != nil {
		if s.keys["fields"] == nil {
			cp.errAt(s.keys["each"], path+".each", "each needs fields: (one object per array element)")
			ok = false
		}
		for _, form := range forms {
			if form != "fields" {
				cp.errAt(s.keys[form], path+"."+form, fmt.Sprintf("each takes fields:, not %s:", form))
				ok = false
			}
		}
	} else {
		switch len(forms) {
		case 0:
			if !unknown { // a misspelt form key was already reported
				cp.errAt(keyNode, path, "no value: want one of from, value, expr, template or fields")
			}
			ok = false
		case 1:
		default:
			cp.errAt(s.keys[forms[1]], path+"."+forms[1],
				fmt.Sprintf("both %s and %s given: want exactly one of from, value, expr, template or fields", forms[0], forms[1]))
			ok = false
		}
	}
	if !ok {
		return nil
	}
	cp.modifiers(f, s, path)

	inner := sc
	switch {
	case s.vals["each"] != nil:
		f.kind, inner = kindEach, scopeEach
		f.ex = cp.expr(s.vals["each"], path+".each", sc)
	case s.vals["fields"] != nil:
		f.kind = kindObject
	case s.vals["from"] != nil:
		f.kind = kindFrom
		f.from = cp.path(s.vals["from"], path+".from", sc)
	case s.vals["value"] != nil:
		f.kind = kindValue
		f.value, _ = cp.literal(s.vals["value"], false, path+".value")
	case s.vals["expr"] != nil:
		f.kind = kindExpr
		f.ex = cp.expr(s.vals["expr"], path+".expr", sc)
	case s.vals["template"] != nil:
		f.kind = kindTemplate
		f.tmpl = cp.template(s.vals["template"], path+".template", sc)
	}
	if f.kind == kindObject || f.kind == kindEach {
		for _, k := range []string{"default", "lookup"} {
			if s.keys[k] != nil {
				cp.errAt(s.keys[k], path+"."+k, k+" does not apply to an object or array (fields:)")
			}
		}
		f.children = cp.fields(s.vals["fields"], path+".fields", f, inner)
	}
	return f
}

func (cp *compiler) modifiers(f *field, s specNodes, path string) {
	if v := s.vals["required"]; v != nil {
		f.required = cp.boolean(v, path+".required")
	}
	if v := s.vals["omit_empty"]; v != nil {
		f.omitEmpty = cp.boolean(v, path+".omit_empty")
	}
	if v := s.vals["default"]; v != nil {
		f.def, _ = cp.literal(v, false, path+".default")
		f.hasDefault = true
	}
	if v := s.vals["lookup"]; v != nil {
		f.lookup = cp.lookup(v, path+".lookup")
	}
}

func (cp *compiler) boolean(n *yaml.Node, path string) bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var b bool
		if n.Decode(&b) == nil {
			return b
		}
	}
	cp.errAt(n, path, "want true or false")
	return false
}

// lookup compiles a lookup table. Keys are matched against the stringified
// value, so numeric keys are normalised the same way (1.0 and 1 are "1").
func (cp *compiler) lookup(n *yaml.Node, path string) map[string]any {
	if n.Kind != yaml.MappingNode {
		cp.errAt(n, path, "lookup must be an object mapping input values to output values, e.g. {ACCEPTED: booked}")
		return nil
	}
	out := map[string]any{}
	cp.pairs(n, path, func(k, v *yaml.Node) {
		key := k.Value
		if t := k.ShortTag(); t == "!!int" || t == "!!float" {
			var f float64
			if k.Decode(&f) == nil {
				key = stringify(f)
			}
		} else if t == "!!null" {
			cp.errAt(k, path, "lookup keys must not be null (use default: for missing values)")
			return
		}
		if _, dup := out[key]; dup {
			cp.errAt(k, path, fmt.Sprintf("duplicate lookup key %q", truncate(key, 64)))
			return
		}
		out[key], _ = cp.literal(v, false, join(path, k.Value))
	})
	return out
}

// scalarString returns a scalar's text, reporting non-scalars.
func (cp *compiler) scalarString(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		cp.errAt(n, path, "want "+want)
		return "", false
	}
	return n.Value, true
}

func (cp *compiler) expr(n *yaml.Node, path string, sc scope) *compiled {
	src, ok := cp.scalarString(n, path, "an expression")
	if !ok {
		return nil
	}
	c, xe := compileExpression(src, sc)
	if xe != nil {
		cp.exprErr(n, path, xe)
		return nil
	}
	return c
}

func (cp *compiler) path(n *yaml.Node, path string, sc scope) *path {
	c := cp.expr(n, path, sc)
	if c == nil {
		return nil
	}
	if c.path == nil {
		cp.errAt(n, path, "from takes a path such as payload.attendees[0].name; use expr: to compute a value")
		return nil
	}
	return c.path
}

func (cp *compiler) template(n *yaml.Node, path string, sc scope) *template {
	src, ok := cp.scalarString(n, path, "a template string")
	if !ok {
		return nil
	}
	t, xe := compileTemplate(src, sc)
	if xe != nil {
		cp.exprErr(n, path, xe)
		return nil
	}
	return t
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// wholePayload lists output paths that copy the entire payload (from: payload
// or expr: payload), which `validate` warns about: it forwards every field the
// provider sends, patient data included.
func wholePayload(fields []*field, prefix string) []string {
	var out []string
	for _, f := range fields {
		p := f.name
		if prefix != "" {
			p = prefix + "." + f.name
		}
		var src *path
		switch f.kind {
		case kindFrom:
			src = f.from
		case kindExpr:
			if f.ex != nil {
				src = f.ex.path
			}
		case kindObject:
			out = append(out, wholePayload(f.children, p)...)
		case kindEach:
			out = append(out, wholePayload(f.children, p+"[]")...)
		}
		if src != nil && src.root == "payload" && len(src.steps) == 0 {
			out = append(out, p)
		}
	}
	return out
}

// Fields returns the top-level output field names, sorted (validate checks them against a sink action's required fields).
func (p *Program) Fields() []string { return append([]string(nil), p.names...) }

// WholePayloadFields returns the output paths whose `from` is exactly `payload`
// (also `expr: payload`), sorted; inside each, paths read "lines[].raw".
func (p *Program) WholePayloadFields() []string { return append([]string(nil), p.whole...) }

// Tests returns the mapping's tests, in file order.
func (p *Program) Tests() []Test { return append([]Test(nil), p.tests...) }
