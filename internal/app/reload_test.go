package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/internal/store"
)

const reloadConfig = `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
connectors:
  inbox: {type: webhook, webhook_secret: "` + secret + `"}
  sink: {type: http, url: "{{SINK}}/deliver"}
routes:
  - name: forward
    from: inbox
    map: {fields: {id: {from: payload.data.id}, version: {value: VERSION}}}
    to: sink
    retry: {backoff: [100ms]}
`

// TestReloadUnderLoad: while webhooks stream in, a valid change is applied,
// an invalid one is rejected with file:line:col and the old config keeps
// serving, and every accepted event is delivered exactly once.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	b := start(t, strings.Replace(reloadConfig, "VERSION", "v1", 1), "")
	src, err := os.ReadFile(b.path)
	require.NoError(t, err)
	rewrite := func(content string) {
		require.NoError(t, os.WriteFile(b.path+".tmp", []byte(content), 0o600))
		require.NoError(t, os.Rename(b.path+".tmp", b.path))
	}

	var mu sync.Mutex
	accepted := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				if b.send(t, "evt_"+id, booking(id, "")).StatusCode == http.StatusOK {
					mu.Lock()
					accepted[id] = true
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	rewrite(strings.Replace(string(src), "value: v1", "value: v2", 1))
	require.Eventually(t, func() bool { return strings.Contains(b.logs.String(), `"config reloaded"`) }, 5*time.Second, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	rewrite(strings.Replace(string(src), "    from: inbox", "    form: inbox", 1))
	require.Eventually(t, func() bool { return strings.Contains(b.logs.String(), "config reload rejected") }, 5*time.Second, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	// The rejection named the place, the old (v2) config kept serving.
	require.Contains(t, b.logs.String(), `routes[0].form: unknown key (did you mean \"from\"?)`)
	require.Contains(t, b.logs.String(), "clinicbridge.yaml:9:5:")

	mu.Lock()
	want := len(accepted)
	mu.Unlock()
	require.Eventually(t, func() bool { return len(b.sink.Requests()) >= want }, 30*time.Second, 50*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	seen := map[string]int{}
	versions := map[string]int{}
	for _, r := range b.sink.Requests() {
		var doc map[string]string
		require.NoError(t, json.Unmarshal(r.Body, &doc))
		seen[doc["id"]]++
		versions[doc["version"]]++
	}
	for id := range accepted {
		require.Equal(t, 1, seen[id], "event %s delivered %d times", id, seen[id])
	}
	require.Len(t, seen, want, "nothing delivered that was not accepted")
	require.Positive(t, versions["v1"])
	require.Positive(t, versions["v2"], "deliveries after the reload use the new mapping")
	var log struct{ Entries []store.AuditEntry }
	require.NoError(t, b.admin.Do(context.Background(), "GET", "/api/audit", nil, nil, &log))
	require.Len(t, log.Entries, 2)
	require.Equal(t, "reload", log.Entries[1].Action)
	require.Equal(t, "ok", log.Entries[1].Outcome)
	require.Equal(t, "file-watch", log.Entries[1].Actor)
	require.True(t, strings.HasPrefix(log.Entries[0].Outcome, "rejected: "))
	t.Logf("%d events accepted and delivered once each across a valid and an invalid reload (%v)", want, versions)
}
