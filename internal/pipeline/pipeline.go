package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Pipeline plans and runs deliveries. Its routes can be swapped at run time
// (config reload); a delivery already running finishes on the routes it
// started with.
type Pipeline struct {
	store   store.Store
	log     zerolog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	routes  atomic.Pointer[routeSet]
	// pausedRecheck is how often a delivery to a paused connector looks again.
	pausedRecheck time.Duration

	// guards protect sinks, by connector name; they outlive config reloads.
	guards map[string]*guard
}

type routeSet struct {
	routes []*Route
	byName map[string]*Route
}

// Params configure New.
type Params struct {
	Routes []*Route
	// Limits protect sink connectors, by name.
	Limits  map[string]Limits
	Logger  zerolog.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time // default time.Now
	// PausedRecheck is how often a delivery to a paused connector looks
	// again (default DefaultPausedRecheck); tests shorten it.
	PausedRecheck time.Duration
}

// New returns a pipeline; call SetStore before use (the store needs the
// pipeline's worker to open, and the pipeline needs the store to work).
func New(p Params) *Pipeline {
	pl := &Pipeline{log: p.Logger, metrics: p.Metrics, now: p.Now, guards: map[string]*guard{}, pausedRecheck: p.PausedRecheck}
	if pl.now == nil {
		pl.now = time.Now
	}
	if pl.pausedRecheck <= 0 {
		pl.pausedRecheck = DefaultPausedRecheck
	}
	for name, l := range p.Limits {
		pl.guards[name] = newGuard(name, l, pl.now)
	}
	if pl.metrics == nil {
		pl.metrics = metrics.New(nil)
	}
	pl.SetRoutes(p.Routes)
	return pl
}

// SetStore attaches the store. A store that several agents share also
// shares the sinks' rate buckets, so a limit holds across agents together.
func (p *Pipeline) SetStore(s store.Store) {
	p.store = s
	if !s.SharesLimits() {
		return
	}
	for name, g := range p.guards {
		if g.limits.Rate > 0 {
			perSecond, burst := float64(g.limits.Rate), max(g.limits.Burst, 1)
			g.shared = func(ctx context.Context) (time.Duration, error) {
				return s.TakeToken(ctx, "rate:"+name, perSecond, burst)
			}
		}
	}
}

// SetRoutes replaces the routes atomically.
func (p *Pipeline) SetRoutes(routes []*Route) {
	rs := &routeSet{routes: routes, byName: map[string]*Route{}}
	for _, r := range routes {
		rs.byName[r.Name] = r
	}
	p.routes.Store(rs)
}

func (p *Pipeline) config() *routeSet { return p.routes.Load() }

// batchParallel bounds the attempts of one batch run at once.
const batchParallel = 32

