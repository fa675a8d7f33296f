package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

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

func TestPhases(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"all", "ingest", "accept"} {
		_, err := parseFlags([]string{"--phase", ok}, io.Discard)
		require.NoError(t, err, ok)
	}
	_, err := parseFlags([]string{"--phase", "deliver"}, io.Discard)
	require.Error(t, err)
	// accept writes the started agent's route; a target's config is its own.
	_, err = parseFlags([]string{"--phase", "accept", "--target", "http://127.0.0.1:8080", "--secret", "whsec_abc"}, io.Discard)
	require.ErrorContains(t, err, "--phase accept")
}

func TestBodyIsValidJSONOfTheRequestedSize(t *testing.T) {
	t.Parallel()
	w, err := newWorker(shape{targets: []string{"http://127.0.0.1:1/hooks/inbox"}, bodySize: 1024, marker: `M"1`}, 0)
	require.NoError(t, err)
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

	small, err := newWorker(shape{targets: []string{"http://127.0.0.1:1/hooks/inbox"}, bodySize: 0, marker: "m"}, 0)
	require.NoError(t, err)
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

// The tool's own client speaks plain HTTP/1.1 to net/http's server: the
// request arrives whole, connections are reused, a "Connection: close" or
// a chunked answer is handled, and a cancelled run does not wait.
func TestPostConnSpeaksHTTP(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.Header.Get("X-Case") {
		case "close":
			w.Header().Set("Connection", "close")
		case "chunked":
			w.(http.Flusher).Flush() // no Content-Length: chunked
		case "slow":
			time.Sleep(2 * time.Second)
		}
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"), b)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	p, err := newPostConn(srv.URL + "/hooks/inbox")
	require.NoError(t, err)
	defer p.close()
	post := func(ctx context.Context, c string) (string, error) {
		resp, err := p.post(ctx, http.Header{"Content-Type": {"application/json"}, "X-Case": {c}}, []byte(`{"n":1}`))
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		p.done(resp)
		return string(b), nil
	}
	for _, c := range []string{"", "", "chunked", "close", ""} {
		got, err := post(context.Background(), c)
		require.NoError(t, err)
		require.Equal(t, `POST /hooks/inbox application/json {"n":1}`, got, c)
	}
	require.EqualValues(t, 2, conns.Load(), "one connection until the server closed it")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = post(ctx, "slow")
	require.Error(t, err)
	require.Less(t, time.Since(start), time.Second)
	require.Equal(t, "canceled", transportClass(ctx, err))
}
