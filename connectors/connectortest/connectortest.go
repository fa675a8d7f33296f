// Package connectortest is the contract every connector and its fake must
// meet. A connector's tests build it against its fake and call RunSink and/or
// RunSource; later connectors reuse the same checks, so a status code, a
// replay or a leaked secret is judged the same way everywhere.
package connectortest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// RetryAfter is what the suite scripts with 429 and expects back in
// connectors.RetryAfterOf.
const RetryAfter = 2 * time.Second

// StatusTable is the shared expectation for HTTP statuses (guarantee 5).
// A connector whose provider refines it (a known-final code on a 5xx, say)
// overrides rows with SinkHarness.StatusTable.
func StatusTable() map[int]connectors.Class {
	return map[int]connectors.Class{
		400: connectors.Permanent,
		404: connectors.Permanent,
		422: connectors.Permanent,
		401: connectors.Auth,
		403: connectors.Auth,
		408: connectors.Transient,
		500: connectors.Transient,
		502: connectors.Transient,
		503: connectors.Transient,
		504: connectors.Transient,
		429: connectors.RateLimited,
	}
}

// SinkHarness is one sink built against its fake. The suite drives that one
// fake through its checks in order (they share its script), varying the
// sample's DeliveryID and IdempotencyKey per check so replays of earlier
// checks never answer later ones.
type SinkHarness struct {
	// Sink is built against the fake.
	Sink connectors.Sink
	// Delivery is a sample the fake accepts with its default answer.
	Delivery connectors.Delivery
	// Script makes the fake answer the next request with status and, when
	// retryAfter > 0, a Retry-After header in whole seconds. nil means the
	// sink does not speak HTTP (file) and the status table is skipped.
	Script func(status int, retryAfter time.Duration)
	// Effects counts the actions the fake has applied, replays excluded. Set
	// it for sinks that send Delivery.IdempotencyKey to a remote that dedupes
	// by it; nil skips the idempotency check.
	Effects func() int
	// ExternalID says the sink reports the remote's id for what it created
	// (Receipt.ExternalID) on the fake's default answer.
	ExternalID bool
	// StatusTable overrides rows of StatusTable() for this provider.
	StatusTable map[int]connectors.Class
	// Secrets are config values (tokens, passwords) no error may contain.
	Secrets []string
	// PayloadValues no error may contain. Every string of four or more
	// characters in Delivery.Document is added.
	PayloadValues []string
}

// RunSink runs the sink contract.
func RunSink(t *testing.T, h SinkHarness) {
	t.Helper()
	require.NotNil(t, h.Sink, "SinkHarness.Sink")
	forbidden := append(append([]string{}, h.Secrets...), h.PayloadValues...)
	forbidden = append(forbidden, StringLeaves(h.Delivery.Document, 4)...)
	n := 0
	next := func(name string) connectors.Delivery {
		n++
		d := h.Delivery
		d.DeliveryID = fmt.Sprintf("%s-%s-%d", orDefault(d.DeliveryID, "dlv"), name, n)
		d.IdempotencyKey = fmt.Sprintf("%s-%s-%d", orDefault(d.IdempotencyKey, "idem"), name, n)
		return d
	}
	do := func(t *testing.T, d connectors.Delivery) (connectors.Receipt, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rc, err := h.Sink.Do(ctx, d)
		if err != nil {
			NoLeak(t, err, forbidden...)
		}
		return rc, err
	}

	t.Run("success yields a receipt", func(t *testing.T) {
		rc, err := do(t, next("success"))
		require.NoError(t, err)
		if h.ExternalID {
			require.NotEmpty(t, rc.ExternalID, "Receipt.ExternalID")
		}
	})

	if h.Script != nil {
		table := StatusTable()
		for status, class := range h.StatusTable {
			table[status] = class
		}
		statuses := make([]int, 0, len(table))
		for s := range table {
			statuses = append(statuses, s)
		}
		sort.Ints(statuses)
		for _, status := range statuses {
			want := table[status]
			t.Run(fmt.Sprintf("status %d is %s", status, want), func(t *testing.T) {
				var ra time.Duration
				if status == http.StatusTooManyRequests {
					ra = RetryAfter
				}
				h.Script(status, ra)
				_, err := do(t, next(fmt.Sprint(status)))
				require.Error(t, err)
				require.Equal(t, want, connectors.ClassOf(err), "class of %v", err)
				var ce *connectors.Error
				require.ErrorAs(t, err, &ce)
				require.Equal(t, status, ce.HTTPStatus)
				if status == http.StatusTooManyRequests {
					require.Equal(t, RetryAfter, connectors.RetryAfterOf(err), "Retry-After honoured")
				}
			})
		}
		t.Run("a failure then a success", func(t *testing.T) {
			d := next("retry")
			h.Script(http.StatusServiceUnavailable, 0)
			_, err := do(t, d)
			require.Error(t, err)
			_, err = do(t, d)
			require.NoError(t, err, "the same delivery succeeds once the remote recovers")
		})
	}

	if h.Effects != nil {
		t.Run("the same delivery twice has one effect", func(t *testing.T) {
			d := next("idempotent")
			before := h.Effects()
			first, err := do(t, d)
			require.NoError(t, err)
			second, err := do(t, d)
			require.NoError(t, err)
			require.Equal(t, before+1, h.Effects(), "one effect for one idempotency key")
			require.Equal(t, first.ExternalID, second.ExternalID, "a replay answers with the first result")
		})
	}
}

