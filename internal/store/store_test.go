package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/internal/store/storetest"
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
	url := PostgresURL(t)
	storetest.Run(t, func(t *testing.T, p store.Params) store.Store {
		p.Driver = "postgres"
		p.URL = url
		p.Schema = TempSchema(t, url)
		s, err := store.Open(context.Background(), p)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// PostgresURL returns CLINICBRIDGE_TEST_POSTGRES_URL or skips.
func PostgresURL(t *testing.T) string {
	url := os.Getenv("CLINICBRIDGE_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("CLINICBRIDGE_TEST_POSTGRES_URL is not set: skipping the Postgres suite (.ci/run sets it)")
	}
	return url
}

// TempSchema creates a schema for one test and drops it afterwards, so runs
// never see each other's rows.
func TempSchema(t *testing.T, url string) string {
	name := fmt.Sprintf("cbtest_%d_%d", time.Now().UnixNano(), rand.IntN(1e6))
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Logf("drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+name+" CASCADE")
		if err != nil {
			t.Logf("drop schema %s: %v", name, err)
		}
	})
	return name
}
