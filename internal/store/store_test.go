package store_test

import (
	"context"
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