// SourceHarness is one source and a way to sign requests for it.
type SourceHarness struct {
	Source connectors.Source
	// Body is a sample webhook body the source turns into events.
	Body []byte
	// Sign returns a request carrying body, signed now with the configured secret.
	Sign func(t *testing.T, body []byte) *connectors.Request
	// SignWrongSecret returns a request carrying body signed with another secret.
	SignWrongSecret func(t *testing.T, body []byte) *connectors.Request
	// SignatureHeaders are the headers the scheme needs; each is removed in turn.
	SignatureHeaders []string
	// SignStale returns a request signed outside the replay tolerance; nil
	// when the scheme signs no timestamp.
	SignStale func(t *testing.T, body []byte) *connectors.Request
	// Secrets no error may contain.
	Secrets []string
	// PayloadValues no error may contain. Every string of four or more
	// characters in Body (when it is JSON) is added.
	PayloadValues []string
}

// RunSource runs the source contract.
func RunSource(t *testing.T, h SourceHarness) {
	t.Helper()
	require.NotNil(t, h.Source, "SourceHarness.Source")
	require.NotNil(t, h.Sign, "SourceHarness.Sign")
	forbidden := append(append([]string{}, h.Secrets...), h.PayloadValues...)
	forbidden = append(forbidden, JSONStringLeaves(h.Body, 4)...)

	unauthorized := func(t *testing.T, r *connectors.Request) {
		t.Helper()
		err := h.Source.Verify(r)
		require.ErrorIs(t, err, connectors.ErrUnauthorized)
		NoLeak(t, err, forbidden...)
	}

	t.Run("a signed request verifies and parses", func(t *testing.T) {
		r := h.Sign(t, h.Body)
		require.NoError(t, h.Source.Verify(r))
		in, err := h.Source.Parse(r)
		require.NoError(t, err)
		require.NotEmpty(t, in.Events)
		for _, ev := range in.Events {
			require.NotEmpty(t, ev.ID, "event id")
			require.NotEmpty(t, ev.Type, "event type")
		}
	})

	t.Run("the same request parses to the same ids", func(t *testing.T) {
		r := h.Sign(t, h.Body)
		require.NoError(t, h.Source.Verify(r))
		a, err := h.Source.Parse(r)
		require.NoError(t, err)
		b, err := h.Source.Parse(r)
		require.NoError(t, err)
		require.Equal(t, eventIDs(a), eventIDs(b))
	})

	t.Run("a tampered body is unauthorized", func(t *testing.T) {
		r := h.Sign(t, h.Body)
		r.Body = append(append([]byte{}, r.Body...), ' ')
		unauthorized(t, r)

		r = h.Sign(t, h.Body)
		b := append([]byte{}, r.Body...)
		b[len(b)/2] ^= 0x01
		r.Body = b
		unauthorized(t, r)
	})

	if h.SignWrongSecret != nil {
		t.Run("the wrong secret is unauthorized", func(t *testing.T) {
			unauthorized(t, h.SignWrongSecret(t, h.Body))
		})
	}

	for _, name := range h.SignatureHeaders {
		t.Run("missing "+name+" is unauthorized", func(t *testing.T) {
			r := h.Sign(t, h.Body)
			r.Header = r.Header.Clone()
			r.Header.Del(name)
			unauthorized(t, r)
		})
	}

	if h.SignStale != nil {
		t.Run("a stale timestamp is unauthorized", func(t *testing.T) {
			unauthorized(t, h.SignStale(t, h.Body))
		})
	}

	t.Run("a body that is not JSON is malformed", func(t *testing.T) {
		r := h.Sign(t, []byte("this is not json"))
		require.NoError(t, h.Source.Verify(r), "the signature is valid")
		_, err := h.Source.Parse(r)
		require.ErrorIs(t, err, connectors.ErrMalformed)
		NoLeak(t, err, forbidden...)
	})
}

func eventIDs(in connectors.Inbound) []string {
	ids := make([]string, len(in.Events))
	for i, ev := range in.Events {
		ids[i] = ev.ID
	}
	return ids
}

// NoLeak fails t if err's message contains any of values (empty ones are
// ignored). Logs and `deliveries show` print error messages, so they must
// never carry a secret or a patient's data.
func NoLeak(t testing.TB, err error, values ...string) {
	t.Helper()
	if err == nil {
		return
	}
	msgs := []string{err.Error()}
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		msgs = append(msgs, e.Error())
	}
	for _, v := range values {
		if v == "" {
			continue
		}
		for _, m := range msgs {
			require.NotContains(t, m, v, "an error message leaks a secret or payload value")
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// StringLeaves returns every string of at least minLen bytes in v (maps,
// slices and strings, as decoded JSON holds them), sorted.
func StringLeaves(v any, minLen int) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(v) >= minLen {
				out = append(out, v)
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case []string:
			for _, x := range v {
				walk(x)
			}
		case map[string]string:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	sort.Strings(out)
	return out
}

// JSONStringLeaves is StringLeaves over a JSON document; not JSON gives nil.
func JSONStringLeaves(b []byte, minLen int) []string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	return StringLeaves(v, minLen)
}
