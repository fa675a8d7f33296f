package mapping

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits on literal values (value:, default:, lookup:, tests): YAML aliases
// can make a small file expand enormously or refer to itself.
const (
	maxValueDepth = 64
	maxValueNodes = 100_000
)

// resolve follows aliases (bounded, since yaml.v3 accepts `&a [*a]`).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < maxValueDepth; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// valueConv converts YAML nodes to the JSON-like values a mapping works with:
// map[string]any, []any, string, bool, nil and numbers. Timestamps and custom
// tags stay strings, as they would be in a JSON body.
type valueConv struct {
	floats  bool // numbers as float64, like encoding/json (test inputs)
	budget  int
	errNode *yaml.Node
	errMsg  string
}

func (c *valueConv) fail(n *yaml.Node, msg string) any {
	if c.errNode == nil {
		c.errNode, c.errMsg = n, msg
	}
	return nil
}

func (c *valueConv) convert(n *yaml.Node, depth int) any {
	if c.errNode != nil {
		return nil
	}
	c.budget--
	if c.budget < 0 || depth > maxValueDepth {
		return c.fail(n, "value too large or too deeply nested")
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return c.fail(n, "unknown alias")
		}
		return c.convert(n.Alias, depth+1)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return c.convert(n.Content[0], depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			out = append(out, c.convert(e, depth+1))
		}
		return out
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolve(n.Content[i])
			if k == nil || k.Kind != yaml.ScalarNode {
				return c.fail(n.Content[i], "object keys must be strings")
			}
			if k.Tag == "!!merge" {
				return c.fail(k, "merge keys (<<) are not supported")
			}
			if _, dup := out[k.Value]; dup {
				return c.fail(k, "duplicate key "+strconv.Quote(truncate(k.Value, 64)))
			}
			out[k.Value] = c.convert(n.Content[i+1], depth+1)
		}
		return out
	case yaml.ScalarNode:
		return c.scalar(n)
	}
	return c.fail(n, "unsupported YAML node")
}

func (c *valueConv) scalar(n *yaml.Node) any {
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return c.fail(n, "invalid boolean")
		}
		return b
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			if c.floats || int64(int(i)) != i {
				return float64(i)
			}
			return int(i)
		}
		var f float64
		if err := n.Decode(&f); err != nil {
			return c.fail(n, "invalid number")
		}
		return f
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return c.fail(n, "invalid number")
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return c.fail(n, "NaN and infinity cannot be represented in JSON")
		}
		return f
	}
	return n.Value
}

// literal converts a node, reporting the first problem as a compile error.
func (cp *compiler) literal(n *yaml.Node, floats bool, path string) (any, bool) {
	c := valueConv{floats: floats, budget: maxValueNodes}
	v := c.convert(n, 0)
	if c.errNode != nil {
		cp.errAt(c.errNode, path, c.errMsg)
		return nil, false
	}
	return v, true
}

// exprPos maps a rune offset inside a scalar's value to a line and column in
// the file. That is exact for single-line plain and single-quoted scalars and
// for literal blocks (|) when the source is at hand; double-quoted scalars are
// exact unless escapes other than \" and \\ precede the offset. Anything else
// (folded blocks, multi-line flow scalars) gets the scalar's own position.
func (cp *compiler) exprPos(n *yaml.Node, off int) (line, col int) {
	if off < 0 {
		return n.Line, n.Column
	}
	v := n.Value
	switch {
	case n.Style&yaml.LiteralStyle != 0:
		if l, c, ok := cp.literalPos(n, off); ok {
			return l, c
		}
		return n.Line, n.Column
	case n.Style&yaml.FoldedStyle != 0 || strings.ContainsRune(v, '\n'):
		return n.Line, n.Column
	case n.Style&yaml.SingleQuotedStyle != 0:
		return n.Line, n.Column + 1 + off + strings.Count(runePrefix(v, off), "'")
	case n.Style&yaml.DoubleQuotedStyle != 0:
		p := runePrefix(v, off)
		return n.Line, n.Column + 1 + off + strings.Count(p, `"`) + strings.Count(p, `\`)
	}
	if !cp.plainOnOneLine(n) {
		return n.Line, n.Column
	}
	return n.Line, n.Column + off
}

func runePrefix(s string, runes int) string {
	i := 0
	for ; runes > 0 && i < len(s); runes-- {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

// srcLine returns line l (1-based) of the source, if known.
func (cp *compiler) srcLine(l int) (string, bool) {
	if cp.src == nil || l < 1 {
		return "", false
	}
	if cp.lines == nil {
		cp.lines = strings.Split(string(cp.src), "\n")
	}
	if l > len(cp.lines) {
		return "", false
	}
	return strings.TrimSuffix(cp.lines[l-1], "\r"), true
}

// plainOnOneLine checks, when the source is known, that a plain scalar is
// written on its line as is (a multi-line plain scalar is folded to one line
// in Value and offsets would be wrong).
func (cp *compiler) plainOnOneLine(n *yaml.Node) bool {
	line, ok := cp.srcLine(n.Line)
	if !ok {
		return true
	}
	rest := runeSuffix(line, n.Column-1)
	return strings.HasPrefix(rest, n.Value)
}

func runeSuffix(s string, runes int) string {
	return s[len(runePrefix(s, runes)):]
}

// literalPos finds an offset inside a literal block scalar: its lines are the
// source lines after the indicator, minus the block's indentation.
func (cp *compiler) literalPos(n *yaml.Node, off int) (int, int, bool) {
	prefix := runePrefix(n.Value, off)
	k := strings.Count(prefix, "\n")
	colInLine := utf8.RuneCountInString(prefix[strings.LastIndexByte(prefix, '\n')+1:])
	indent := -1
	for l := n.Line + 1; ; l++ {
		s, ok := cp.srcLine(l)
		if !ok {
			return 0, 0, false
		}
		if strings.TrimSpace(s) == "" {
			continue
		}
		indent = len(s) - len(strings.TrimLeft(s, " "))
		break
	}
	line := n.Line + 1 + k
	s, ok := cp.srcLine(line)
	if !ok || len(s) < indent || strings.TrimLeft(s[:indent], " ") != "" {
		return 0, 0, false
	}
	return line, indent + 1 + colInLine, true
}
