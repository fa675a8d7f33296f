package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

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
