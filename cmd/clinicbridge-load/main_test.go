package main

import (
	"encoding/json"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"512": 512, "512B": 512, "1KB": 1024, "1kib": 1024, "2K": 2048, "1MB": 1 << 20, "0.5KB": 512} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := parseSize("lots")
	require.Error(t, err)
}

func TestOnlyLoopbackTargets(t *testing.T) {
	t.Parallel()
	u, err := hookURL("http://127.0.0.1:8080", "inbox")
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:8080/hooks/inbox", u)
	u, err = hookURL("http://localhost:8080/hooks/other", "inbox")
	require.NoError(t, err)
	require.Equal(t, "http://localhost:8080/hooks/other", u)
	for _, bad := range []string{"http://10.0.0.5:8080", "http://example.com", "https://127.0.0.1:1", "127.0.0.1:8080"} {
		_, err := hookURL(bad, "inbox")
		require.Error(t, err, bad)
	}
	_, err = parseFlags([]string{"--store", "postgres", "--postgres-url", "postgres://db.internal/x"}, io.Discard)
	require.Error(t, err)
	_, err = parseFlags([]string{"--duration", "11m"}, io.Discard)
	require.Error(t, err, "runs are bounded in time")
}

func TestBodyIsValidJSONOfTheRequestedSize(t *testing.T) {
	t.Parallel()
	w := newWorker(shape{targets: []string{"x"}, bodySize: 1024, marker: `M"1`}, nil, 0)
	b := w.buildBody(123456, 1795857240818021886)
	require.InDelta(t, 1024, len(b), 2)
	var v struct {
		Type string `json:"type"`
		Data struct {
			Marker string `json:"marker"`
			Seq    int64  `json:"seq"`
			SentNs int64  `json:"sent_ns"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(b, &v))
	require.Equal(t, `M"1`, v.Data.Marker)
	require.Equal(t, int64(123456), v.Data.Seq)
	require.Equal(t, int64(1795857240818021886), v.Data.SentNs)

	small := newWorker(shape{targets: []string{"x"}, bodySize: 0, marker: "m"}, nil, 0)
	require.True(t, json.Valid(small.buildBody(1, 2)), "no room for filler still yields JSON")
}

func TestPercentileAndMedian(t *testing.T) {
	t.Parallel()
	ns := make([]int64, 100)
	for i := range ns {
		ns[i] = int64(i+1) * 1e6 // 1..100 ms
	}
	require.Equal(t, 50.0, percentileMs(ns, 50))
	require.Equal(t, 99.0, percentileMs(ns, 99))
	require.Equal(t, 0.0, percentileMs(nil, 99))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 2, 3}))
}
