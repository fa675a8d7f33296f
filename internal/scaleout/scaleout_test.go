package scaleout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/internal/crashtest/agentproc"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/testutil"
)

const secret = "whsec_c2NhbGUtb3V0LXRlc3Qtc2VjcmV0LWZvci1jbGluaWNicmlkZ2U="

var (
	binOnce sync.Once
	bin     string
	binErr  error
)

// binary builds the agent once for the package.
func binary(t *testing.T) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cb-scaleout-")
		if err != nil {
			binErr = err
			return
		}
		bin, binErr = agentproc.Build(context.Background(), dir)
	})
	require.NoError(t, binErr)
	return bin
}

// database makes a fresh schema and returns a URL whose search_path is it.
func database(t *testing.T) string {
	url := testutil.PostgresURL(t)
	schema := testutil.TempSchema(t, url)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	conn.Close(ctx)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable&search_path=%s", cfg.User, cfg.Host, cfg.Port, cfg.Database, schema)
}

// sink records every delivered document by route and id, with arrival times.
type sink struct {
	mu    sync.Mutex
	seen  map[string]int // route/id -> deliveries
	times []time.Time
}

func newSink(t *testing.T) (*sink, string) {
	s := &sink{seen: map[string]int{}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var doc struct{ ID, Kind string }
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &doc)
	s.mu.Lock()
	s.seen[doc.Kind+"/"+doc.ID]++
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *sink) count(kind, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[kind+"/"+id]
}

