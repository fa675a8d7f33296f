package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSmallRun runs the benchmark on a small listing with both listers: the
// run lists everything, finds the pre-stored items known and delivers the
// unseen ones.
func TestSmallRun(t *testing.T) {
	t.Parallel()
	for _, lister := range []string{"poll", "direct"} {
		t.Run(lister, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"--items", "1500", "--repeat", "1", "--json", "--lister", lister}, &out, &errOut)
			require.NoError(t, err, errOut.String())
			var doc struct{ Runs []result }
			require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
			require.Len(t, doc.Runs, 1)
			r := doc.Runs[0]
			require.Equal(t, 1500, r.Listed)
			require.Equal(t, 15, r.Recovered, "1 % unseen")
			require.Equal(t, 1485, r.Known)
			require.Equal(t, 1485, r.Prestored)
			require.Positive(t, r.RunSeconds)
			require.Positive(t, r.PeakRSSMB)
		})
	}
}

func TestCatalogHidesTheUnseen(t *testing.T) {
	t.Parallel()
	c := &catalog{n: 1000, every: 100}
	c.hiding.Store(true)
	at := c.visible()
	seen := map[int]bool{}
	for pos := 0; ; pos++ {
		i, ok := at(pos)
		if !ok {
			break
		}
		require.False(t, c.unseen(i))
		require.Equal(t, pos, c.position(i))
		seen[i] = true
	}
	require.Len(t, seen, 990)
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--items", "0"}, {"--unseen", "90"}, {"--lister", "x"}, {"--repeat", "11"}, {"--cpuprofile", "p", "--repeat", "2"}, {"extra"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		var ue usageError
		require.ErrorAs(t, err, &ue, "%v", args)
	}
}
