package webhook

import (
	"time"

	"github.com/clinicbridge/clinicbridge/mapping"
)

// evaluator is what the event expressions (id, type, key, occurred_at) need.
type evaluator interface {
	String(input map[string]any) (string, error)
	Time(input map[string]any) (time.Time, error)
}

// compileExpr compiles an event expression over the variables `headers`
// (lower-cased header name -> first value) and `payload` (the decoded body).
func compileExpr(src string) (evaluator, error) {
	return mapping.CompileExpr(src, "headers", "payload")
}
