package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/mapping"
)

func testCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "test [mapping files...]",
		Short: "Run the tests: entries of every mapping the config uses, and of the files given",
		RunE: func(cmd *cobra.Command, files []string) error {
			type suite struct {
				name string
				dir  string
				prog *mapping.Program
			}
			var suites []suite
			useConfig := len(files) == 0 || cmd.Flags().Changed("config")
			if useConfig {
				a, err := load(g, zerolog.Nop())
				if err != nil {
					return err
				}
				defer a.Close()
				names := make([]string, 0, len(a.Mappings))
				for f := range a.Mappings {
					names = append(names, f)
				}
				sort.Strings(names)
				for _, f := range names {
					suites = append(suites, suite{rel(f), filepath.Dir(f), a.Mappings[f]})
				}
				for _, r := range a.Routes {
					if r.Map != nil && !contains(a.Mappings, r.Map) {
						suites = append(suites, suite{"route " + r.Name, a.Config.Dir, r.Map})
					}
				}
			}
			for _, f := range files {
				src, err := os.ReadFile(f)
				if err != nil {
					return usageErr(err)
				}
				prog, err := mapping.Compile(src, f)
				if err != nil {
					return usageErr(err)
				}
				suites = append(suites, suite{f, filepath.Dir(f), prog})
			}
			out := cmd.OutOrStdout()
			passed, failed := 0, 0
			for _, s := range suites {
				for _, t := range s.prog.Tests() {
					input := t.Input
					if t.InputFile != "" {
						var err error
						if input, err = readInput(filepath.Join(s.dir, t.InputFile)); err == nil {
							input = asMappingInput(input, "", "")
						}
						if err != nil {
							fmt.Fprintf(out, "FAIL %s: %s\n     %v\n", s.name, t.Name, err)
							failed++
							continue
						}
					}
					res := t.Run(s.prog, input)
					if res.Pass {
						fmt.Fprintf(out, "ok   %s: %s\n", s.name, t.Name)
						passed++
						continue
					}
					failed++
					fmt.Fprintf(out, "FAIL %s: %s (line %d)\n", s.name, t.Name, t.Line)
					fmt.Fprintln(out, indent(res.Diff))
				}
			}
			fmt.Fprintf(out, "%d passed, %d failed\n", passed, failed)
			if failed > 0 {
				return failureErr(fmt.Errorf("%d mapping test(s) failed", failed))
			}
			return nil
		},
	}
}

func contains(m map[string]*mapping.Program, p *mapping.Program) bool {
	for _, v := range m {
		if v == p {
			return true
		}
	}
	return false
}

func rel(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, p); err == nil {
			return r
		}
	}
	return p
}

func indent(s string) string {
	return "     " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n     ")
}

func readInput(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %w", path, err)
	}
	return v, nil
}

// asMappingInput returns raw as a mapping input document: as it is when it
// already is one ({"event": {...}, "payload": ...}), else wrapped as the
// payload of a dry-run event of type typ.
func asMappingInput(raw map[string]any, typ, source string) map[string]any {
	if _, ok := raw["event"].(map[string]any); ok {
		if _, ok := raw["payload"]; ok {
			return raw
		}
	}
	now := time.Now().UTC().Format(time.RFC3339)
	return map[string]any{
		"event":   map[string]any{"id": "dry-run", "type": typ, "source": source, "key": "", "received_at": now, "occurred_at": now},
		"payload": raw,
	}
}

func mapCmd(g *globals) *cobra.Command {
	var route, mappingFile, inputFile string
	cmd := &cobra.Command{
		Use:   "map",
		Short: "Dry-run one input through a route or a mapping and print the result",
		Long: `Dry-run one input through a route (-c config --route NAME) or a mapping file
(--mapping FILE). The input is either a mapping input document
({"event": {...}, "payload": {...}}) or a bare provider payload, which is
wrapped as the payload of an event of the route's first event type.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inputFile == "" || (route == "") == (mappingFile == "") {
				return usageErr(fmt.Errorf("give --input and one of --route or --mapping"))
			}
			raw, err := readInput(inputFile)
			if err != nil {
				return usageErr(err)
			}
			var r *pipeline.Route
			if route != "" {
				a, err := load(g, zerolog.Nop())
				if err != nil {
					return err
				}
				defer a.Close()
				var ok bool
				if r, ok = a.Route(route); !ok {
					return usageErr(fmt.Errorf("no route named %q", route))
				}
			} else {
				src, err := os.ReadFile(mappingFile)
				if err != nil {
					return usageErr(err)
				}
				prog, err := mapping.Compile(src, mappingFile)
				if err != nil {
					return usageErr(err)
				}
				r = &pipeline.Route{Map: prog}
			}
			typ := ""
			if len(r.Events) > 0 {
				typ = r.Events[0]
			}
			input := asMappingInput(raw, typ, r.From)
			result := map[string]any{}
			failed := false
			if r.When != nil {
				ok, err := r.When.Bool(input)
				result["when"] = ok
				if err != nil {
					result["when"], failed = "error: "+err.Error(), true
				}
			}
			if r.Key != nil {
				k, err := r.Key.String(input)
				result["key"] = k
				if err != nil {
					result["key"], failed = "error: "+err.Error(), true
				}
			}
			if r.At != nil {
				at, err := r.At.Time(input)
				result["at"] = at.UTC().Format(time.RFC3339)
				if err != nil {
					result["at"], failed = "error: "+err.Error(), true
				}
			}
			doc, err := r.Map.Apply(input)
			if err != nil {
				result["error"], failed = err.Error(), true
			} else {
				result["document"] = doc
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(result); err != nil {
				return err
			}
			if failed {
				return failureErr(fmt.Errorf("mapping failed"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&route, "route", "", "route name in the config")
	cmd.Flags().StringVar(&mappingFile, "mapping", "", "mapping file")
	cmd.Flags().StringVar(&inputFile, "input", "", "JSON input file")
	return cmd
}

func schemaCmd() *cobra.Command {
	var which string
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of config files (or --mapping files) for editors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeSchema(cmd.OutOrStdout(), which)
		},
	}
	cmd.Flags().StringVar(&which, "for", "config", "config | mapping")
	return cmd
}

func writeSchema(w io.Writer, which string) error {
	var s map[string]any
	switch which {
	case "config":
		s = ConfigSchema()
	case "mapping":
		s = mapping.JSONSchema()
	default:
		return usageErr(fmt.Errorf("--for config or --for mapping"))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// ConfigSchema is the config schema with every shipped connector type.
func ConfigSchema() map[string]any {
	types := map[string][]config.Field{}
	for _, t := range all.Registry().Types() {
		types[t.Name] = t.Fields
	}
	return config.Schema(types, mapping.JSONSchema())
}
