package app

import (
	"context"

	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Migrate brings the store's schema (ours and River's) up to this binary's
// and returns the version. It is what `run` does at start unless
// store.migrate is false.
func (a *Agent) Migrate(ctx context.Context) (int, error) {
	cfg := a.Config.Store
	st, err := store.Open(ctx, store.Params{Driver: cfg.Driver, Path: cfg.Path, URL: cfg.URL, EncryptionKeys: cfg.EncryptionKey})
	if err != nil {
		return 0, err
	}
	return store.SchemaVersion, st.Close()
}
