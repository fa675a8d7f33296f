package mapping

import (
	"errors"
	"strconv"
	"strings"
)

// Error is a compile error: it names the file, the position of the offending
// YAML node (or of the character inside an expression when that can be known)
// and the path of the key, e.g. "fields.body.template".
type Error struct {
	File      string
	Line, Col int
	Path      string
	Msg       string
}

// Error formats as "file:line:col: path: msg". Parts that are unknown are left
// out (a YAML syntax error has a line but no column; CompileExpr's errors have
// no position at all, the caller adds it).
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" || e.Line > 0 {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Line))
			if e.Col > 0 {
				b.WriteByte(':')
				b.WriteString(strconv.Itoa(e.Col))
			}
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ApplyError is an error applying a mapping to one input. It is permanent: the
// same input and mapping always fail the same way, so the pipeline must not
// retry. Path is the output path ("to", "patient.name", "lines[2].sku").
//
// Reasons never quote payload values (names, phones) so that they are safe to
// log and to store as a delivery's failure reason; the one exception is the
// value missing from a lookup, which is an enum-like code by construction.
type ApplyError struct {
	Path   string
	Reason string
}

func (e *ApplyError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// maxErrors bounds how many compile errors one Compile reports; past that the
// rest are usually consequences of the first ones.
const maxErrors = 20

// errorList collects compile errors in document order.
type errorList struct {
	errs []*Error
}

func (l *errorList) add(e *Error) {
	if len(l.errs) < maxErrors {
		l.errs = append(l.errs, e)
	}
}

// err returns nil, the single *Error, or all of them joined (errors.As still
// finds the first *Error).
func (l *errorList) err() error {
	switch len(l.errs) {
	case 0:
		return nil
	case 1:
		return l.errs[0]
	}
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// suggest returns ` (did you mean "x"?)` when one of the candidates is close to
// word, else "".
func suggest(word string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		limit := 2
		if len(c) <= 3 || len(word) <= 3 {
			limit = 1
		}
		if d := editDistance(strings.ToLower(word), strings.ToLower(c)); d <= limit && d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	return ` (did you mean "` + best + `"?)`
}

// editDistance is the optimal-string-alignment distance: Levenshtein plus
// adjacent transpositions, so "form" is one edit from "from".
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 99
	}
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
