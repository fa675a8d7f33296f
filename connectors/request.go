package connectors

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"time"
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

// Sleep waits d, or until ctx ends (returning its error): the wait before
// asking a rate-limited list API again.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
