package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Lookup finds an environment variable; tests pass their own.
type Lookup func(name string) (string, bool)

// expand replaces ${VAR} and ${file:path} in every scalar below n. `$${` is a
// literal `${`. An unset variable or unreadable file is an error naming it and
// where it is used; the value itself is never printed, since it is usually a secret.
func expand(file, dir string, n *yaml.Node, env Lookup, path string) []error {
	var errs []error
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = path + "[" + strconv.Itoa(i) + "]"
			}
			errs = append(errs, expand(file, dir, c, env, p)...)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, expand(file, dir, n.Content[i+1], env, join(path, n.Content[i].Value))...)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		out, err := expandString(n.Value, dir, env)
		if err != nil {
			return []error{Errorf(file, n, path, "%v", err)}
		}
		n.Value = out
		// A plain scalar resolves its type again (so `port: ${PORT}` is an int);
		// a quoted one stays a string.
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			n.Tag = ""
		}
	}
	return errs
}

type expandError string

func (e expandError) Error() string { return string(e) }

func expandString(s, dir string, env Lookup) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' { // $${ -> literal ${
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", expandError("unterminated ${ (write $${ for a literal ${)")
		}
		b.WriteString(s[:i])
		ref := s[i+2 : i+j]
		s = s[i+j+1:]
		if p, ok := strings.CutPrefix(ref, "file:"); ok {
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return "", expandError("${file:" + strings.TrimPrefix(ref, "file:") + "}: cannot read the file: " + errText(err))
			}
			b.WriteString(strings.TrimRight(string(data), "\r\n"))
			continue
		}
		if ref == "" || strings.ContainsAny(ref, " \t{$") {
			return "", expandError("invalid reference ${" + ref + "}")
		}
		v, ok := env(ref)
		if !ok {
			return "", expandError("environment variable " + ref + " is not set")
		}
		b.WriteString(v)
	}
}

func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}
