package httpfake_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/http/httpfake"
)

type answer struct {
	status int
	body   string
	header http.Header
}

func post(t *testing.T, h http.Handler, key, body string) answer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/notes?x=1", strings.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return answer{rec.Code, string(b), rec.Result().Header}
}

func TestScriptReplayAndUnique(t *testing.T) {
	t.Parallel()
	var log bytes.Buffer
	f := httpfake.New(httpfake.WithLog(&log))
	f.Script(
		httpfake.Response{Status: 500},
		httpfake.Response{Status: 429, Header: http.Header{"Retry-After": {"2"}}},
	)
	require.Equal(t, 500, post(t, f, "k1", `{"a":1}`).status)
	a := post(t, f, "k1", `{"a":1}`)
	require.Equal(t, 429, a.status, "failures are not stored: the retry reaches the script")
	require.Equal(t, "2", a.header.Get("Retry-After"))
	first := post(t, f, "k1", `{"a":1}`)
	require.Equal(t, answer{200, `{"id":"1"}`, first.header}, first)
	require.Equal(t, first, post(t, f, "k1", `{"a":1}`), "a replay gets the first answer")
	require.Equal(t, 422, post(t, f, "k1", `{"a":2}`).status, "a reused key with another body")
	require.Equal(t, `{"id":"2"}`, post(t, f, "", `{"a":1}`).body)
	require.Equal(t, `{"id":"3"}`, post(t, f, "", `{"a":1}`).body, "no key, no dedupe")

	require.Equal(t, 3, f.Unique())
	require.Equal(t, 1, f.Replays())
	reqs := f.Requests()
	require.Len(t, reqs, 7)
	require.Equal(t, "/notes", reqs[0].Path)
	require.Equal(t, "x=1", reqs[0].Query)
	require.Equal(t, `{"a":1}`, string(reqs[0].Body))
	require.True(t, reqs[3].Replay)
	require.Equal(t, 7, strings.Count(log.String(), "\n"))
	require.NotContains(t, log.String(), `"a"`)

	f.Reset()
	require.Zero(t, f.Unique())
	require.Empty(t, f.Requests())
	require.Equal(t, `{"id":"1"}`, post(t, f, "k1", `{"a":1}`).body, "keys are forgotten")
}

func TestOtherIdempotencyHeader(t *testing.T) {
	t.Parallel()
	f := httpfake.New(httpfake.WithIdempotencyHeader("X-Request-Id"))
	for range 2 {
		req := httptest.NewRequest(http.MethodPut, "/x", strings.NewReader("{}"))
		req.Header.Set("X-Request-Id", "r1")
		f.ServeHTTP(httptest.NewRecorder(), req)
	}
	require.Equal(t, 1, f.Unique())
	require.Equal(t, 1, f.Replays())
}
