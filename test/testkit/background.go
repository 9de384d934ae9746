package testkit

import (
	"context"
	"testing"
	"time"
)

// Background is a function (an elector's Run, a manager's Start) running
// in a goroutine until its context is cancelled: by Cancel or Stop, or
// when the test ends.
type Background struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	ended  time.Time
}

// Go runs run in a goroutine with a context derived from parent, named
// name in failures. When the test ends, the context is cancelled and the
// test waits for run to return, at most within: later, the test fails.
func Go(t testing.TB, parent context.Context, name string, within time.Duration, run func(ctx context.Context) error) *Background {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	b := &Background{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = run(ctx)
		b.ended = time.Now()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(within):
			t.Errorf("%s: did not return within %v of its ctx being cancelled", name, within)
		}
	})
	return b
}

// Cancel cancels the context; Done closes once run has returned.
func (b *Background) Cancel() { b.cancel() }

// Done is closed once run has returned.
func (b *Background) Done() <-chan struct{} { return b.done }

// Err is what run returned, once Done is closed.
func (b *Background) Err() error { return b.err }

// Ended is when run returned, once Done is closed.
func (b *Background) Ended() time.Time { return b.ended }

// Wait waits for run to return, at most within, and returns what it
// returned; later, it fails the test at once.
func (b *Background) Wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-b.done:
		return b.err
	case <-time.After(within):
		t.Fatalf("%s: did not return within %v", b.name, within)
		return nil
	}
}

// Stop cancels the context and waits for run to return, as Wait.
func (b *Background) Stop(t testing.TB, within time.Duration) error {
	t.Helper()
	b.cancel()
	return b.Wait(t, within)
}
