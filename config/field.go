package config

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Kind is the YAML shape a Field accepts.
type Kind int

const (
	KindString     Kind = iota // any scalar, decoded as text
	KindInt                    // integer
	KindBool                   // true / false
	KindDuration               // Go duration: 90s, 5m, 24h
	KindSize                   // bytes with an optional unit: 512KiB, 1MiB
	KindStringMap              // mapping of string to string (e.g. HTTP headers)
	KindStringList             // sequence of strings
	KindObject                 // mapping with the declared Fields
	KindObjectList             // sequence of mappings with the declared Fields
	KindAny                    // anything; checked by whoever consumes it (inline mappings)
)

func (k Kind) String() string {
	return [...]string{"string", "integer", "boolean", "duration", "size", "map of strings", "list of strings", "object", "list of objects", "any"}[k]
}

// Field declares one config key once. Strict decoding (unknown keys), required
// checks, the JSON Schema and the generated connector docs all come from it, so
// a key is never described in two places.
type Field struct {
	Name     string
	Kind     Kind
	Doc      string
	Default  string // as written in YAML; documentation and schema only
	Example  string
	Required bool
	Secret   bool     // never printed; expected to come from ${ENV} or ${file:...}
	Enum     []string // allowed values for a string, or for each item of a list of strings
	Fields   []Field  // for objects and lists of objects
	// OneOf, for an object, says that exactly one of its Fields may be set
	// (e.g. an auth block: bearer | basic | header).
	OneOf bool
	// Or lets a field also be written in a second shape, e.g. a route's `to:`
	// that is either a connector name (KindString) or an object.
	Or *Field
}

// Check walks n against fields and returns every problem found, each with the
// file, line, column and key path, so an integrator can fix them in one pass.
func Check(file string, n *yaml.Node, fields []Field, path string) []error {
	var errs []error
	check(&errs, file, n, Field{Kind: KindObject, Fields: fields}, path)
	return errs
}

func check(errs *[]error, file string, n *yaml.Node, f Field, path string) {
	if n == nil {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if f.Or != nil && !shapeMatches(n, f.Kind) && shapeMatches(n, f.Or.Kind) {
		alt := *f.Or
		alt.Name = f.Name
		check(errs, file, n, alt, path)
		return
	}
	bad := func(format string, args ...any) {
		*errs = append(*errs, Errorf(file, n, path, format, args...))
	}
	switch f.Kind {
	case KindAny:
		return
	case KindObject:
		if n.Kind != yaml.MappingNode {
			bad("expected an object, got %s", describe(n))
			return
		}
		seen := map[string]bool{}
		set := 0
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			name := k.Value
			sub, ok := lookupField(f.Fields, name)
			if !ok {
				*errs = append(*errs, Errorf(file, k, join(path, name), "unknown key%s", suggest(name, f.Fields)))
				continue
			}
			if seen[name] {
				*errs = append(*errs, Errorf(file, k, join(path, name), "duplicate key"))
			}
			seen[name] = true
			if !isNull(v) {
				set++
			}
			check(errs, file, v, sub, join(path, name))
		}
		if f.OneOf && set != 1 {
			names := make([]string, len(f.Fields))
			for i, sf := range f.Fields {
				names[i] = sf.Name
			}
			bad("set exactly one of %s", strings.Join(names, ", "))
		}
		for _, sf := range f.Fields {
			if sf.Required && !seen[sf.Name] {
				bad("missing required key %q", sf.Name)
			}
		}
	case KindObjectList:
		if n.Kind != yaml.SequenceNode {
			bad("expected a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			check(errs, file, item, Field{Kind: KindObject, Fields: f.Fields, OneOf: f.OneOf}, fmt.Sprintf("%s[%d]", path, i))
		}
	case KindStringList:
		if n.Kind != yaml.SequenceNode {
			bad("expected a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				*errs = append(*errs, Errorf(file, item, fmt.Sprintf("%s[%d]", path, i), "expected a string, got %s", describe(item)))
			} else if err := checkScalar(Field{Kind: KindString, Enum: f.Enum}, item.Value); err != nil {
				*errs = append(*errs, Errorf(file, item, fmt.Sprintf("%s[%d]", path, i), "%v", err))
			}
		}
	case KindStringMap:
		if n.Kind != yaml.MappingNode {
			bad("expected a map of strings, got %s", describe(n))
			return
		}
		for i := 1; i < len(n.Content); i += 2 {
			if n.Content[i].Kind != yaml.ScalarNode {
				*errs = append(*errs, Errorf(file, n.Content[i], join(path, n.Content[i-1].Value), "expected a string, got %s", describe(n.Content[i])))
			}
		}
	default:
		if n.Kind != yaml.ScalarNode {
			bad("expected a %s, got %s", f.Kind, describe(n))
			return
		}
		if isNull(n) {
			if f.Required {
				bad("must not be empty")
			}
			return
		}
		if err := checkScalar(f, n.Value); err != nil {
			bad("%v", err)
		}
	}
}

func checkScalar(f Field, v string) error {
	switch f.Kind {
	case KindInt:
		var i int64
		if _, err := fmt.Sscan(v, &i); err != nil || fmt.Sprint(i) != v {
			return fmt.Errorf("expected an integer, got %q", v)
		}
	case KindBool:
		if v != "true" && v != "false" {
			return fmt.Errorf("expected true or false, got %q", v)
		}
	case KindDuration:
		if _, err := ParseDuration(v); err != nil {
			return err
		}
	case KindSize:
		if _, err := ParseSize(v); err != nil {
			return err
		}
	case KindString:
		if len(f.Enum) > 0 {
			for _, e := range f.Enum {
				if v == e {
					return nil
				}
			}
			return fmt.Errorf("%q is not one of %s", v, strings.Join(f.Enum, ", "))
		}
	}
	return nil
}

func shapeMatches(n *yaml.Node, k Kind) bool {
	switch k {
	case KindObject, KindStringMap:
		return n.Kind == yaml.MappingNode
	case KindObjectList, KindStringList:
		return n.Kind == yaml.SequenceNode
	case KindAny:
		return true
	default:
		return n.Kind == yaml.ScalarNode
	}
}

func lookupField(fields []Field, name string) (Field, bool) {
	for _, f := range fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && (n.Tag == "!!null" || (n.Value == "" && n.Style == 0))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// suggest names the closest known key, so a typo reads as a typo.
func suggest(name string, fields []Field) string {
	best, bestD := "", 3
	for _, f := range fields {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	sort.Strings(names)
	if len(names) > 12 {
		return ""
	}
	return " (known keys: " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
