package store

import (
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// cpuPressure tells whether this process is short of CPU: whether its
// goroutines wait to run. The dispatcher asks it, together with "are
// webhooks waiting?", to decide whether deliveries should yield. Asking
// only the second would throttle deliveries to a slow remote, which wait on
// the network and take no CPU from anyone; asking only the first would
// throttle deliveries when they are all there is to do.
// It runs between start and stop (the store's Start and Stop).
type cpuPressure struct {
	saturated atomic.Bool
	done      chan struct{}
	once      sync.Once
}

const (
	// pressureEvery is how often the scheduler's histogram is read.
	pressureEvery = 100 * time.Millisecond
	// Saturated: more than pressureShare of the goroutine wake-ups in the
	// last interval waited over pressureWait for a CPU.
	pressureWait  = time.Millisecond
	pressureShare = 0.05
)

const schedLatencies = "/sched/latencies:seconds"

func (p *cpuPressure) start() {
	p.done = make(chan struct{})
	go p.loop(p.done)
}

func (p *cpuPressure) loop(done <-chan struct{}) {
	sample := []metrics.Sample{{Name: schedLatencies}}
	var prev *metrics.Float64Histogram
	t := time.NewTicker(pressureEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
			return // not on this runtime: never saturated
		}
		cur := sample[0].Value.Float64Histogram()
		p.saturated.Store(waitedOver(prev, cur, pressureWait.Seconds()) > pressureShare)
		prev = cur
	}
}

func (p *cpuPressure) stop() {
	p.once.Do(func() {
		if p.done != nil {
			close(p.done)
		}
	})
}

// waitedOver is the share of the wake-ups between two readings of a
// cumulative latency histogram that waited longer than limit seconds (a
// bucket counts when its lower bound is at or above limit).
func waitedOver(prev, cur *metrics.Float64Histogram, limit float64) float64 {
	var total, over uint64
	for i, c := range cur.Counts {
		if prev != nil && i < len(prev.Counts) {
			c -= prev.Counts[i]
		}
		total += c
		if cur.Buckets[i] >= limit {
			over += c
		}
	}
	if total == 0 {
		return 0
	}
	return float64(over) / float64(total)
}
