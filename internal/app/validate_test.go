package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/internal/app"
)

// smsType is a sink whose action requires fields, as real messaging sinks do.
func smsType() connectors.Type {
	return connectors.Type{
		Name:    "sms",
		Doc:     "test sink",
		Fields:  []config.Field{{Name: "from", Kind: config.KindString}},
		Actions: []connectors.Action{{Name: "send_sms", Required: []string{"to", "body"}}},
		Build: func(*yaml.Node, connectors.Env) (any, error) {
			return sinkFunc(func(context.Context, connectors.Delivery) (connectors.Receipt, error) {
				return connectors.Receipt{}, nil
			}), nil
		},
	}
}

type sinkFunc func(context.Context, connectors.Delivery) (connectors.Receipt, error)

func (f sinkFunc) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	return f(ctx, d)
}

func registry() *connectors.Registry {
	r := all.Registry()
	r.Register(smsType())
	return r
}

const validBase = `version: 1
connectors:
  inbox: {type: webhook, webhook_secret: "whsec_dGVzdC1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZS10ZXN0cw=="}
  sms: {type: sms, from: "+447700900000"}
routes:
  - name: confirm
    from: inbox
    when: 'payload.data.phone != nil'
    map:
      fields:
        to: {from: payload.data.phone}
        body: {value: hi}
    to: sms
`

func loadErr(t *testing.T, cfg string, files map[string]string, env map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
	}
	path := filepath.Join(dir, "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	a, err := app.Load(path, registry(), config.Options{Env: lookup}, zerolog.Nop())
	if err == nil {
		a.Close()
		return ""
	}
	errs := config.AsErrors(err)
	require.Len(t, errs, 1, "want exactly one error, got:\n%v", err)
	return strings.TrimPrefix(errs[0].Error(), path)
}

func TestValidateErrors(t *testing.T) {
	t.Parallel()
	require.Empty(t, loadErr(t, validBase, nil, nil), "the base config is valid")

	cases := []struct {
		name  string
		edit  func(string) string
		files map[string]string
		want  string // the error after the file name
	}{
		{"misspelled key", func(s string) string { return strings.Replace(s, "    when:", "    wehn:", 1) },
			nil, `:8:5: routes[0].wehn: unknown key (did you mean "when"?)`},
		{"unset variable", func(s string) string {
			return strings.Replace(s, `"whsec_dGVzdC1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZS10ZXN0cw=="`, `"${INBOX_SECRET}"`, 1)
		}, nil, `:3:42: connectors.inbox.webhook_secret: environment variable INBOX_SECRET is not set`},
		{"unknown connector type", func(s string) string { return strings.Replace(s, "type: sms,", "type: smss,", 1) },
			nil, `:4:15: connectors.sms.type: unknown connector type "smss" (known: file, http, poll, sms, webhook)`}, // the list grows with connectors/all
		{"route names a missing connector", func(s string) string { return strings.Replace(s, "    to: sms", "    to: smsx", 1) },
			nil, `:13:9: routes[0].to: no connector named "smsx" (did you mean "sms"?)`},
		{"bad expression", func(s string) string {
			return strings.Replace(s, "payload.data.phone != nil", "payload.data.phone !=", 1)
		},
			nil, `:8:32: routes[0].when: unexpected token EOF`},
		{"mapping lacks a required field", func(s string) string { return strings.Replace(s, "        body: {value: hi}\n", "", 1) },
			nil, `:10:7: routes[0].map: the mapping does not produce "body", which sms action send_sms requires (it produces: [to])`},
		{"mapping file with a bad function", func(s string) string {
			return strings.Replace(s, "    map:\n      fields:\n        to: {from: payload.data.phone}\n        body: {value: hi}\n", "    map: m.yaml\n", 1)
		}, map[string]string{"m.yaml": "fields:\n  to: {from: payload.data.phone}\n  body: {expr: 'frist_name(payload.data.name)'}\n"},
			`m.yaml:3:17: fields.body.expr: unknown function "frist_name" (did you mean "first_name"?)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := loadErr(t, c.edit(validBase), c.files, nil)
			require.NotEmpty(t, got, "expected an error")
			want := c.want
			if i := strings.Index(want, "(known: "); i >= 0 {
				want = want[:i+len("(known: ")] // the list grows with connectors/all
				got = got[:min(len(got), len(want))]
			}
			require.True(t, strings.HasSuffix(got, want), "got %q, want %q", got, want)
		})
	}
}

func TestValidateWarnsWhenTheWholePayloadLeaves(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "clinicbridge.yaml")
	cfg := strings.Replace(validBase, "        body: {value: hi}\n", "        body: {value: hi}\n        everything: {from: payload}\n", 1)
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	a, err := app.Load(path, registry(), config.Options{}, zerolog.Nop())
	require.NoError(t, err)
	defer a.Close()
	require.Len(t, a.Warnings, 1)
	require.Contains(t, a.Warnings[0], "routes[0].map: fields [everything] send the whole payload to sms")
}
