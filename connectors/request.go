package connectors

import (
	"bytes"
	"net/http"
	"strings"
)

// Header reads header name from h, tolerating keys that are not in canonical
// form (tests and some proxies build headers by hand).
func Header(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// IsJSONObject reports whether b starts, after white space, like a JSON object.
func IsJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}
