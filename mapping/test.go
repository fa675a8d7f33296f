package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Test is one entry of a mapping's tests: section.
type Test struct {
	Name        string
	Input       map[string]any // inline input, or nil
	InputFile   string         // as written; the caller resolves it relative to the mapping file and reads it (mapping does no I/O)
	Expect      any            // nil when the test expects an error
	ExpectError string         // substring the Apply error must contain
	Line        int            // line of the test in its file
}

// TestResult is the outcome of Test.Run.
type TestResult struct {
	Pass   bool
	Output map[string]any
	Err    error
	Diff   string // readable, line-oriented ("- expected\n+ got" per differing JSON path), empty when Pass
}

// inputKeys are the keys a test input may have (the mapping input document).
var inputKeys = []string{"event", "payload", "needs"}

// tests compiles the tests: section.
func (cp *compiler) tests(n *yaml.Node) []Test {
	if n.Kind != yaml.SequenceNode {
		cp.errAt(n, "tests", "want a list of tests")
		return nil
	}
	var out []Test
	for i, item := range n.Content {
		path := fmt.Sprintf("tests[%d]", i)
		item = resolve(item)
		if item == nil || item.Kind != yaml.MappingNode {
			cp.errAt(n.Content[i], path, "want a test: {name, input or input_file, expect or expect_error}")
			continue
		}
		t := Test{Line: item.Line, Name: path}
		keys := map[string]*yaml.Node{}
		cp.pairs(item, path, func(k, v *yaml.Node) {
			p := path + "." + k.Value
			keys[k.Value] = k
			switch k.Value {
			case "name":
				t.Name, _ = cp.scalarString(v, p, "a name")
			case "input":
				t.Input = cp.testInput(v, p)
			case "input_file":
				if s, ok := cp.scalarString(v, p, "a file path"); ok {
					if s == "" {
						cp.errAt(v, p, "want a file path")
					}
					t.InputFile = s
				}
			case "expect":
				if v.Kind != yaml.MappingNode {
					cp.errAt(v, p, "want the whole expected output object")
					return
				}
				t.Expect, _ = cp.literal(v, false, p)
			case "expect_error":
				if s, ok := cp.scalarString(v, p, "part of the expected error message"); ok {
					if s == "" {
						cp.errAt(v, p, "want part of the expected error message")
					}
					t.ExpectError = s
				}
			default:
				cp.errAt(k, path, fmt.Sprintf("unknown key %q", truncate(k.Value, 64))+suggest(k.Value, testKeys))
			}
		})
		switch {
		case keys["input"] != nil && keys["input_file"] != nil:
			cp.errAt(keys["input_file"], path+".input_file", "both input and input_file given: want one")
		case keys["input"] == nil && keys["input_file"] == nil:
			cp.errAt(item, path, "want input or input_file")
		}
		switch {
		case keys["expect"] != nil && keys["expect_error"] != nil:
			cp.errAt(keys["expect_error"], path+".expect_error", "both expect and expect_error given: want one")
		case keys["expect"] == nil && keys["expect_error"] == nil:
			cp.errAt(item, path, "want expect or expect_error")
		}
		out = append(out, t)
	}
	return out
}

// testInput converts an inline input with numbers as float64, exactly as the
// pipeline's encoding/json-decoded payloads, so functions see the same types.
func (cp *compiler) testInput(n *yaml.Node, path string) map[string]any {
	if n.Kind != yaml.MappingNode {
		cp.errAt(n, path, "want an object {event: ..., payload: ...}")
		return nil
	}
	ok := true
	cp.pairs(n, path, func(k, _ *yaml.Node) {
		if !contains(inputKeys, k.Value) {
			cp.errAt(k, path, fmt.Sprintf("unknown key %q", truncate(k.Value, 64))+suggest(k.Value, inputKeys)+" (want event, payload)")
			ok = false
		}
	})
	v, convOK := cp.literal(n, true, path)
	m, _ := v.(map[string]any)
	if !ok || !convOK {
		return nil
	}
	return m
}

// Run applies p to input and checks the test's expectation. Pure. A nil input
// means the test's inline Input.
func (t Test) Run(p *Program, input map[string]any) TestResult {
	if p == nil {
		return TestResult{Err: errors.New("mapping: no program"), Diff: "- a compiled mapping\n+ nil"}
	}
	if input == nil {
		input = t.Input
	}
	out, err := p.Apply(input)
	res := TestResult{Output: out, Err: err}
	if t.ExpectError != "" {
		switch {
		case err == nil:
			res.Diff = fmt.Sprintf("- error containing %q\n+ no error, output: %s", t.ExpectError, compactJSON(out))
		case !strings.Contains(err.Error(), t.ExpectError):
			res.Diff = fmt.Sprintf("- error containing %q\n+ error: %s", t.ExpectError, err)
		default:
			res.Pass = true
		}
		return res
	}
	if err != nil {
		res.Diff = fmt.Sprintf("- output: %s\n+ error: %s", compactJSON(t.Expect), err)
		return res
	}
	want, werr := normalize(t.Expect)
	got, gerr := normalize(out)
	if werr != nil || gerr != nil {
		res.Diff = fmt.Sprintf("- output: %s\n+ output that cannot be encoded as JSON: %v", compactJSON(t.Expect), firstErr(werr, gerr))
		return res
	}
	var lines []string
	diff(&lines, "", want, got)
	res.Diff = strings.Join(lines, "\n")
	res.Pass = res.Diff == ""
	return res
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// normalize round-trips v through JSON so that an int in the expectation and
// a float64 in the output, or a time.Time and its RFC 3339 text, compare equal
// exactly when the sink would receive the same bytes.
func normalize(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}
