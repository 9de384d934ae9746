// Package sleep waits for a while or until a context ends, whichever is
// first: the one way the test module's harnesses (bench, chaos, slowapi,
// walkthrough) sleep.
package sleep

import (
	"context"
	"time"
)

// For sleeps d, and returns nil; or returns ctx.Err() as soon as ctx ends.
func For(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
