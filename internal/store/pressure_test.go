package store

import (
	"math"
	"runtime/metrics"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWaitedOver(t *testing.T) {
	t.Parallel()
	buckets := []float64{math.Inf(-1), 0.0001, 0.001, 0.01, math.Inf(1)}
	prev := &metrics.Float64Histogram{Buckets: buckets, Counts: []uint64{5, 100, 10, 0}}
	cur := &metrics.Float64Histogram{Buckets: buckets, Counts: []uint64{5, 190, 16, 4}}
	// Since prev: 90 under 1 ms, 6 in [1 ms, 10 ms), 4 over 10 ms.
	require.InDelta(t, 0.1, waitedOver(prev, cur, 0.001), 1e-9)
	require.InDelta(t, 0.04, waitedOver(prev, cur, 0.01), 1e-9)
	require.Zero(t, waitedOver(cur, cur, 0.001), "no wake-ups, no pressure")
	require.InDelta(t, 10.0/115, waitedOver(nil, prev, 0.001), 1e-9, "the first reading counts from zero")
}

// The runtime this is built with has the histogram the dispatcher reads.
func TestSchedLatenciesAreThere(t *testing.T) {
	t.Parallel()
	s := []metrics.Sample{{Name: schedLatencies}}
	metrics.Read(s)
	require.Equal(t, metrics.KindFloat64Histogram, s[0].Value.Kind())
}
