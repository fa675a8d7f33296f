package connectors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Inbound errors: the server maps them to status codes.
var (
	ErrUnauthorized = errors.New("unauthorized") // 401, nothing stored
	ErrMalformed    = errors.New("malformed")    // 400
)

// Class says what kind of failure a sink call was. The pipeline, and only the
// pipeline, turns a class into a queue decision.
type Class int

const (
	// Transient: the remote may succeed later (network, timeout before send, 5xx, 408).
	Transient Class = iota
	// Permanent: retrying cannot help (validation, 4xx, provider codes known to be final).
	Permanent
	// Auth: credentials are wrong or revoked; retrying burns attempts for nothing.
	Auth
	// RateLimited: the remote asked us to slow down, with RetryAfter when it said.
	RateLimited
	// Ambiguous: the request may have been acted on (a timeout after sending);
	// safe to retry only where the remote dedupes by idempotency key.
	Ambiguous
	// Skip: the delivery must not be sent and that is not a failure (the
	// recipient opted out); it is recorded as skipped with Code as the reason.
	Skip
	// Paused: the connector cannot work until an operator acts (revoked
	// OAuth grant: "reconnect Xero"); deliveries wait without using attempts.
	Paused
)

func (c Class) String() string {
	switch c {
	case Permanent:
		return "permanent"
	case Auth:
		return "auth"
	case RateLimited:
		return "rate_limited"
	case Ambiguous:
		return "ambiguous"
	case Skip:
		return "skip"
	case Paused:
		return "paused"
	default:
		return "transient"
	}
}

// Error is a classified sink failure. Msg must never carry payload values or
// secrets: it is logged and shown in `deliveries show`.
type Error struct {
	Class      Class
	Provider   string // connector type, e.g. "twilio"
	Code       string // the provider's error code, e.g. "21610"
	HTTPStatus int
	RetryAfter time.Duration
	Msg        string
	Err        error
}

func (e *Error) Error() string {
	s := e.Provider
	if e.HTTPStatus != 0 {
		s += fmt.Sprintf(" %d", e.HTTPStatus)
	}
	if e.Code != "" {
		s += " code " + e.Code
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err. Unclassified errors are transient unless
// they are timeouts, which are ambiguous: the remote may have acted.
func ClassOf(err error) Class {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Class
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Ambiguous
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Ambiguous
	}
	return Transient
}

// RetryAfterOf returns the wait the remote asked for, or 0.
func RetryAfterOf(err error) time.Duration {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.RetryAfter
	}
	return 0
}

// ClassifyStatus is the shared HTTP status table (guarantee 5): 408, 425, 429 and
// 5xx may succeed later; 401 and 403 are credentials; other 4xx and 3xx are final.
// Connectors with provider codes refine it.
func ClassifyStatus(status int) Class {
	switch {
	case status == http.StatusTooManyRequests:
		return RateLimited
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status >= 500:
		return Transient
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return Auth
	case status >= 300:
		// Other 4xx are final; a redirect means the configured URL is wrong,
		// which retrying will not fix.
		return Permanent
	default:
		return Transient
	}
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// HTTPError classifies a non-2xx response. msg is the provider's error message
// with payload values already kept out of it.
func HTTPError(provider string, resp *http.Response, code, msg string) *Error {
	return &Error{
		Class:      ClassifyStatus(resp.StatusCode),
		Provider:   provider,
		Code:       code,
		HTTPStatus: resp.StatusCode,
		RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Msg:        msg,
	}
}
