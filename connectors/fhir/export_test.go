package fhir

import (
	"context"
	"time"
)

// SetSleep replaces the wait between listing retries; f records each wait.
func (c *Connector) SetSleep(f func(d time.Duration)) {
	c.sleep = func(ctx context.Context, d time.Duration) error {
		f(d)
		return ctx.Err()
	}
}
