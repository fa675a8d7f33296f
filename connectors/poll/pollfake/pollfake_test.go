package pollfake_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/poll/pollfake"
)

func get(t *testing.T, h http.Handler, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestUpsertBumpsUpdatedAt(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2025, 1, 31, 9, 30, 0, 0, time.UTC)
	f := pollfake.New(pollfake.WithClock(func() time.Time { return fixed }))
	a := f.Upsert(map[string]any{"id": "1"})
	b := f.Upsert(map[string]any{"id": "1", "note": "changed"})
	require.Equal(t, "2025-01-31T09:30:00.000Z", a["updated_at"])
	require.Equal(t, "2025-01-31T09:30:00.001Z", b["updated_at"], "a change is always later, even within a millisecond")
	require.Equal(t, a["created_at"], b["created_at"])
	require.Len(t, f.Items(), 1)
}

func TestFiltersAndPaging(t *testing.T) {
	t.Parallel()
	start := time.Date(2025, 1, 31, 9, 0, 0, 0, time.UTC)
	n := 0
	f := pollfake.New(pollfake.WithClock(func() time.Time { n++; return start.Add(time.Duration(n) * time.Minute) }))
	for _, id := range []string{"a", "b", "c", "d"} {
		f.Upsert(map[string]any{"id": id})
	}
	ids := func(body []byte) string {
		var v struct {
			Items []map[string]any `json:"items"`
		}
		require.NoError(t, json.Unmarshal(body, &v))
		var out []string
		for _, it := range v.Items {
			out = append(out, it["id"].(string))
		}
		return strings.Join(out, ",")
	}
	require.Equal(t, "c,d", ids(get(t, f, "/items?updated_since=2025-01-31T09:03:00Z").Body.Bytes()))
	require.Equal(t, "d", ids(get(t, f, "/items?q[]=updated_at:>2025-01-31T09:03:00Z").Body.Bytes()))
	require.Equal(t, "b,c,d", ids(get(t, f, "/items?updated_since=1738314120").Body.Bytes()), "unix seconds")
	require.Equal(t, "c,d", ids(get(t, f, "/items?page=2&per_page=2").Body.Bytes()))
	require.Equal(t, http.StatusBadRequest, get(t, f, "/items?q[]=name:Jane").Code)

	w := get(t, f, "/items?per_page=3")
	var body struct {
		Links      map[string]any `json:"links"`
		NextCursor string         `json:"next_cursor"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
	require.Contains(t, body.Links["next"], "page=2")
	require.Contains(t, w.Header().Values("Link")[0], `rel="next"`)
	require.Equal(t, "d", ids(get(t, f, "/items?per_page=3&cursor="+body.NextCursor).Body.Bytes()))
}

func TestScriptedFailuresAndAuth(t *testing.T) {
	t.Parallel()
	f := pollfake.New(pollfake.WithBearer("t0k"))
	require.Equal(t, http.StatusUnauthorized, get(t, f, "/items").Code)
	auth := []string{"Authorization", "Bearer t0k"}
	f.RateLimitOnce(3 * time.Second)
	w := get(t, f, "/items", auth...)
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	require.Equal(t, "3", w.Header().Get("Retry-After"))
	require.Equal(t, http.StatusOK, get(t, f, "/items", auth...).Code, "once")
	f.FailPage(2, http.StatusBadGateway)
	require.Equal(t, http.StatusOK, get(t, f, "/items?page=1", auth...).Code)
	require.Equal(t, http.StatusBadGateway, get(t, f, "/items?page=2", auth...).Code)
	require.Equal(t, http.StatusOK, get(t, f, "/items?page=2", auth...).Code, "once")
	require.Len(t, f.Requests(), 6)
}
