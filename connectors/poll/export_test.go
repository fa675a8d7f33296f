package poll

import (
	"context"
	"time"
)

// SetSleep replaces how s waits out a rate limit, so tests can see the wait
// without spending it.
func SetSleep(s *Source, f func(ctx context.Context, d time.Duration) error) { s.sleep = f }
