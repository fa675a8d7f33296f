package http

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/clinicbridge/clinicbridge/mapping"
)

// urlTemplate is a URL with {{ expr }} placeholders over `doc`. Each value
// is escaped for where it stands: a path segment (url.PathEscape) or a query
// value (url.QueryEscape). Placeholders may not stand in the scheme or host,
// so a document can never redirect a delivery to another server.
type urlTemplate struct {
	parts []urlPart
}

type urlPart struct {
	lit   string
	src   string // placeholder source, for messages
	eval  stringer
	query bool
}

// stringer evaluates one placeholder (a *mapping.Expr over `doc`).
type stringer interface {
	String(input map[string]any) (string, error)
}

func compileExpr(src string) (stringer, error) {
	return mapping.CompileExpr(src, "doc")
}

func parseURLTemplate(src string) (*urlTemplate, error) {
	t := &urlTemplate{}
	var shape strings.Builder // src with each placeholder replaced by "x"
	inQuery, inFragment := false, false
	rest := src
	for rest != "" {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if strings.Contains(rest, "}}") {
				return nil, errors.New(`"}}" without "{{"`)
			}
			t.parts = append(t.parts, urlPart{lit: rest})
			shape.WriteString(rest)
			break
		}
		lit := rest[:i]
		if strings.Contains(lit, "}}") {
			return nil, errors.New(`"}}" without "{{"`)
		}
		t.parts = append(t.parts, urlPart{lit: lit})
		shape.WriteString(lit)
		inQuery = inQuery || strings.Contains(lit, "?")
		inFragment = inFragment || strings.Contains(lit, "#")
		j := strings.Index(rest[i+2:], "}}")
		if j < 0 {
			return nil, errors.New(`"{{" without "}}"`)
		}
		exprSrc := strings.TrimSpace(rest[i+2 : i+2+j])
		if exprSrc == "" {
			return nil, errors.New("empty placeholder {{ }}")
		}
		if !pastHost(shape.String()) {
			return nil, fmt.Errorf("placeholder {{ %s }} is in the scheme or host; only the path and query may vary", exprSrc)
		}
		if inFragment {
			return nil, fmt.Errorf("placeholder {{ %s }} is in the fragment, which is never sent", exprSrc)
		}
		ev, err := compileExpr(exprSrc)
		if err != nil {
			return nil, fmt.Errorf("placeholder {{ %s }}: %v", exprSrc, err)
		}
		t.parts = append(t.parts, urlPart{src: exprSrc, eval: ev, query: inQuery})
		shape.WriteString("x")
		rest = rest[i+2+j+2:]
	}
	u, err := url.Parse(shape.String())
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("must start with http:// or https://")
	}
	if u.Host == "" {
		return nil, errors.New("has no host")
	}
	if u.User != nil {
		return nil, errors.New("must not carry credentials; use auth.basic")
	}
	return t, nil
}

// pastHost reports whether prefix, the URL text before a placeholder, has
// reached the path: scheme://host/...
func pastHost(prefix string) bool {
	_, after, ok := strings.Cut(prefix, "://")
	return ok && strings.ContainsAny(after, "/?")
}

// static reports whether the template has no placeholders.
func (t *urlTemplate) static() bool {
	return len(t.parts) <= 1 && (len(t.parts) == 0 || t.parts[0].eval == nil)
}

// render evaluates the placeholders over doc. Errors name the placeholder's
// source, never its value.
func (t *urlTemplate) render(doc map[string]any) (string, error) {
	var b strings.Builder
	var in map[string]any
	for _, p := range t.parts {
		if p.eval == nil {
			b.WriteString(p.lit)
			continue
		}
		if in == nil {
			in = map[string]any{"doc": doc}
		}
		v, err := p.eval.String(in)
		if err != nil {
			return "", fmt.Errorf("url placeholder {{ %s }} failed to evaluate", p.src)
		}
		if v == "" {
			return "", fmt.Errorf("url placeholder {{ %s }} is empty", p.src)
		}
		if p.query {
			b.WriteString(url.QueryEscape(v))
		} else if v == "." || v == ".." {
			return "", fmt.Errorf("url placeholder {{ %s }} is a dot segment", p.src)
		} else {
			b.WriteString(url.PathEscape(v))
		}
	}
	return b.String(), nil
}
