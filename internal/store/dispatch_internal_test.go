package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// While webhooks wait to be stored, first attempts run one small batch at
// a time; otherwise at full width.
func TestDispatcherYieldsToWebhooks(t *testing.T) {
	t.Parallel()
	for _, busy := range []bool{true, false} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var cur, peak, biggest, total int
			deliver := func(_ context.Context, _ int64, ids []string) error {
				mu.Lock()
				cur++
				peak, biggest, total = max(peak, cur), max(biggest, len(ids)), total+len(ids)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				mu.Lock()
				cur--
				mu.Unlock()
				return nil
			}
			noScan := func(context.Context, int) ([]string, error) { return nil, nil }
			d := newDispatcher(deliver, noScan, func() bool { return busy }, slog.New(slog.DiscardHandler))
			var ids []string
			for i := range 1000 {
				ids = append(ids, fmt.Sprint("d", i))
			}
			d.add(ids)
			d.start()
			defer d.stop(context.Background())
			require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return total == len(ids) }, 10*time.Second, 5*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if busy {
				require.Equal(t, 1, peak, "one batch at a time while webhooks wait")
				require.Equal(t, busyBatch, biggest)
			} else {
				require.Greater(t, peak, 1)
				require.Equal(t, MaxBatch, biggest)
			}
		})
	}
}
