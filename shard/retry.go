package shard

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
)

// backoff spaces the retries of a failing request: from base, doubling up
// to limit, with up to 20% jitter so that members do not retry together.
type backoff struct {
	base, limit, next time.Duration
}

func newBackoff(base, limit time.Duration) *backoff {
	base = max(base, time.Millisecond)
	return &backoff{base: base, limit: limit, next: base}
}

func (b *backoff) delay() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.limit)
	return d + time.Duration(rand.Float64()*0.2*float64(d))
}

func (b *backoff) reset() { b.next = b.base }

// failures logs a streak of failures of one operation without flooding:
// the first at error level, then at most one line a minute, and one line
// on recovery.
type failures struct {
	log     logr.Logger
	clock   clock.PassiveClock
	msg     string
	count   int
	lastLog time.Time
}

func (f *failures) failed(err error, kv ...any) {
	f.count++
	now := f.clock.Now()
	if f.count == 1 || now.Sub(f.lastLog) >= time.Minute {
		f.lastLog = now
		f.log.Error(err, f.msg, append([]any{"failures", f.count}, kv...)...)
		return
	}
	f.log.V(4).Info(f.msg, append([]any{"failures", f.count, "err", err.Error()}, kv...)...)
}

func (f *failures) succeeded() {
	if f.count > 0 {
		f.log.Info("Recovered", "operation", f.msg, "failures", f.count)
	}
	f.count = 0
}

// timeout is context.WithTimeout on clock c, so that request timeouts
// follow a fake clock in tests.
func timeout(ctx context.Context, c clock.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := c.NewTimer(d)
	go func() {
		defer t.Stop()
		select {
		case <-t.C():
			cancel(context.DeadlineExceeded)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// permanent reports whether err is the API server refusing a request for
// a reason that retrying the same request cannot fix: RBAC forbids it
// (403), it is malformed or invalid (400, 422), too large (413), or its
// method or media type is not served (405, 406, 415). Everything else (no
// answer, timeouts, 5xx, 429, conflicts) is transient. A 404's meaning
// depends on the request; callers decide it before asking.
func permanent(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) ||
		apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsMethodNotSupported(err) ||
		apierrors.IsNotAcceptable(err) || apierrors.IsUnsupportedMediaType(err)
}
