package pipeline

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits protect one sink connector: a rate, a cap on concurrent calls, and
// a circuit breaker that stops calling a failing sink so queued deliveries
// wait instead of burning their retries.
type Limits struct {
	Rate        rate.Limit // calls per second; 0: unlimited
	Burst       int
	Concurrency int // 0: unlimited
	// Breaker opens after Failures consecutive transient failures; while
	// open, one probe delivery at a time is let through every Cooldown.
	Failures int
	Cooldown time.Duration
}

// ParseRate reads "10/s", "60/min", "1000/h".
func ParseRate(s string) (rate.Limit, error) {
	n, per, ok := strings.Cut(strings.ReplaceAll(s, " ", ""), "/")
	v, err := strconv.ParseFloat(n, 64)
	if !ok || err != nil || v <= 0 {
		return 0, fmt.Errorf("rate %q: want N/s, N/min or N/h", s)
	}
	switch per {
	case "s", "sec", "second":
		return rate.Limit(v), nil
	case "m", "min", "minute":
		return rate.Limit(v / 60), nil
	case "h", "hour":
		return rate.Limit(v / 3600), nil
	}
	return 0, fmt.Errorf("rate %q: want N/s, N/min or N/h", s)
}

// Circuit states, also the values of the clinicbridge_circuit_state gauge.
const (
	circuitClosed   = 0
	circuitOpen     = 1
	circuitHalfOpen = 2
)

// guard applies Limits in this agent.
type guard struct {
	name    string
	limits  Limits
	limiter *rate.Limiter
	// shared, when set, takes rate tokens from a bucket all agents share
	// (Postgres) instead of limiter.
	shared func(ctx context.Context) (time.Duration, error)
	sem    chan struct{}
	now    func() time.Time

	mu       sync.Mutex
	failures int
	state    int
	openedAt time.Time
	probing  bool
}

func newGuard(name string, l Limits, now func() time.Time) *guard {
	g := &guard{name: name, limits: l, now: now}
	if l.Rate > 0 {
		burst := l.Burst
		if burst <= 0 {
			burst = 1
		}
		g.limiter = rate.NewLimiter(l.Rate, burst)
	}
	if l.Concurrency > 0 {
		g.sem = make(chan struct{}, l.Concurrency)
	}
	return g
}

// maxInlineWait is how long a worker waits for a rate-limit token itself;
// longer waits snooze the job instead, so workers are not tied up.
const maxInlineWait = 2 * time.Second

// admit decides whether a call may go now. It returns a release func to call
// with the attempt's outcome, or a wait after which to try again (the job
// snoozes without using an attempt) and why. The breaker is checked last, after
// waiting for a concurrency slot and a rate token: a delivery that queued
// while the sink was failing must see the circuit as it is when its turn comes.
func (g *guard) admit(ctx context.Context) (release func(transientFailure bool), wait time.Duration, why string) {
	if g.sem != nil {
		select {
		case g.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, time.Second, "concurrency limit for " + g.name
		}
	}
	free := func() {
		if g.sem != nil {
			<-g.sem
		}
	}
	if g.shared != nil {
		for {
			wait, err := g.shared(ctx)
			if err != nil {
				free()
				return nil, time.Second, "rate limit for " + g.name + " (shared bucket unavailable)"
			}
			if wait == 0 {
				break
			}
			if wait > maxInlineWait {
				free()
				return nil, wait, "rate limit for " + g.name
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				free()
				return nil, time.Second, "rate limit for " + g.name
			}
		}
	} else if g.limiter != nil {
		r := g.limiter.Reserve()
		if d := r.Delay(); d > maxInlineWait {
			r.Cancel()
			free()
			return nil, d, "rate limit for " + g.name
		} else if d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				r.Cancel()
				free()
				return nil, time.Second, "rate limit for " + g.name
			}
		}
	}
	probe := false
	if g.limits.Failures > 0 {
		g.mu.Lock()
		switch g.state {
		case circuitOpen:
			if left := g.limits.Cooldown - g.now().Sub(g.openedAt); left > 0 {
				g.mu.Unlock()
				free()
				return nil, left, "circuit open for " + g.name
			}
			g.state = circuitHalfOpen
			fallthrough
		case circuitHalfOpen:
			if g.probing {
				g.mu.Unlock()
				free()
				return nil, g.limits.Cooldown, "circuit half-open for " + g.name + ": waiting for the probe"
			}
			g.probing, probe = true, true
		}
		g.mu.Unlock()
	}
	return func(failed bool) {
		free()
		if g.limits.Failures > 0 {
			g.record(failed, probe)
		}
	}, 0, ""
}

func (g *guard) record(failed, probe bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probe {
		g.probing = false
	}
	if !failed {
		g.failures, g.state = 0, circuitClosed
		return
	}
	g.failures++
	if probe || g.failures >= g.limits.Failures {
		g.state, g.openedAt = circuitOpen, g.now()
	}
}

// State is the circuit state for metrics.
func (g *guard) State() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}
