package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/poll/pollfake"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/testutil"
)

// quietSource lists nothing: the test is about how often runs happen.
type quietSource struct{}

func (quietSource) Verify(*connectors.Request) error { return connectors.ErrUnauthorized }
func (quietSource) Parse(*connectors.Request) (connectors.Inbound, error) {
	return connectors.Inbound{}, nil
}
func (quietSource) List(context.Context, connectors.ListParams, func(connectors.Page) error) error {
	return nil
}

func listerType() connectors.Type {
	return connectors.Type{
		Name: "quiet", Doc: "test lister", Source: true, Lister: true,
		Build: func(*yaml.Node, connectors.Env) (any, error) { return quietSource{}, nil },
	}
}

// TestTwoAgentsRunEachSlotOnce: River's leader schedules periodic jobs, so
// two agents on one Postgres run each cron slot once, not twice.
func TestTwoAgentsRunEachSlotOnce(t *testing.T) {
	t.Parallel()
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
	dbURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable&search_path=%s", cfg.User, cfg.Host, cfg.Port, cfg.Database, schema)

	reg := all.Registry()
	reg.Register(listerType())
	const conf = `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
store: {driver: postgres, url: "%s"}
connectors:
  src: {type: quiet}
reconcile:
  - {name: every-second, from: src, schedule: "*/1 * * * * *", lookback: 1m}
`
	var admin *server.Client
	for i := range 2 {
		dir := t.TempDir()
		path := filepath.Join(dir, "clinicbridge.yaml")
		require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(conf, dbURL)), 0o600))
		a, err := app.Load(path, reg, config.Options{}, zerolog.Nop())
		require.NoError(t, err)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		ready := make(chan net.Addr, 1)
		go func() {
			done <- a.Run(runCtx, zerolog.Nop(), app.RunOptions{Ready: func(_, ad net.Addr) { ready <- ad }})
		}()
		ad := <-ready
		if i == 0 {
			admin = server.NewClient(ad.String(), "")
		}
		t.Cleanup(func() { cancel(); <-done; a.Close() })
	}
	time.Sleep(10 * time.Second)
	var out struct{ Runs []store.Run }
	require.NoError(t, admin.Do(ctx, "GET", "/api/reconcile/runs", nil, nil, &out))
	perSlot := map[int64]int{}
	for _, r := range out.Runs {
		require.Equal(t, "schedule", r.Trigger)
		perSlot[r.StartedAt.Unix()]++
	}
	require.GreaterOrEqual(t, len(out.Runs), 5, "the schedule ran")
	require.LessOrEqual(t, len(out.Runs), 11, "at most one run per one-second slot over 10 s")
	for slot, n := range perSlot {
		require.Equal(t, 1, n, "slot %s ran %d times", time.Unix(slot, 0).UTC().Format(time.TimeOnly), n)
	}
	t.Logf("%d runs in 10 s, one per slot", len(out.Runs))
}

// TestPollBecomesDeliveries: a list API with no webhooks, polled by a
// reconciler: new and updated items become deliveries once each.
func TestPollBecomesDeliveries(t *testing.T) {
	t.Parallel()
	api := pollfake.New()
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	b := start(t, `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
connectors:
  clinic:
    type: poll
    url: "`+apiSrv.URL+`/items"
    items: body.items
    event: {id: item.id, updated_at: item.updated_at}
  sink: {type: http, url: "{{SINK}}/patients"}
reconcile:
  - {name: patients, from: clinic, schedule: "@every 1h", lookback: 1m}
routes:
  - name: sync
    from: clinic
    map: {fields: {id: {from: payload.id}, name: {from: payload.name}}}
    to: sink
`, "")
	ctx := context.Background()
	run := func() store.Run {
		var out struct{ Run store.Run }
		require.NoError(t, b.admin.Do(ctx, "POST", "/api/reconcile/patients/run", nil, nil, &out))
		return out.Run
	}
	delivered := func() []string {
		var names []string
		for _, r := range b.sink.Requests() {
			var doc map[string]any
			require.NoError(t, json.Unmarshal(r.Body, &doc))
			names = append(names, doc["name"].(string))
		}
		return names
	}
	api.Upsert(map[string]any{"id": "p1", "name": "Ada"})
	api.Upsert(map[string]any{"id": "p2", "name": "Grace"})
	require.Equal(t, 2, run().Recovered)
	require.Eventually(t, func() bool { return len(b.sink.Requests()) == 2 }, 10*time.Second, 20*time.Millisecond)

	api.Upsert(map[string]any{"id": "p1", "name": "Ada Lovelace"}) // an update
	r := run()
	require.Equal(t, 1, r.Recovered)
	require.Eventually(t, func() bool { return len(b.sink.Requests()) == 3 }, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, run().Recovered, "a run with nothing new delivers nothing")
	time.Sleep(200 * time.Millisecond)
	require.ElementsMatch(t, []string{"Ada", "Grace", "Ada Lovelace"}, delivered())
}
