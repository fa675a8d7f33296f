// Package pipeline turns accepted events into deliveries and runs them: route
// matching, `when`, `key` and `at`, cancellation and replacement of scheduled
// deliveries, the delivery worker, and the retry policy. It is the only place
// a connector's error class becomes a queue decision.
package pipeline

import (
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/mapping"
)

// Route is a compiled route.
type Route struct {
	Name     string
	From     string
	Events   []string // empty: every type
	When     *mapping.Expr
	Key      *mapping.Expr
	At       *mapping.Expr
	CancelOn []string
	Map      *mapping.Program
	To       string // sink connector name
	Sink     connectors.Sink
	Action   connectors.Action
	Retry    Retry
}

// Retry bounds a route's retries.
type Retry struct {
	MaxAttempts int
	MaxAge      time.Duration
	Backoff     []time.Duration
}

// DefaultMaxAttempts is one first attempt plus the seven default retries.
const DefaultMaxAttempts = 8

func (r *Route) takes(ev *connectors.Event) bool {
	return r.From == ev.Source && (len(r.Events) == 0 || slices.Contains(r.Events, ev.Type))
}

func (r *Route) cancelledBy(ev *connectors.Event) bool {
	return r.From == ev.Source && slices.Contains(r.CancelOn, ev.Type)
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// DeliveryID derives a delivery's id from (source, event id, route): stable,
// so a re-planned delivery is the same row, and the basis of the idempotency
// key sinks send.
func DeliveryID(source, eventID, route string) string {
	h := sha256.New()
	for _, s := range []string{source, eventID, route} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "dlv_" + idEncoding.EncodeToString(h.Sum(nil)[:15])
}

// IdempotencyKey is what a sink sends to a remote that dedupes by key.
func IdempotencyKey(deliveryID string) string { return "clinicbridge-" + deliveryID }
