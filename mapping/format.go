package mapping

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// typeName names a value's JSON type for error messages. Messages name types,
// never values: values are patient data.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, json.Number:
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case time.Time:
		return "time"
	case time.Duration:
		return "duration"
	}
	return fmt.Sprintf("%T", v)
}

// toFloat converts any Go number to float64.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case float32:
		return float64(n), true
	case int8:
		return float64(n), true
	case int16:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint8:
		return float64(n), true
	case uint16:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// appendFloat writes a number the way a person would: 3 not 3.0 or 3e+00,
// 0.1 not 1e-01. Only very large magnitudes fall back to exponent form.
func appendFloat(dst []byte, f float64) []byte {
	if math.Abs(f) < 1e21 {
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// appendScalar appends the plain text form of v and reports whether v was a
// scalar (nil renders as nothing). Objects and arrays are left to the caller.
func appendScalar(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return dst, true
	case string:
		return append(dst, x...), true
	case float64:
		return appendFloat(dst, x), true
	case int:
		return strconv.AppendInt(dst, int64(x), 10), true
	case int64:
		return strconv.AppendInt(dst, x, 10), true
	case bool:
		return strconv.AppendBool(dst, x), true
	case time.Time:
		return x.AppendFormat(dst, time.RFC3339Nano), true
	case json.Number:
		return append(dst, x...), true
	}
	if f, ok := toFloat(v); ok {
		return appendFloat(dst, f), true
	}
	return dst, false
}

// writeValue writes v to b as text: scalars plainly (see appendScalar),
// objects and arrays as compact JSON.
func writeValue(b *strings.Builder, v any) {
	if s, ok := v.(string); ok {
		b.WriteString(s)
		return
	}
	var buf [64]byte
	if out, ok := appendScalar(buf[:0], v); ok {
		b.Write(out)
		return
	}
	if j, err := json.Marshal(v); err == nil {
		b.Write(j)
		return
	}
	fmt.Fprint(b, v)
}

// stringify is writeValue into a new string, used for lookups and String().
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	var b strings.Builder
	writeValue(&b, v)
	return b.String()
}

// isEmpty is the test behind default and required: null or "".
func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	s, ok := v.(string)
	return ok && s == ""
}

// isEmptyForOmit is the wider test behind omit_empty: also [] and {}.
func isEmptyForOmit(v any) bool {
	switch x := v.(type) {
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return isEmpty(v)
}

// truncate shortens s for error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
