package mapping

import (
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/vm"
)

// template is text with {{ expr }} placeholders, compiled once.
type template struct {
	parts  []tmplPart
	litLen int // total literal length, to size the output buffer
}

type tmplPart struct {
	lit string
	ex  *compiled // nil for literal text
}

// compileTemplate splits src into literal text and placeholders and compiles
// each placeholder. Errors carry the rune offset within src.
func compileTemplate(src string, sc scope) (*template, *exprError) {
	t := &template{}
	rest, base := src, 0 // base: byte offset of rest in src
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			t.addLit(rest)
			return t, nil
		}
		t.addLit(rest[:i])
		open := base + i
		body := rest[i+2:]
		end := placeholderEnd(body)
		if end < 0 {
			return nil, &exprError{offset: utf8.RuneCountInString(src[:open]), msg: `unclosed "{{" (want "}}")`}
		}
		exprSrc := body[:end]
		exprStart := utf8.RuneCountInString(src[:open+2])
		if strings.TrimSpace(exprSrc) == "" {
			return nil, &exprError{offset: exprStart - 2, msg: `empty placeholder "{{ }}"`}
		}
		c, xe := compileExpression(exprSrc, sc)
		if xe != nil {
			if xe.offset < 0 {
				xe.offset = exprStart - 2
			} else {
				xe.offset += exprStart
			}
			return nil, xe
		}
		t.parts = append(t.parts, tmplPart{ex: c})
		consumed := i + 2 + end + 2
		rest = rest[consumed:]
		base += consumed
	}
}

func (t *template) addLit(s string) {
	if s == "" {
		return
	}
	t.parts = append(t.parts, tmplPart{lit: s})
	t.litLen += len(s)
}

// placeholderEnd returns the index of the "}}" closing a placeholder body, or
// -1. It skips string literals and balanced braces, so {{ {"a": 1}["a"] }}
// and {{ "}}" }} work.
func placeholderEnd(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == '\\' && c != '`' {
					j++
					continue
				}
				if s[j] == c {
					break
				}
			}
			if j >= len(s) {
				return -1
			}
			i = j
		case '{':
			depth++
		case '}':
			if depth == 0 {
				if i+1 < len(s) && s[i+1] == '}' {
					return i
				}
				return -1
			}
			depth--
		}
	}
	return -1
}

// render evaluates the placeholders; nil renders as "", numbers plainly.
func (t *template) render(env map[string]any, m *vm.VM) (string, error) {
	if len(t.parts) == 1 && t.parts[0].ex == nil {
		return t.parts[0].lit, nil
	}
	var b strings.Builder
	b.Grow(t.litLen + 16*len(t.parts))
	for i := range t.parts {
		p := &t.parts[i]
		if p.ex == nil {
			b.WriteString(p.lit)
			continue
		}
		v, err := p.ex.eval(env, m)
		if err != nil {
			return "", err
		}
		writeValue(&b, v)
	}
	return b.String(), nil
}
