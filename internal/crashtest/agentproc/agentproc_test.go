package agentproc

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/stretchr/testify/require"
)

func TestLogWriterFindsTheRunningLineAcrossWrites(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	w := &logWriter{out: &out, ready: make(chan runningLine, 1)}
	line := `{"level":"info","listen":"127.0.0.1:4001","admin":"127.0.0.1:4002","message":"clinicbridge running"}` + "\n"
	// exec copies the pipe in arbitrary chunks: a line may arrive in pieces.
	_, _ = w.Write([]byte(`{"level":"warn","message":"x"}` + "\n" + line[:20]))
	_, _ = w.Write([]byte(line[20:]))
	select {
	case r := <-w.ready:
		require.Equal(t, "127.0.0.1:4001", r.Listen)
		require.Equal(t, "127.0.0.1:4002", r.Admin)
	default:
		t.Fatal("running line not seen")
	}
	require.Equal(t, `{"level":"warn","message":"x"}`+"\n"+line, out.String(), "everything is forwarded")
	w.mu.Lock()
	counts := [3]int64{w.lines, w.warns, w.errs}
	w.mu.Unlock()
	require.Equal(t, [3]int64{2, 1, 0}, counts)
}

func TestParseDocAcceptsNumbersAndStrings(t *testing.T) {
	t.Parallel()
	d, err := parseDoc([]byte(`{"marker":"m","seq":42,"sent_ns":1795857240818021886}`))
	require.NoError(t, err)
	require.Equal(t, Delivery{Seq: 42, SentNs: 1795857240818021886, Marker: "m"}, d)

	// A mapping that went through float64 may print an exponent.
	d, err = parseDoc([]byte(`{"marker":"m","seq":"7","sent_ns":1.7958572408180219e+18}`))
	require.NoError(t, err)
	require.Equal(t, int64(7), d.Seq)
	require.InDelta(t, 1.7958572408180219e18, float64(d.SentNs), 1e3)

	_, err = parseDoc([]byte(`{"marker":"m","seq":null}`))
	require.Error(t, err)
}

func TestConfigQuotesValues(t *testing.T) {
	t.Parallel()
	y := string(Config{Secret: "whsec_abc+/=", SinkURL: "http://127.0.0.1:1/deliver", Store: "postgres", PostgresURL: "postgres://u@127.0.0.1/db?sslmode=disable"}.YAML())
	require.Contains(t, y, `webhook_secret: "whsec_abc+/="`)
	require.Contains(t, y, `{driver: postgres, url: "postgres://u@127.0.0.1/db?sslmode=disable"}`)
	require.Contains(t, y, `listen: "127.0.0.1:0"`)
}

// The configs the load tool and the crash test write are ones the agent
// loads: with every event delivered, and with the accept path alone.
func TestConfigLoads(t *testing.T) {
	t.Parallel()
	for _, when := range []string{"", "false"} {
		c := Config{Secret: "whsec_dGVzdC1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZS10ZXN0cw==", SinkURL: "http://127.0.0.1:1/deliver", When: when}
		cfg, err := config.Parse(filepath.Join(t.TempDir(), "clinicbridge.yaml"), c.YAML(), all.Registry(), config.Options{})
		require.NoError(t, err, "when %q", when)
		require.Len(t, cfg.Routes, 1)
		require.Equal(t, when, cfg.Routes[0].When)
	}
}

// A fast sink speaks keep-alive HTTP/1.1 to net/http's client: each request
// is answered 200 and counted, one connection serves them all until the
// client asks to close it, and Close ends what is open.
func TestFastSinkAnswersOnOneConnection(t *testing.T) {
	t.Parallel()
	s, err := StartSink(SinkOptions{Fast: true})
	require.NoError(t, err)
	post := func(closeConn bool) {
		req, err := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(`{"marker":"m","seq":1,"sent_ns":2}`))
		require.NoError(t, err)
		req.Close = closeConn
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	for range 3 {
		post(false)
	}
	post(true)
	post(false)
	require.EqualValues(t, 5, s.Received())
	require.EqualValues(t, 2, s.Conns(), "one connection until the client closed it")
	require.NoError(t, s.Close())
	_, err = http.Post(s.URL, "application/json", strings.NewReader("{}"))
	require.Error(t, err, "closed")
}
