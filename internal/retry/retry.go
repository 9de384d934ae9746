// Package retry is how every loop of leasehold that talks to the API
// server waits and logs when a request fails: one jittered exponential
// Backoff, one Streak that logs a run of failures without flooding, one
// classification of the errors that retrying cannot fix (Permanent), and
// request timeouts that follow the caller's clock (WithTimeout, Sleep).
// The election (the root package), shard and the coordinated candidacy
// share it.
package retry

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
)

// Backoff spaces the retries of a failing request: it starts at base,
// doubles up to limit, and adds up to 20% jitter so that candidates do
// not retry in lockstep.
type Backoff struct {
	clock             clock.Clock
	base, limit, next time.Duration
}

// NewBackoff returns a Backoff on clock c from base (at least 1ms) to limit.
func NewBackoff(c clock.Clock, base, limit time.Duration) *Backoff {
	base = max(base, time.Millisecond)
	return &Backoff{clock: c, base: base, limit: limit, next: base}
}

// Delay returns the next wait and advances the backoff.
func (b *Backoff) Delay() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.limit)
	return d + time.Duration(rand.Float64()*0.2*float64(d))
}

// Wait sleeps for the next delay. It returns false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	return Sleep(ctx, b.clock, b.Delay())
}

// Reset starts the backoff again from base, after a success.
func (b *Backoff) Reset() { b.next = b.base }

// Sleep waits d on clock c. It returns false if ctx ended first.
func Sleep(ctx context.Context, c clock.Clock, d time.Duration) bool {
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// WithTimeout is context.WithTimeout driven by clock c, so that request
// timeouts follow a fake clock in tests. With a clock that can run a
// function later (clock.WithDelayedExecution, as the real and the fake
// clocks can) it starts no goroutine.
func WithTimeout(ctx context.Context, c clock.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	if delayed, ok := c.(clock.WithDelayedExecution); ok {
		t := delayed.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
		return ctx, func() { t.Stop(); cancel(context.Canceled) }
	}
	t := c.NewTimer(d)
	go func() {
		select {
		case <-t.C():
			cancel(context.DeadlineExceeded)
		case <-ctx.Done():
		}
		t.Stop()
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// Streak logs a run of failures of one operation without flooding: the
// first failure at error level, then one line a minute at most, and one
// line when the operation recovers. OnFailure and OnSuccess, if set, are
// told of every failure and success (the election's health).
type Streak struct {
	Log       logr.Logger
	Clock     clock.PassiveClock
	Msg       string
	OnFailure func(error)
	OnSuccess func()

	count   int
	lastLog time.Time
}

// NewStreak returns a Streak that logs msg through log.
func NewStreak(c clock.PassiveClock, log logr.Logger, msg string) *Streak {
	return &Streak{Clock: c, Log: log, Msg: msg}
}

// Failed records one failure, with extra key/value pairs for the log.
func (s *Streak) Failed(err error, kv ...any) {
	if s.OnFailure != nil {
		s.OnFailure(err)
	}
	s.count++
	now := s.Clock.Now()
	if s.count == 1 || now.Sub(s.lastLog) >= time.Minute {
		s.lastLog = now
		s.Log.Error(err, s.Msg, append([]any{"failures", s.count}, kv...)...)
		return
	}
	s.Log.V(4).Info(s.Msg, append([]any{"failures", s.count, "err", err.Error()}, kv...)...)
}

// Succeeded ends the streak, saying so if it had failures.
func (s *Streak) Succeeded() {
	if s.OnSuccess != nil {
		s.OnSuccess()
	}
	if s.count > 0 {
		s.Log.Info("Recovered", "operation", s.Msg, "failures", s.count)
	}
	s.count = 0
}

// Permanent reports whether err is the API server refusing a request for
// a reason that sending it again cannot fix: RBAC forbids it (403), it is
// malformed or invalid (400, 422), too large (413), or its method or
// media type is not served (405, 406, 415). Everything else (no answer,
// timeouts, 5xx, 429, conflicts) is transient. A 404's meaning depends on
// the request; callers decide it before asking.
func Permanent(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) ||
		apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsMethodNotSupported(err) ||
		apierrors.IsNotAcceptable(err) || apierrors.IsUnsupportedMediaType(err)
}