// agentConfig writes agent i's config into dir.
func agentConfig(t *testing.T, dir string, i int, dbURL, extra string) string {
	cfg := fmt.Sprintf(`version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
store: {driver: postgres, url: %q, agent_id: agent-%d}
log: {level: info}
connectors:
  inbox: {type: webhook, webhook_secret: %q}
%s`, dbURL, i, secret, extra)
	path := filepath.Join(dir, "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// agentLogs keeps what every agent a test started logged, for the lines a
// failure needs explained.
type agentLogs struct {
	mu   sync.Mutex
	bufs []*testutil.Buffer
}

func (l *agentLogs) next() *testutil.Buffer {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &testutil.Buffer{}
	l.bufs = append(l.bufs, b)
	return b
}

// lines logs every agent's lines that contain s (an event id: lines carry
// ids and states, never payload values).
func (l *agentLogs) lines(t *testing.T, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, b := range l.bufs {
		for line := range strings.SplitSeq(b.String(), "\n") {
			if strings.Contains(line, s) {
				t.Logf("agent log %d: %s", i, line)
			}
		}
	}
}

func start(t *testing.T, path string) *agentproc.Proc {
	return startLogged(t, path, nil)
}

func startLogged(t *testing.T, path string, logs *agentLogs) *agentproc.Proc {
	var opts agentproc.Options
	if logs != nil {
		opts.Stderr = logs.next()
	}
	p, err := agentproc.Start(context.Background(), binary(t), path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Stop(10 * time.Second) })
	return p
}

var client = &http.Client{Timeout: 5 * time.Second}

// send posts one signed event to an agent and reports whether it was accepted.
func send(t *testing.T, hooksAddr, id string, data map[string]any) (int, error) {
	body, _ := json.Marshal(map[string]any{"type": "booking.created", "data": data})
	h, err := webhook.SignStandard(secret, id, time.Now(), body)
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodPost, "http://"+hooksAddr+"/hooks/inbox", strings.NewReader(string(body)))
	req.Header = h
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

const routes = `  sink: {type: http, url: %q}
routes:
  - name: now
    from: inbox
    map: {fields: {id: {from: payload.data.id}, kind: {value: now}}}
    to: sink
    retry: {backoff: [200ms]}
  - name: reminder
    from: inbox
    key: payload.data.id
    at: date(payload.data.remind_at)
    map: {fields: {id: {from: payload.data.id}, kind: {value: reminder}}}
    to: sink
    retry: {backoff: [200ms]}
`

// TestKillOneOfThreeAgents: three agents share Postgres and the load; one
// is killed with SIGKILL mid-run and restarted. Every accepted event is
// delivered, each event is stored once, and the reminders scheduled before
// the kill fire exactly once.
func TestKillOneOfThreeAgents(t *testing.T) {
	t.Parallel()
	dbURL := database(t)
	sk, sinkURL := newSink(t)
	var logs agentLogs
	var agents [3]*agentproc.Proc
	var paths [3]string
	for i := range agents {
		paths[i] = agentConfig(t, t.TempDir(), i, dbURL, fmt.Sprintf(routes, sinkURL))
		agents[i] = startLogged(t, paths[i], &logs)
	}
	var addrs [3]atomic.Value
	for i, a := range agents {
		addrs[i].Store(a.HooksAddr)
	}
	remindAt := time.Now().Add(12 * time.Second).UTC().Format(time.RFC3339Nano)

	var mu sync.Mutex
	accepted := map[string]bool{}
	sent := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, n)
				addr := addrs[(w+n)%3].Load().(string) // spread the load like a round-robin balancer
				mu.Lock()
				sent["evt_"+id] = true
				mu.Unlock()
				code, err := send(t, addr, "evt_"+id, map[string]any{"id": id, "remind_at": remindAt})
				if err == nil && code == http.StatusOK {
					mu.Lock()
					accepted[id] = true
					mu.Unlock()
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	agents[1].Kill()
	time.Sleep(time.Second)
	restarted, err := agentproc.Start(context.Background(), binary(t), paths[1], agentproc.Options{Stderr: logs.next()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = restarted.Stop(10 * time.Second) })
	addrs[1].Store(restarted.HooksAddr)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	require.NotEmpty(t, ids)
	missing := func(kind string) []string {
		var out []string
		for _, id := range ids {
			if sk.count(kind, id) == 0 {
				out = append(out, id)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(missing("now")) == 0 }, 90*time.Second, 200*time.Millisecond,
		"accepted events never delivered: %v", missing("now"))
	// The reminders fire after the kill and the restart, each once.
	require.Eventually(t, func() bool { return len(missing("reminder")) == 0 }, 90*time.Second, 200*time.Millisecond,
		"reminders never fired: %v", missing("reminder"))
	time.Sleep(time.Second)
	dups := 0
	adm := server.NewClient(agents[0].AdminAddr, "")
	for _, id := range ids {
		if n := sk.count("reminder", id); n != 1 {
			logJobs(t, adm, dbURL, id)
			logs.lines(t, `"evt_`+id+`"`)
			t.Fatalf("reminder for %s fired %d times", id, n)
		}
		if sk.count("now", id) > 1 {
			dups++
		}
	}
	// Each event is stored once: the ledger has exactly one delivery per route.
	var out struct{ Deliveries []store.Delivery }
	require.NoError(t, adm.Do(context.Background(), "GET", "/api/deliveries", map[string][]string{"route": {"now"}, "limit": {"10000"}}, nil, &out))
	rows := map[string]int{}
	for _, d := range out.Deliveries {
		rows[d.EventID]++
		require.True(t, sent[d.EventID], "a ledger row for an event never sent: %s", d.EventID)
	}
	for _, id := range ids {
		require.Equal(t, 1, rows["evt_"+id], "ledger rows for accepted event %s", id)
	}
	// Requests cut by the kill may have committed without their 2xx reaching
	// the sender: stored once all the same, never twice.
	for id, n := range rows {
		require.Equal(t, 1, n, "event %s stored %d times", id, n)
	}
	t.Logf("%d events accepted across 3 agents, one killed and restarted; all delivered; %d delivered twice (in flight at the kill); every reminder fired once", len(ids), dups)
}

// TestDatabaseAwayAndBack: every agent reaches Postgres through a proxy that
// is cut for a while. They answer 503 (and /readyz fails) while it is down,
// recover by themselves, and nothing they accepted is lost.
func TestDatabaseAwayAndBack(t *testing.T) {
	t.Parallel()
	dbURL := database(t)
	pcfg, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	proxy := testutil.NewProxy(t, fmt.Sprintf("%s:%d", pcfg.Host, pcfg.Port))
	proxied := strings.Replace(dbURL, fmt.Sprintf("%s:%d", pcfg.Host, pcfg.Port), proxy.Addr(), 1) + "&connect_timeout=2"
	sk, sinkURL := newSink(t)
	var agents [3]*agentproc.Proc
	for i := range agents {
		agents[i] = start(t, agentConfig(t, t.TempDir(), i, proxied, fmt.Sprintf(routes, sinkURL)))
	}
	remindAt := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano) // at in the past: sends at once

	var mu sync.Mutex
	accepted := map[string]bool{}
	codes := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, n)
				code, err := send(t, agents[(w+n)%3].HooksAddr, "evt_"+id, map[string]any{"id": id, "remind_at": remindAt})
				mu.Lock()
				if err == nil {
					codes[code]++
					if code == http.StatusOK {
						accepted[id] = true
					}
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	proxy.Cut()
	time.Sleep(1500 * time.Millisecond)
	resp, err := client.Get("http://" + agents[0].HooksAddr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "/readyz while the database is away")
	time.Sleep(1500 * time.Millisecond)
	proxy.Restore()
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + agents[2].HooksAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "the agent recovers without a restart")
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	require.Positive(t, codes[http.StatusServiceUnavailable], "503 while the database was away: %v", codes)
	require.Zero(t, codes[http.StatusInternalServerError], "never a 500: %v", codes)
	adm := server.NewClient(agents[0].AdminAddr, "")
	for id := range accepted {
		ok := false
		// River's stuck-job rescue (store.RescueAfter, 3 min) is the last
		// resort for a job whose state the outage left behind.
		logged := false
		for start, deadline := time.Now(), time.Now().Add(4*time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if sk.count("now", id) > 0 && sk.count("reminder", id) > 0 {
				ok = true
				break
			}
			if !logged && time.Since(start) > 30*time.Second {
				logged = true
				logJobs(t, adm, dbURL, id)
			}
		}
		if !ok {
			logJobs(t, adm, dbURL, id)
			t.Fatalf("event %s accepted but not delivered", id)
		}
	}
	t.Logf("answers while the database went away and came back: %v; all %d accepted events delivered", codes, len(accepted))
}

