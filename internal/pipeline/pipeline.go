package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
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

	// retryAfter carries a remote's Retry-After from a failed attempt to the
	// retry policy River consults right after it, keyed by job id.
	retryAfter sync.Map
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
}

// New returns a pipeline; call SetStore before use (the store needs the
// pipeline's worker to open, and the pipeline needs the store to work).
func New(p Params) *Pipeline {
	pl := &Pipeline{log: p.Logger, metrics: p.Metrics, now: p.Now, guards: map[string]*guard{}}
	if pl.now == nil {
		pl.now = time.Now
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

// SetStore attaches the store.
func (p *Pipeline) SetStore(s store.Store) { p.store = s }

// SetRoutes replaces the routes atomically.
func (p *Pipeline) SetRoutes(routes []*Route) {
	rs := &routeSet{routes: routes, byName: map[string]*Route{}}
	for _, r := range routes {
		rs.byName[r.Name] = r
	}
	p.routes.Store(rs)
}

func (p *Pipeline) config() *routeSet { return p.routes.Load() }

// Worker returns the River worker that runs deliveries.
func (p *Pipeline) Worker() river.Worker[store.DeliveryArgs] { return &worker{p: p} }

type worker struct {
	river.WorkerDefaults[store.DeliveryArgs]
	p *Pipeline
}

// Timeout bounds one attempt; sinks set their own shorter HTTP timeouts.
func (w *worker) Timeout(*river.Job[store.DeliveryArgs]) time.Duration { return 90 * time.Second }

func (w *worker) Work(ctx context.Context, job *river.Job[store.DeliveryArgs]) error {
	return w.p.deliver(ctx, job.JobRow, job.Args.DeliveryID)
}

// deliver runs one attempt. Its return value is the queue decision: nil
// (done), river.JobCancel (never again), river.JobSnooze (later, without
// using an attempt) or an error (retry with backoff).
func (p *Pipeline) deliver(ctx context.Context, job *rivertype.JobRow, id string) error {
	d, err := p.store.Delivery(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return river.JobCancel(fmt.Errorf("delivery %s is not in the ledger", id))
	}
	if err != nil {
		return err // the store is unavailable: try again later
	}
	log := p.log.With().Str("delivery", d.ID).Str("route", d.Route).Str("event", d.EventID).Int("attempt", job.Attempt).Logger()
	switch d.State {
	case store.Succeeded, store.Cancelled, store.Skipped, store.Dead:
		// Finished meanwhile (cancelled, or a duplicate job): nothing to do.
		return nil
	case store.Scheduled:
		ok, err := p.store.Claim(ctx, d.ID)
		if err != nil {
			return err
		}
		if !ok {
			log.Info().Msg("scheduled delivery was cancelled before its time")
			return nil
		}
	}
	cfg := p.config()
	r := cfg.byName[d.Route]
	if r == nil {
		return p.finish(ctx, log, d, store.Dead, "route is no longer configured", "", true, false)
	}
	if !d.DeliveredAt.IsZero() && !r.Action.Idempotent {
		// Guarantee 2: a sink without idempotency keys is never called again
		// after a recorded success, not even by a replay.
		return p.finish(ctx, log, d, store.Succeeded, "already delivered; not sent again (the sink has no idempotency key)", "", false, false)
	}
	ev, err := p.store.Event(ctx, d.Source, d.EventID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return p.finish(ctx, log, d, store.Dead, "event payload is gone (purged)", "", true, false)
		}
		return err
	}
	if !ev.PurgedAt.IsZero() {
		return p.finish(ctx, log, d, store.Dead, "the event's payload was purged", "", true, false)
	}
	if r.Retry.MaxAge > 0 && p.now().Sub(ev.ReceivedAt) > r.Retry.MaxAge && d.Attempts > 0 {
		return p.finish(ctx, log, d, store.Dead, fmt.Sprintf("gave up: older than retry.max_age %s; last error: %s", r.Retry.MaxAge, d.LastError), "", true, false)
	}
	if r.Action.Overwrites && d.Key != "" {
		stale, err := p.stale(ctx, d, ev)
		if err != nil {
			return err
		}
		if stale {
			return p.finish(ctx, log, d, store.Skipped, "stale", "", false, false)
		}
	}
	input, err := Input(ev.Event, ev.ReceivedAt)
	if err != nil {
		return p.finish(ctx, log, d, store.Dead, err.Error(), "", true, false)
	}
	if r.Needs != nil {
		needed, wait, err := p.needs(ctx, r, d, input)
		if err != nil {
			return err
		}
		if needed == nil {
			if wait <= 0 {
				return p.finish(ctx, log, d, store.Dead, fmt.Sprintf("needs: route %s had no success for this key within %s", r.Needs.Route, r.Needs.Wait), "", true, false)
			}
			if rerr := p.record(ctx, log, d.Route, store.Outcome{ID: d.ID, State: store.Pending, Error: "waiting for route " + r.Needs.Route}, "waiting"); rerr != nil {
				return rerr
			}
			return river.JobSnooze(wait)
		}
		input["needs"] = needed
	}
	doc, err := r.Map.Apply(input)
	if err != nil {
		return p.finish(ctx, log, d, store.Dead, "mapping: "+err.Error(), "", true, false)
	}
	var release func(bool)
	if g := p.guards[r.To]; g != nil {
		var wait time.Duration
		var why string
		if release, wait, why = g.admit(ctx); release == nil {
			// The sink is protected: wait without using an attempt.
			if rerr := p.record(ctx, log, d.Route, store.Outcome{ID: d.ID, State: store.Pending, Error: "waiting: " + why}, "waiting"); rerr != nil {
				return rerr
			}
			p.metrics.Circuit.WithLabelValues(r.To).Set(float64(g.State()))
			return river.JobSnooze(wait)
		}
	}
	receipt, err := r.Sink.Do(ctx, connectors.Delivery{
		Action:         r.Action.Name,
		Document:       doc,
		IdempotencyKey: IdempotencyKey(d.ID),
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
		return p.finish(ctx, log, d, store.Succeeded, "", receipt.ExternalID, false, true)
	}
	return p.failed(ctx, log, job, d, r, err)
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
		return nil, 0, p.finish(ctx, p.log, d, store.Dead, "needs.key: could not compute the key", "", true, false)
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
func (p *Pipeline) failed(ctx context.Context, log zerolog.Logger, job *rivertype.JobRow, d store.Delivery, r *Route, err error) error {
	class := connectors.ClassOf(err)
	reason := err.Error()
	log = log.With().Str("class", class.String()).Logger()
	if class == connectors.Ambiguous {
		if !r.Action.Idempotent {
			return p.finish(ctx, log, d, store.Dead, "ambiguous: the request may have reached "+r.To+" and it has no idempotency key, so it is not retried blindly; check the target, then replay if needed: "+reason, "", true, true)
		}
		class = connectors.Transient
	}
	switch class {
	case connectors.Permanent, connectors.Auth:
		return p.finish(ctx, log, d, store.Dead, reason, "", true, true)
	case connectors.Skip:
		return p.finish(ctx, log, d, store.Skipped, skipReason(err), "", false, false)
	case connectors.Paused:
		// The connector needs an operator (e.g. reconnect Xero): wait without
		// using attempts, and say why in the ledger.
		if rerr := p.record(ctx, log, d.Route, store.Outcome{ID: d.ID, State: store.Pending, Error: "paused: " + reason}, "paused"); rerr != nil {
			return rerr
		}
		return river.JobSnooze(pausedRecheck)
	case connectors.RateLimited:
		if wait := connectors.RetryAfterOf(err); wait > 0 {
			if rerr := p.record(ctx, log, d.Route, store.Outcome{ID: d.ID, State: store.Pending, Error: reason, Attempted: true}, "rate_limited"); rerr != nil {
				return rerr
			}
			return river.JobSnooze(wait)
		}
	}
	if job.Attempt >= job.MaxAttempts {
		return p.finish(ctx, log, d, store.Dead, fmt.Sprintf("retries exhausted after %d attempts: %s", job.Attempt, reason), "", true, true)
	}
	if wait := connectors.RetryAfterOf(err); wait > 0 {
		p.retryAfter.Store(job.ID, wait)
	}
	if rerr := p.record(ctx, log, d.Route, store.Outcome{ID: d.ID, State: store.Pending, Error: reason, Attempted: true}, "retry"); rerr != nil {
		return rerr
	}
	return err
}

// pausedRecheck is how often a delivery to a paused connector looks again.
const pausedRecheck = time.Minute

// skipReason is the provider's code for a skip (e.g. opted_out).
func skipReason(err error) string {
	var ce *connectors.Error
	if errors.As(err, &ce) && ce.Code != "" {
		return ce.Code
	}
	return err.Error()
}

// finish records a final outcome. cancel makes the job never run again.
func (p *Pipeline) finish(ctx context.Context, log zerolog.Logger, d store.Delivery, state store.State, reason, externalID string, cancel, attempted bool) error {
	if err := p.record(ctx, log, d.Route, store.Outcome{ID: d.ID, State: state, Error: reason, ExternalID: externalID, Attempted: attempted}, string(state)); err != nil {
		return err
	}
	if cancel {
		return river.JobCancel(errors.New(reason))
	}
	return nil
}

func (p *Pipeline) record(ctx context.Context, log zerolog.Logger, route string, o store.Outcome, outcome string) error {
	if err := p.store.Record(ctx, o); err != nil {
		log.Error().Err(err).Msg("could not record the delivery outcome; the attempt will run again")
		return err
	}
	p.metrics.Deliveries.WithLabelValues(route, outcome).Inc()
	ev := log.Info()
	if o.State == store.Dead || outcome == "retry" || outcome == "rate_limited" {
		ev = log.Warn().Str("error", o.Error)
	}
	ev.Str("state", string(o.State)).Str("outcome", outcome).Msg("delivery")
	return nil
}

// RetryPolicy spaces retries by the route's backoff schedule with jitter,
// and never sooner than a Retry-After the remote asked for.
func (p *Pipeline) RetryPolicy() river.ClientRetryPolicy { return retryPolicy{p} }

type retryPolicy struct{ p *Pipeline }

func (rp retryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	var args store.DeliveryArgs
	_ = json.Unmarshal(job.EncodedArgs, &args)
	schedule := defaultBackoff
	if r := rp.p.config().byName[args.Route]; r != nil && len(r.Retry.Backoff) > 0 {
		schedule = r.Retry.Backoff
	}
	wait := Backoff(schedule, job.Attempt)
	if v, ok := rp.p.retryAfter.LoadAndDelete(job.ID); ok {
		wait = max(wait, v.(time.Duration))
	}
	return rp.p.now().Add(wait)
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
