package leasehold

import (
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// suspendingClock is a fake clock whose monotonic reading (Now) stands
// still while the machine is suspended, and whose SinceBoot counts the
// suspend, as CLOCK_BOOTTIME does.
type suspendingClock struct {
	*clocktesting.FakeClock
	suspended atomic.Int64 // nanoseconds spent suspended
}

func (c *suspendingClock) SinceBoot() time.Duration {
	return c.Now().Sub(t0) + time.Duration(c.suspended.Load())
}

func (c *suspendingClock) suspend(d time.Duration) { c.suspended.Add(int64(d)) }

// Issue 20, 5: a leader resumed after a suspend longer than RenewDeadline
// no longer leads: IsLeader and Term are false at once, and its work is
// cancelled at the next timer, before any renewal is sent.
func TestSuspendLongerThanRenewDeadlineEndsTheTerm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		clk := &suspendingClock{FakeClock: h.clock}
		a := h.candidate("a", func(c *Config) { c.Clock = clk }).start()
		a.waitLeader()
		h.advance(3 * time.Second)
		if !a.e.IsLeader() {
			t.Fatal("not leading before the suspend")
		}
		updates := h.srv.Requests("a", "update")
		clk.suspend(20 * time.Second) // the monotonic clock stands still
		if a.e.IsLeader() {
			t.Fatal("IsLeader true after a 20s suspend (renew deadline 10s)")
		}
		if _, ok := a.e.Term(); ok {
			t.Fatal("Term valid after a 20s suspend")
		}
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrLeaderLost", err)
		}
		if n := h.srv.Requests("a", "update"); n != updates {
			t.Fatalf("%d renewals sent after the suspend; the term was over, none may be sent", n-updates)
		}
		if h.holder() != "a" {
			t.Fatalf("holder %q: a lost term must not be released", h.holder())
		}
	})
}
