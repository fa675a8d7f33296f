package xero

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// Xero's limits per tenant (organisation) and app.
const (
	DefaultCallsPerMinute = 60
	DefaultBurst          = 5
	DefaultConcurrency    = 5
)

// limits paces the calls to one tenant: a token bucket and a semaphore.
//
// The bucket's rate is (calls - burst - (concurrency-1)) per window: a
// bucket lets burst + rate*window calls start in any window, and up to
// concurrency-1 calls that started earlier may still arrive inside it, so
// Xero never counts more than `calls` in a rolling window. With the
// defaults that is 51 calls a minute sustained, in bursts of up to 5.
type limits struct {
	lim *rate.Limiter
	sem chan struct{}
}

// Sinks on one tenant share its limits, as Xero counts them per tenant: two
// connectors for one organisation, or a sink rebuilt on reload, draw from
// one budget. (Sinks on an injected clock keep their own: see New.)
var (
	limitsMu sync.Mutex
	limitsBy = map[string]*limits{}
)

func limitsFor(baseURL, tenant string, calls int, per time.Duration, burst, concurrent int) *limits {
	key := fmt.Sprintf("%s|%s|%d|%s|%d|%d", baseURL, tenant, calls, per, burst, concurrent)
	limitsMu.Lock()
	defer limitsMu.Unlock()
	if l, ok := limitsBy[key]; ok {
		return l
	}
	l := newLimits(calls, per, burst, concurrent)
	limitsBy[key] = l
	return l
}

func newLimits(calls int, per time.Duration, burst, concurrent int) *limits {
	sustained := calls - burst - (concurrent - 1)
	if sustained < 1 {
		sustained = 1
	}
	return &limits{
		lim: rate.NewLimiter(rate.Limit(float64(sustained)/per.Seconds()), burst),
		sem: make(chan struct{}, concurrent),
	}
}

// acquire waits for a call slot and a token within ctx. When ctx would end
// before the token comes, it returns RateLimited with the wait as
// RetryAfter instead of waiting in vain. release must be called after the
// answer is read.
func (l *limits) acquire(ctx context.Context, now func() time.Time, sleepUntil func(context.Context, time.Time) error) (release func(), err error) {
	select {
	case l.sem <- struct{}{}:
	default:
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, waitErr(ctx, time.Second, fmt.Sprintf("%d calls to this tenant were already in flight", cap(l.sem)))
		}
	}
	release = func() { <-l.sem }
	t := now()
	r := l.lim.ReserveN(t, 1)
	if !r.OK() {
		release()
		return nil, &connectors.Error{Class: connectors.RateLimited, Provider: provider, RetryAfter: time.Second, Msg: "local rate limit"}
	}
	d := r.DelayFrom(t)
	if d <= 0 {
		return release, nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		r.CancelAt(t)
		release()
		return nil, &connectors.Error{Class: connectors.RateLimited, Provider: provider, RetryAfter: d,
			Msg: "local limit of calls per minute to this tenant reached; the next slot is after the deadline"}
	}
	if err := sleepUntil(ctx, t.Add(d)); err != nil {
		r.CancelAt(now())
		release()
		return nil, waitErr(ctx, d, "waiting for the local rate limit")
	}
	return release, nil
}

func waitErr(ctx context.Context, retryAfter time.Duration, msg string) error {
	if ctx.Err() == context.DeadlineExceeded {
		return &connectors.Error{Class: connectors.RateLimited, Provider: provider, RetryAfter: retryAfter, Msg: msg}
	}
	return &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: msg + ": cancelled", Err: ctx.Err()}
}

// sleepUntil waits on the real clock until the given time, or until ctx ends.
func sleepUntil(ctx context.Context, until time.Time) error {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
