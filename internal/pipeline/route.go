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
	// SkipLate records a delivery whose `at` has passed as skipped instead of sending it.
	SkipLate bool
	Quiet    *Quiet
	Needs    *Needs
	Map      *mapping.Program
	To       string // sink connector name
	Sink     connectors.Sink
	Action   connectors.Action
	Retry    Retry
}

// Quiet is a daily window, in a time zone, in which nothing is sent.
type Quiet struct {
	Start, End time.Duration // since local midnight
	Loc        *time.Location
}

// Defer returns t, or the end of the quiet window if t falls inside it.
// A window whose end is before its start spans midnight (21:00-08:00).
func (q *Quiet) Defer(t time.Time) time.Time {
	if q == nil {
		return t
	}
	lt := t.In(q.Loc)
	midnight := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, q.Loc)
	since := lt.Sub(midnight)
	switch {
	case q.Start <= q.End: // same-day window
		if since >= q.Start && since < q.End {
			return at(midnight, q.End)
		}
	case since >= q.Start: // evening part: ends tomorrow
		return at(midnight.AddDate(0, 0, 1), q.End)
	case since < q.End: // morning part
		return at(midnight, q.End)
	}
	return t
}

// at is a wall-clock offset from a local midnight, correct across DST changes.
func at(midnight time.Time, off time.Duration) time.Time {
	h, m := int(off/time.Hour), int(off%time.Hour/time.Minute)
	return time.Date(midnight.Year(), midnight.Month(), midnight.Day(), h, m, 0, 0, midnight.Location())
}

// Needs makes a delivery wait for another route's success for a key.
type Needs struct {
	Route string
	Key   *mapping.Expr
	Wait  time.Duration
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

var (
	// keyEncoding spells the (source, event id, route) hash in idempotency
	// keys. Keys already sent to remotes used it: it must not change.
	keyEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	// idEncoding spells delivery ids. Its alphabet is in ASCII order, so ids
	// sort as their bytes do: by the time they were planned.
	idEncoding = base32.NewEncoding("234567abcdefghijklmnopqrstuvwxyz").WithPadding(base32.NoPadding)
)

// eventRouteHash is what identifies a delivery across attempts, replays and
// even a rebuilt ledger: sha256 over (source, event id, route).
func eventRouteHash(source, eventID, route string) [sha256.Size]byte {
	h := sha256.New()
	for _, s := range []string{source, eventID, route} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// DeliveryID names a new ledger row: 48 bits of the planning time in
// milliseconds, then 72 bits of the (source, event id, route) hash. Ids that
// grow with time keep the ledger's primary key appending at its end; a
// random id (the hash alone) dirtied one random index page per event, the
// largest share of what each commit wrote to the WAL. Each (event, route) is
// planned once (the event insert dedupes it first), so the time part never
// splits one delivery into two rows.
func DeliveryID(source, eventID, route string, planned time.Time) string {
	var b [15]byte
	ms := uint64(planned.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	sum := eventRouteHash(source, eventID, route)
	copy(b[6:], sum[:])
	return "dlv_" + idEncoding.EncodeToString(b[:])
}

// IdempotencyKey is what a sink sends to a remote that dedupes by key. It is
// derived from (source, event id, route) alone, not from the delivery id:
// the same on every attempt and replay (guarantee 2), and the same value
// earlier versions sent.
func IdempotencyKey(source, eventID, route string) string {
	sum := eventRouteHash(source, eventID, route)
	return "clinicbridge-dlv_" + keyEncoding.EncodeToString(sum[:15])
}
