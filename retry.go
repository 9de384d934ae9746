package leasehold

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// backoff waits between retries of a failing request: it starts at base,
// doubles up to max, and adds up to 20% jitter so that candidates do not
// retry in lockstep.
type backoff struct {
	clock     clock.Clock
	base, max time.Duration
	next      time.Duration
}

func newBackoff(c clock.Clock, base, max time.Duration) *backoff {
	if base <= 0 {
		base = time.Millisecond
	}
	return &backoff{clock: c, base: base, max: max, next: base}
}

// delay returns the next wait and advances the backoff.
func (b *backoff) delay() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	return d + time.Duration(rand.Float64()*0.2*float64(d))
}

// wait sleeps for the next delay. It returns false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	return sleep(ctx, b.clock, b.delay())
}

func (b *backoff) reset() { b.next = b.base }

// sleep waits d on clock c. It returns false if ctx ended first.
func sleep(ctx context.Context, c clock.Clock, d time.Duration) bool {
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// withClockTimeout is context.WithTimeout driven by clock c, so that request
// timeouts follow a fake clock in tests. It starts no goroutine: the
// clock's own timer cancels the ctx.
func withClockTimeout(ctx context.Context, c clock.Clock, d time.Duration) (context.Context, context.CancelFunc) {
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

// errorStreak logs a run of failures of one operation without flooding:
// the first failure at error level, then one summary per minute at most,
// and one line when the operation recovers.
type errorStreak struct {
	health   *apiHealth // optional: told of every failure and success
	clock    clock.PassiveClock
	log      logr.Logger
	msg      string
	count    int
	lastLog  time.Time
	interval time.Duration
}

func newErrorStreak(c clock.PassiveClock, log logr.Logger, msg string) *errorStreak {
	return &errorStreak{clock: c, log: log, msg: msg, interval: time.Minute}
}

func (s *errorStreak) failed(err error) {
	if unreachable(err) {
		s.health.failed(s.clock.Now())
	}
	s.count++
	now := s.clock.Now()
	if s.count == 1 || now.Sub(s.lastLog) >= s.interval {
		s.lastLog = now
		s.log.Error(err, s.msg, "failures", s.count)
		return
	}
	s.log.V(4).Info(s.msg, "failures", s.count, "err", err)
}

func (s *errorStreak) succeeded() {
	s.health.succeeded()
	if s.count > 0 {
		s.log.Info("Recovered", "operation", s.msg, "failures", s.count)
	}
	s.count = 0
}
