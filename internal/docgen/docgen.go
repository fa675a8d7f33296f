// Package docgen writes the config reference (docs/reference.md) from the
// same field declarations that strict decoding and the JSON Schema use, so
// the docs cannot drift from the code. TestReferenceUpToDate keeps the
// checked-in file current: `go test ./internal/docgen -update` rewrites it.
package docgen

import (
	"fmt"
	"strings"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
)

// Reference renders the config reference in Markdown.
func Reference(reg *connectors.Registry) string {
	var b strings.Builder
	b.WriteString("# Config reference\n\n")
	b.WriteString("Generated from the code's field declarations (`go test ./internal/docgen -update`); do not edit by hand.\n")
	b.WriteString("Keys are snake_case; an unknown key is an error. Values may use `${ENV_VAR}` and `${file:path}`.\n\n")
	b.WriteString("## Top level\n\n")
	fields(&b, config.Spec, "")
	b.WriteString("\n## Connector types\n")
	for _, t := range reg.Types() {
		fmt.Fprintf(&b, "\n### `%s`\n\n%s\n\n", t.Name, t.Doc)
		var can []string
		if t.Source {
			can = append(can, "source (receives webhooks at `/hooks/{name}`)")
		}
		if t.Lister {
			can = append(can, "lister (reconciliation)")
		}
		if t.Sink() {
			can = append(can, "sink")
		}
		fmt.Fprintf(&b, "Can be: %s.\n\n", strings.Join(can, ", "))
		if len(t.Fields) > 0 {
			fields(&b, t.Fields, "")
		}
		if t.Sink() {
			b.WriteString("\nActions (the first is the default):\n\n")
			for _, a := range t.Actions {
				fmt.Fprintf(&b, "- `%s`: %s", a.Name, a.Doc)
				if len(a.Required) > 0 {
					fmt.Fprintf(&b, " Requires fields: %s.", codeList(a.Required))
				}
				if len(a.Optional) > 0 {
					fmt.Fprintf(&b, " Optional: %s.", codeList(a.Optional))
				}
				if a.Idempotent {
					b.WriteString(" Idempotent (the remote dedupes by idempotency key).")
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

func fields(b *strings.Builder, fs []config.Field, prefix string) {
	for _, f := range fs {
		name := prefix + f.Name
		var notes []string
		notes = append(notes, f.Kind.String())
		if f.Or != nil {
			notes[0] += " or " + f.Or.Kind.String()
		}
		if f.Required {
			notes = append(notes, "required")
		}
		if f.Default != "" {
			notes = append(notes, "default `"+f.Default+"`")
		}
		if len(f.Enum) > 0 {
			notes = append(notes, "one of "+codeList(f.Enum))
		}
		if f.Secret {
			notes = append(notes, "secret: use ${ENV} or ${file:...}")
		}
		if f.OneOf {
			notes = append(notes, "set exactly one key")
		}
		fmt.Fprintf(b, "- `%s` (%s)", name, strings.Join(notes, ", "))
		if f.Doc != "" {
			fmt.Fprintf(b, ": %s", f.Doc)
		}
		if f.Example != "" {
			fmt.Fprintf(b, " Example: `%s`.", f.Example)
		}
		b.WriteString("\n")
		sub := f.Fields
		if f.Or != nil && len(sub) == 0 {
			sub = f.Or.Fields
		}
		if len(sub) > 0 {
			fields(b, sub, name+".")
		}
	}
}

func codeList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = "`" + s + "`"
	}
	return strings.Join(q, ", ")
}
