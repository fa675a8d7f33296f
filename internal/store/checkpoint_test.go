package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/internal/store"
)

// The write connection never checkpoints (that stalled commits); the
// background checkpointer copies the log into the database file while the
// store runs.
func TestSQLiteLogIsCheckpointedInTheBackground(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	s := openSQLite(t, path, nil)
	defer s.Close()
	before := fileSize(path)
	for i := range 20 {
		acceptN(t, s, fmt.Sprintf("b%d-", i), 100)
	}
	require.Greater(t, fileSize(path+"-wal"), int64(1<<20), "the writes are in the log")
	// Nothing checkpointed, the file would hold only its header page.
	require.Eventually(t, func() bool { return fileSize(path) > before+256<<10 }, 10*time.Second, 50*time.Millisecond,
		"the log reaches the database file while the store is open")
}

// Under steady writes a background checkpoint never catches the end of the
// log, so SQLite never starts it over and it grows for as long as the load
// lasts (~50 MB/s at full load). Past a length, the committer copies the
// rest between two commits and the log starts over: it stays bounded.
func TestSQLiteLogStartsOverUnderSteadyWrites(t *testing.T) {
	// Not parallel: the threshold is the package's.
	defer store.SetRestartFrames(store.SetRestartFrames(64)) // 256 KiB
	path := filepath.Join(t.TempDir(), "cb.db")
	s := openSQLite(t, path, nil)
	defer s.Close()
	// Four writers back to back for three seconds: a dozen checkpoints,
	// never a moment without a commit in flight. The log file keeps its
	// largest size when SQLite starts it over, so what shows the restart is
	// that it stops growing once the first one has happened.
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < 3*time.Second; i++ {
				acceptN(t, s, fmt.Sprintf("w%d-%d-", w, i), 10)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	mid := fileSize(path + "-wal")
	wg.Wait()
	grew := fileSize(path+"-wal") - mid
	require.Greater(t, fileSize(path), int64(1<<20), "the writes reached the database file")
	require.Less(t, grew, int64(4<<20), "the log started over instead of growing with the load (%d bytes at 1.5 s)", mid)
}

// fileSize is the size of the file at p, 0 if it is not there.
func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
