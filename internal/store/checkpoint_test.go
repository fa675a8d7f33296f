package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The write connection never checkpoints (that stalled commits); the
// background checkpointer copies the log into the database file while the
// store runs.
func TestSQLiteLogIsCheckpointedInTheBackground(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	s := openSQLite(t, path, nil)
	defer s.Close()
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	before := size(path)
	for i := range 20 {
		acceptN(t, s, fmt.Sprintf("b%d-", i), 100)
	}
	require.Greater(t, size(path+"-wal"), int64(1<<20), "the writes are in the log")
	// Nothing checkpointed, the file would hold only its header page.
	require.Eventually(t, func() bool { return size(path) > before+256<<10 }, 10*time.Second, 50*time.Millisecond,
		"the log reaches the database file while the store is open")
}
