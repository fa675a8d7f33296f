package app_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/internal/store"
)

// flakySink answers 503 while down, records arrival times and the most
// calls it had in flight at once.
type flakySink struct {
	down     atomic.Bool
	inFlight atomic.Int64
	maxIn    atomic.Int64
	mu       sync.Mutex
	ok       []time.Time
	failed   int
}

func (f *flakySink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxIn.Load()
		if n <= m || f.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond) // a sink that takes a moment, so calls overlap
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down.Load() {
		f.failed++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	f.ok = append(f.ok, time.Now())
	w.WriteHeader(http.StatusOK)
}

func guardedConfig(sinkURL, limits string) string {
	return fmt.Sprintf(`version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
connectors:
  inbox: {type: webhook, webhook_secret: "%s"}
  sink: {type: http, url: "%s", %s}
routes:
  - name: forward
    from: inbox
    map: {fields: {id: {from: payload.data.id}}}
    to: sink
    retry: {max_attempts: 10, backoff: [100ms]}
`, secret, sinkURL, limits)
}

// TestBreakerKeepsAttemptsWhileTheSinkIsDown: without the breaker, 10
// attempts 100 ms apart would be spent in the 3 s outage and every delivery
// would be dead; with it, they wait and then all succeed.
func TestBreakerKeepsAttemptsWhileTheSinkIsDown(t *testing.T) {
	t.Parallel()
	sink := &flakySink{}
	sink.down.Store(true)
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	b := start(t, guardedConfig(srv.URL, "concurrency: 4, breaker: {failures: 3, cooldown: 500ms}"), "")
	const n = 20
	for i := range n {
		b.send(t, fmt.Sprint("evt_", i), booking(fmt.Sprint("b", i), ""))
	}
	time.Sleep(3 * time.Second)
	sink.down.Store(false)
	total := 0
	for i := range n {
		d := b.waitState(t, fmt.Sprint("evt_", i), store.Succeeded)
		total += d.Attempts
	}
	sink.mu.Lock()
	failed := sink.failed
	sink.mu.Unlock()
	// Each delivery's final success is one attempt; the failures before the
	// circuit opened, and the probes (one per cooldown), are the rest.
	t.Logf("%d deliveries, %d attempts in all, %d failed calls at the sink during a 3 s outage", n, total, failed)
	require.LessOrEqual(t, failed, 3+4+8, "failures to open + calls in flight + one probe per 500 ms")
	require.Equal(t, n+failed, total, "every attempt is a call; waiting used none")
	require.LessOrEqual(t, sink.maxIn.Load(), int64(4), "concurrency limit")
}

// TestRateLimitHoldsAtTheSink counts calls per one-second window at the sink.
func TestRateLimitHoldsAtTheSink(t *testing.T) {
	t.Parallel()
	sink := &flakySink{}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	b := start(t, guardedConfig(srv.URL, "rate: 10/s"), "")
	const n = 30
	for i := range n {
		b.send(t, fmt.Sprint("evt_", i), booking(fmt.Sprint("b", i), ""))
	}
	for i := range n {
		b.waitState(t, fmt.Sprint("evt_", i), store.Succeeded)
	}
	sink.mu.Lock()
	times := append([]time.Time(nil), sink.ok...)
	sink.mu.Unlock()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	most := 0
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Second {
			j++
		}
		most = max(most, j-i)
	}
	t.Logf("%d calls over %s, at most %d in any 1 s window", len(times), times[len(times)-1].Sub(times[0]).Round(time.Millisecond), most)
	require.LessOrEqual(t, most, 11, "10/s with a burst of 1")
}

func TestLimitsAreValidated(t *testing.T) {
	t.Parallel()
	got := loadErr(t, guardedConfig("http://127.0.0.1:1", "rate: 10/fortnight"), nil, nil)
	require.Contains(t, got, `connectors.sink.rate: rate "10/fortnight": want N/s, N/min or N/h`)
}
