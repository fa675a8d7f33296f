package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"

	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/store/storetest"
	"github.com/clinicbridge/clinicbridge/internal/testutil"
)

func TestSQLite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, p store.Params) store.Store {
		p.Driver = "sqlite"
		p.Path = filepath.Join(t.TempDir(), "cb.db")
		s, err := store.Open(context.Background(), p)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	url := testutil.PostgresURL(t)
	storetest.Run(t, func(t *testing.T, p store.Params) store.Store {
		p.Driver = "postgres"
		p.URL = url
		p.Schema = testutil.TempSchema(t, url)
		s, err := store.Open(context.Background(), p)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestSQLiteServesOneAgent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	s, err := store.Open(context.Background(), store.Params{Path: path})
	require.NoError(t, err)
	_, err = store.Open(context.Background(), store.Params{Path: path})
	require.ErrorContains(t, err, "in use by another clinicbridge process")
	require.NoError(t, s.Close())
	s, err = store.Open(context.Background(), store.Params{Path: path})
	require.NoError(t, err, "the lock goes with the store")
	require.NoError(t, s.Close())
}

func TestAuditTamper(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cb.db")
	ctx := context.Background()
	s, err := store.Open(ctx, store.Params{Path: path})
	require.NoError(t, err)
	for _, a := range []string{"replay", "purge", "rekey"} {
		require.NoError(t, s.Audit(ctx, store.AuditEntry{Actor: "admin", Action: a, Target: "x", Outcome: "ok"}))
	}
	require.NoError(t, s.Close())

	// Someone with the disk edits entry 2.
	raw, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	_, err = raw.Exec(`UPDATE cb_audit SET outcome = 'denied' WHERE seq = 2`)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	s, err = store.Open(ctx, store.Params{Path: path})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.VerifyAudit(ctx)
	var broken *store.AuditBroken
	require.ErrorAs(t, err, &broken)
	require.Equal(t, int64(2), broken.Seq)
	require.Contains(t, err.Error(), "entry 2")
}

// TestEncryptionAtRest: with a key, the SQLite file holds none of a
// payload's values; after rotating keys old rows still open; rekey leaves
// nothing under the old key.
func TestEncryptionAtRest(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
	dir := t.TempDir()
	path := filepath.Join(dir, "cb.db")
	ctx := context.Background()
	values := []string{"Jane Marker-Example", "+447911123456", "jane.marker@example.org", "refresh-token-marker"}
	open := func(keys ...string) store.Store {
		s, err := store.Open(ctx, store.Params{Path: path, EncryptionKeys: keys})
		require.NoError(t, err)
		return s
	}
	s := open(oldKey)
	for i := range 50 {
		ev := connectors.Event{Source: "src", ID: fmt.Sprint("e", i), Type: "t", Payload: json.RawMessage(fmt.Sprintf(`{"name":%q,"phone":%q,"email":%q}`, values[0], values[1], values[2]))}
		_, err := s.Accept(ctx, []store.Incoming{{Event: ev}})
		require.NoError(t, err)
	}
	require.NoError(t, s.State("books").Put(ctx, "token", []byte(values[3])))
	require.NoError(t, s.Close())
	grep := func() []string {
		var found []string
		for _, f := range []string{path, path + "-wal"} {
			raw, err := os.ReadFile(f)
			if os.IsNotExist(err) {
				continue
			}
			require.NoError(t, err)
			for _, v := range values {
				if bytes.Contains(raw, []byte(v)) {
					found = append(found, v)
				}
			}
		}
		return found
	}
	require.Empty(t, grep(), "no payload value in the raw database file")

	// Rotate: the new key seals, the old one still opens.
	s = open(newKey, oldKey)
	ev, err := s.Event(ctx, "src", "e7")
	require.NoError(t, err)
	require.Contains(t, string(ev.Payload), values[0])
	n, err := s.Rekey(ctx)
	require.NoError(t, err)
	require.Equal(t, 51, n, "50 payloads and one token re-sealed")
	n, err = s.Rekey(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing left under the old key")
	require.NoError(t, s.Close())

	// Only the new key now: everything opens.
	s = open(newKey)
	defer s.Close()
	ev, err = s.Event(ctx, "src", "e49")
	require.NoError(t, err)
	require.Contains(t, string(ev.Payload), values[0])
	v, ok, err := s.State("books").Get(ctx, "token")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, values[3], string(v))
	require.Empty(t, grep())

	// Without any key the sealed rows say so instead of returning garbage.
	require.NoError(t, s.Close())
	s = open()
	_, err = s.Event(ctx, "src", "e1")
	require.ErrorIs(t, err, store.ErrSealed)
}

func TestPostgresOpenErrors(t *testing.T) {
	t.Parallel()
	url := testutil.PostgresURL(t)
	ctx := context.Background()

	// Unreachable: a clear error, classed as unavailable.
	_, err := store.Open(ctx, store.Params{Driver: "postgres", URL: "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"})
	require.ErrorIs(t, err, store.ErrUnavailable)
	require.Contains(t, err.Error(), "cannot reach postgres")

	// A schema newer than the binary: refuse to start, say what to do.
	schema := testutil.TempSchema(t, url)
	s, err := store.Open(ctx, store.Params{Driver: "postgres", URL: url, Schema: schema})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "INSERT INTO "+schema+".cb_schema (version) VALUES (999)")
	require.NoError(t, err)
	_, err = store.Open(ctx, store.Params{Driver: "postgres", URL: url, Schema: schema})
	require.ErrorContains(t, err, "newer than this binary knows")
	_, err = store.Open(ctx, store.Params{Driver: "postgres", URL: url, Schema: schema, NoMigrate: true})
	require.ErrorContains(t, err, "run `clinicbridge migrate`")

	// Two live agents may not share an id.
	schema2 := testutil.TempSchema(t, url)
	a, err := store.Open(ctx, store.Params{Driver: "postgres", URL: url, Schema: schema2, AgentID: "a1"})
	require.NoError(t, err)
	defer a.Close()
	_, err = store.Open(ctx, store.Params{Driver: "postgres", URL: url, Schema: schema2, AgentID: "a1"})
	require.ErrorContains(t, err, `another running agent uses store.agent_id "a1"`)
}