// TestSharedRateLimit: a 60/min limit on a sink holds at the sink with
// three agents sending, measured over 3 minutes.
func TestSharedRateLimit(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("3 minutes: skipped with -short")
	}
	dbURL := database(t)
	sk, sinkURL := newSink(t)
	extra := fmt.Sprintf(`  sink: {type: http, url: %q, rate: 60/min}
routes:
  - name: now
    from: inbox
    map: {fields: {id: {from: payload.data.id}, kind: {value: now}}}
    to: sink
    retry: {max_attempts: 3, backoff: [1s]}
`, sinkURL)
	var agents [3]*agentproc.Proc
	for i := range agents {
		agents[i] = start(t, agentConfig(t, t.TempDir(), i, dbURL, extra))
	}
	// 240 events, 80 per agent: far more than 3 minutes at 60/min allow.
	for n := range 240 {
		code, err := send(t, agents[n%3].HooksAddr, fmt.Sprint("evt_", n), map[string]any{"id": fmt.Sprint(n)})
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
	}
	time.Sleep(3 * time.Minute)
	sk.mu.Lock()
	times := append([]time.Time(nil), sk.times...)
	sk.mu.Unlock()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	most := 0
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Minute {
			j++
		}
		most = max(most, j-i)
	}
	t.Logf("%d calls at the sink in 3 minutes from 3 agents; at most %d in any 60 s window", len(times), most)
	require.GreaterOrEqual(t, len(times), 150, "the limit is not starving the sink")
	require.LessOrEqual(t, most, 61, "60/min across all agents (plus a burst of one)")
}

// TestCronOncePerSlotWithThreeAgents: River's leader schedules reconcile
// runs, so three agents run each one-second slot once over 30 s.
func TestCronOncePerSlotWithThreeAgents(t *testing.T) {
	t.Parallel()
	dbURL := database(t)
	list := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"items": []}`))
	}))
	t.Cleanup(list.Close)
	extra := fmt.Sprintf(`  clinic:
    type: poll
    url: %q
    items: body.items
    event: {id: item.id, updated_at: item.updated_at}
  out: {type: http, url: %q}
reconcile:
  - {name: every-second, from: clinic, schedule: "*/1 * * * * *", lookback: 1m}
routes:
  - {name: sync, from: clinic, map: {fields: {id: {from: payload.id}}}, to: out}
`, list.URL+"/items", list.URL+"/deliver")
	var agents [3]*agentproc.Proc
	// The first agent schedules runs while the others are still starting,
	// so the slots are counted from its start, not from the last one's.
	began := time.Now()
	for i := range agents {
		agents[i] = start(t, agentConfig(t, t.TempDir(), i, dbURL, extra))
	}
	time.Sleep(30 * time.Second)
	var out struct{ Runs []store.Run }
	adm := server.NewClient(agents[0].AdminAddr, "")
	require.NoError(t, adm.Do(context.Background(), "GET", "/api/reconcile/runs", map[string][]string{"limit": {"1000"}}, nil, &out))
	slots := int(time.Since(began)/time.Second) + 1
	perSlot := map[int64]int{}
	for _, r := range out.Runs {
		perSlot[r.StartedAt.Unix()]++
	}
	for slot, n := range perSlot {
		require.Equal(t, 1, n, "slot %s ran %d times", time.Unix(slot, 0).UTC().Format(time.TimeOnly), n)
	}
	require.GreaterOrEqual(t, len(out.Runs), 20, "the schedule ran")
	require.LessOrEqual(t, len(out.Runs), slots, "at most one run per slot")
	t.Logf("%d runs in %d one-second slots across 3 agents, one per slot", len(out.Runs), slots)
}

// logJobs logs the ledger rows of event id and the state of their River jobs.
func logJobs(t *testing.T, adm *server.Client, dbURL, id string) {
	var out struct{ Deliveries []store.Delivery }
	_ = adm.Do(context.Background(), "GET", "/api/deliveries", map[string][]string{"limit": {"10000"}}, nil, &out)
	for _, d := range out.Deliveries {
		if d.EventID != "evt_"+id {
			continue
		}
		t.Logf("delivery %s route %s state %s attempts %d job %d error %q", d.ID, d.Route, d.State, d.Attempts, d.JobID, d.LastError)
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			continue
		}
		var state string
		var attempt int
		var by []string
		var at *time.Time
		_ = conn.QueryRow(context.Background(), `SELECT state, attempt, COALESCE(attempted_by, '{}'), attempted_at FROM river_job WHERE id = $1`, d.JobID).Scan(&state, &attempt, &by, &at)
		t.Logf("  job %d: state %s attempt %d attempted_by %v attempted_at %v", d.JobID, state, attempt, by, at)
		conn.Close(context.Background())
	}
}
