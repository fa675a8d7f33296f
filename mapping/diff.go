package mapping

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
)

// diff appends "- path: want" / "+ path: got" line pairs for every JSON path
// where want and got differ, descending into objects and arrays.
func diff(lines *[]string, path string, want, got any) {
	switch w := want.(type) {
	case map[string]any:
		if g, ok := got.(map[string]any); ok {
			keys := make([]string, 0, len(w)+len(g))
			for k := range w {
				keys = append(keys, k)
			}
			for k := range g {
				if _, ok := w[k]; !ok {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				wv, wok := w[k]
				gv, gok := g[k]
				p := childPath(path, k)
				switch {
				case !wok:
					*lines = append(*lines, "- "+p+": (missing)", "+ "+p+": "+compactJSON(gv))
				case !gok:
					*lines = append(*lines, "- "+p+": "+compactJSON(wv), "+ "+p+": (missing)")
				default:
					diff(lines, p, wv, gv)
				}
			}
			return
		}
	case []any:
		if g, ok := got.([]any); ok {
			for i := 0; i < max(len(w), len(g)); i++ {
				p := path + "[" + strconv.Itoa(i) + "]"
				switch {
				case i >= len(w):
					*lines = append(*lines, "- "+p+": (missing)", "+ "+p+": "+compactJSON(g[i]))
				case i >= len(g):
					*lines = append(*lines, "- "+p+": "+compactJSON(w[i]), "+ "+p+": (missing)")
				default:
					diff(lines, p, w[i], g[i])
				}
			}
			return
		}
	}
	if !reflect.DeepEqual(want, got) {
		p := path
		if p == "" {
			p = "(document)"
		}
		*lines = append(*lines, "- "+p+": "+compactJSON(want), "+ "+p+": "+compactJSON(got))
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func childPath(path, key string) string {
	if !identRE.MatchString(key) {
		return path + "[" + fmt.Sprintf("%q", key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}
