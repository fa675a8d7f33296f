package app

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/clinicbridge/clinicbridge/internal/store"
)

// errNoStore is what a connector gets if it uses its state outside `run`
// (validate builds connectors without opening the store).
var errNoStore = errors.New("connector state is not available: the store is not open")

// lazyState is a connector's State before the store exists: connectors are
// built (and validated) before `run` opens the store, and bind to it then.
type lazyState struct {
	scope string
	st    *atomic.Pointer[store.Store]
}

func (l lazyState) get() (store.Store, error) {
	if p := l.st.Load(); p != nil {
		return *p, nil
	}
	return nil, errNoStore
}

func (l lazyState) Get(ctx context.Context, key string) ([]byte, bool, error) {
	s, err := l.get()
	if err != nil {
		return nil, false, err
	}
	return s.State(l.scope).Get(ctx, key)
}

func (l lazyState) Put(ctx context.Context, key string, value []byte) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.State(l.scope).Put(ctx, key, value)
}

func (l lazyState) Delete(ctx context.Context, key string) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.State(l.scope).Delete(ctx, key)
}