// Deliver is the store's store.Deliver: it loads the deliveries with their
// events (store.Load) and attempts each. Every decision (done, retry at,
// wait until) is written to the ledger with the attempt's outcome, so a job
// always completes; it returns an error, and the store runs the attempts
// again, only when the store could not be read or written. A delivery that
// already finished, or that another job now owns, is skipped, so running a
// job again never repeats a success or races a queued retry.
func (p *Pipeline) Deliver(ctx context.Context, job int64, ids []string) error {
	all, err := p.store.Load(ctx, ids)
	if err != nil {
		return err
	}
	loaded := all[:0]
	for _, l := range all {
		if l.Delivery.JobID == job {
			loaded = append(loaded, l)
		}
	}
	if len(loaded) == 1 {
		return p.attempt(ctx, loaded[0])
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, batchParallel)
	errs := make([]error, len(loaded))
	for i, l := range loaded {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = p.attempt(ctx, l)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// attempt makes one delivery attempt and records its outcome.
func (p *Pipeline) attempt(ctx context.Context, l store.Loaded) error {
	d, ev := l.Delivery, l.Event
	switch d.State {
	case store.Succeeded, store.Cancelled, store.Skipped, store.Dead:
		// Finished meanwhile (cancelled, or a job run twice): nothing to do.
		return nil
	case store.Scheduled:
		ok, err := p.store.Claim(ctx, d.ID)
		if err != nil {
			return err
		}
		if !ok {
			withDelivery(p.log.Info(), d).Msg("scheduled delivery was cancelled before its time")
			return nil
		}
	}
	o, label, err := p.decide(ctx, d, ev)
	if err != nil {
		return err
	}
	o.ID = d.ID
	return p.record(ctx, d, o, label)
}

// withDelivery names the delivery on a log line: ids, never payload values.
// (A sub-logger per attempt would cost an allocation on the hot path.)
func withDelivery(e *zerolog.Event, d store.Delivery) *zerolog.Event {
	return e.Str("delivery", d.ID).Str("route", d.Route).Str("event", d.EventID).Int("attempt", d.Attempts+1)
}

// Outcome shapes.
func done(state store.State, reason string, attempted bool) store.Outcome {
	return store.Outcome{State: state, Error: reason, Attempted: attempted}
}

func later(reason string, at time.Time, attempted bool) store.Outcome {
	return store.Outcome{State: store.Pending, Error: reason, Next: at, Attempted: attempted}
}

// decide runs the route for one delivery and says what happened: an
// outcome to record (with the next attempt's time, if any) and its metric
// label. An error means the store failed and the attempt must run again.
func (p *Pipeline) decide(ctx context.Context, d store.Delivery, ev store.EventRecord) (store.Outcome, string, error) {
	r := p.config().byName[d.Route]
	if r == nil {
		return done(store.Dead, "route is no longer configured", false), "dead", nil
	}
	if !d.DeliveredAt.IsZero() && !r.Action.Idempotent {
		// Guarantee 2: a sink without idempotency keys is never called again
		// after a recorded success, not even by a replay.
		return done(store.Succeeded, "already delivered; not sent again (the sink has no idempotency key)", false), "succeeded", nil
	}
	if !ev.PurgedAt.IsZero() {
		return done(store.Dead, "the event's payload was purged", false), "dead", nil
	}
	now := p.now()
	if r.Retry.MaxAge > 0 && now.Sub(ev.ReceivedAt) > r.Retry.MaxAge && d.Attempts > 0 {
		return done(store.Dead, fmt.Sprintf("gave up: older than retry.max_age %s; last error: %s", r.Retry.MaxAge, d.LastError), false), "dead", nil
	}
	if r.Action.Overwrites && d.Key != "" {
		stale, err := p.stale(ctx, d, ev)
		if err != nil {
			return store.Outcome{}, "", err
		}
		if stale {
			return done(store.Skipped, "stale", false), "skipped", nil
		}
	}
	input, err := Input(ev.Event, ev.ReceivedAt)
	if err != nil {
		return done(store.Dead, err.Error(), false), "dead", nil
	}
	if r.Needs != nil {
		needed, wait, err := p.needs(ctx, r, d, input)
		switch {
		case err != nil:
			return store.Outcome{}, "", err
		case needed == nil && wait <= 0:
			return done(store.Dead, fmt.Sprintf("needs: route %s had no success for this key within %s", r.Needs.Route, r.Needs.Wait), false), "dead", nil
		case needed == nil:
			return later("waiting for route "+r.Needs.Route, now.Add(wait), false), "waiting", nil
		}
		input["needs"] = needed
	}
	doc, err := r.Map.Apply(input)
	if err != nil {
		return done(store.Dead, "mapping: "+err.Error(), false), "dead", nil
	}
	var release func(bool)
	if g := p.guards[r.To]; g != nil {
		var wait time.Duration
		var why string
		if release, wait, why = g.admit(ctx); release == nil {
			// The sink is protected: wait without using an attempt.
			p.metrics.Circuit.WithLabelValues(r.To).Set(float64(g.State()))
			return later("waiting: "+why, now.Add(wait), false), "waiting", nil
		}
	}
	receipt, err := r.Sink.Do(ctx, connectors.Delivery{
		Action:         r.Action.Name,
		Document:       doc,
		IdempotencyKey: IdempotencyKey(d.Source, d.EventID, d.Route),
		DeliveryID:     d.ID,
		EventID:        d.EventID,
		Route:          d.Route,
	})
	if release != nil {
		class := connectors.ClassOf(err)
		release(err != nil && (class == connectors.Transient || class == connectors.Ambiguous))
		p.metrics.Circuit.WithLabelValues(r.To).Set(float64(p.guards[r.To].State()))
	}
	if err == nil {
		if d.RunAt.Sub(ev.ReceivedAt) < time.Second {
			p.metrics.Latency.WithLabelValues(d.Route).Observe(p.now().Sub(ev.ReceivedAt).Seconds())
		}
		o := done(store.Succeeded, "", true)
		o.ExternalID = receipt.ExternalID
		return o, "succeeded", nil
	}
	o, label := p.failed(d, r, err)
	return o, label, nil
}

// stale reports whether a newer event was already delivered for this
// delivery's route and key.
func (p *Pipeline) stale(ctx context.Context, d store.Delivery, ev store.EventRecord) (bool, error) {
	last, err := p.store.Succeeded(ctx, d.Route, d.Key)
	if errors.Is(err, store.ErrNotFound) || (err == nil && last.ID == d.ID) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	lastEv, err := p.store.Event(ctx, last.Source, last.EventID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // purged: nothing to compare with
	}
	if err != nil {
		return false, err
	}
	return ev.OccurredAt.Before(lastEv.OccurredAt), nil
}

// needs looks for the delivery r depends on. It returns what the mapping
// sees as `needs`, or nil and how long to wait before looking again (<= 0:
// the wait is over).
func (p *Pipeline) needs(ctx context.Context, r *Route, d store.Delivery, input map[string]any) (map[string]any, time.Duration, error) {
	key, err := r.Needs.Key.String(input)
	if err != nil || key == "" {
		return nil, 0, nil // no key: nothing can ever satisfy it, so it is dead with the reason
	}
	got, err := p.store.Succeeded(ctx, r.Needs.Route, key)
	if err == nil {
		return map[string]any{"external_id": got.ExternalID, "delivery_id": got.ID, "route": got.Route, "key": key}, 0, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, 0, err
	}
	left := r.Needs.Wait - p.now().Sub(d.CreatedAt)
	if left <= 0 {
		return nil, 0, nil
	}
	// Look again soon, but not in a tight loop: 5% of the wait, 1 s to 1 min.
	return nil, min(left, max(time.Second, min(time.Minute, r.Needs.Wait/20))), nil
}

// failed is where a connector's error class becomes a queue decision.
func (p *Pipeline) failed(d store.Delivery, r *Route, err error) (store.Outcome, string) {
	class := connectors.ClassOf(err)
	reason := err.Error()
	now := p.now()
	if class == connectors.Ambiguous {
		if !r.Action.Idempotent {
			return done(store.Dead, "ambiguous: the request may have reached "+r.To+" and it has no idempotency key, so it is not retried blindly; check the target, then replay if needed: "+reason, true), "dead"
		}
		class = connectors.Transient
	}
	retryAfter := connectors.RetryAfterOf(err)
	switch class {
	case connectors.Permanent, connectors.Auth:
		return done(store.Dead, reason, true), "dead"
	case connectors.Skip:
		return done(store.Skipped, skipReason(err), false), "skipped"
	case connectors.Paused:
		// The connector needs an operator (e.g. reconnect Xero): wait without
		// using attempts, and say why in the ledger.
		return later("paused: "+reason, now.Add(p.pausedRecheck), false), "paused"
	case connectors.RateLimited:
		if retryAfter > 0 {
			// The remote said when: wait that long without using an attempt.
			return later(reason, now.Add(retryAfter), false), "rate_limited"
		}
	}
	attempts := d.Attempts + 1
	if attempts >= r.Retry.MaxAttempts {
		return done(store.Dead, fmt.Sprintf("retries exhausted after %d attempts: %s", attempts, reason), true), "dead"
	}
	schedule := r.Retry.Backoff
	if len(schedule) == 0 {
		schedule = defaultBackoff
	}
	return later(reason, now.Add(max(Backoff(schedule, attempts), retryAfter)), true), "retry"
}

// DefaultPausedRecheck is how often a delivery to a paused connector looks
// again (Params.PausedRecheck).
const DefaultPausedRecheck = time.Minute

// skipReason is the provider's code for a skip (e.g. opted_out).
func skipReason(err error) string {
	var ce *connectors.Error
	if errors.As(err, &ce) && ce.Code != "" {
		return ce.Code
	}
	return err.Error()
}

// record writes an outcome (and the next attempt, if any) to the ledger.
func (p *Pipeline) record(ctx context.Context, d store.Delivery, o store.Outcome, label string) error {
	if err := p.store.Record(ctx, o); err != nil {
		withDelivery(p.log.Error(), d).Err(err).Msg("could not record the delivery outcome; the attempt will run again")
		return err
	}
	p.metrics.Deliveries.WithLabelValues(d.Route, label).Inc()
	var ev *zerolog.Event
	if o.State == store.Dead || label == "retry" || label == "rate_limited" || label == "paused" {
		ev = p.log.Warn().Str("error", o.Error)
	} else {
		ev = p.log.Info()
	}
	ev = withDelivery(ev, d)
	if !o.Next.IsZero() {
		ev = ev.Time("next", o.Next)
	}
	ev.Str("state", string(o.State)).Str("outcome", label).Msg("delivery")
	return nil
}

var defaultBackoff = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Backoff is the wait after the attempt-th failure: the schedule's step (the
// last repeats) with jitter, so a burst of failures does not retry in step.
// Jitter is drawn from [step/2, step]: full jitter would sometimes retry at
// once, which a struggling remote does not need.
func Backoff(schedule []time.Duration, attempt int) time.Duration {
	i := min(max(attempt-1, 0), len(schedule)-1)
	step := schedule[i]
	return step/2 + time.Duration(rand.Int64N(int64(step/2)+1))
}
