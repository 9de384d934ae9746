package leaseholdtest

import (
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// Clock is a fake clock for tests of code that elects a leader: set it as
// leasehold.Config.Clock, then move time with Advance. Stepping a bare
// FakeClock by a whole lease duration fires every timer at once, before
// the elector has sent the renewals that were due on the way, and it
// loses the lease; Advance instead moves time in steps of at most
// MaxStep and lets every elector react after each step (Settle).
//
// It works with a Server and with client-go's plain fake clientsets.
type Clock struct {
	*clocktesting.FakeClock

	// MaxStep is the largest single step Advance takes. Default 250ms;
	// keep it well below the RetryPeriod under test.
	MaxStep time.Duration

	srv *Server
}

// NewClock returns a Clock at start. srv, if not nil, is the Server the
// electors use: Settle then also waits until no request is in flight and
// every watch event has been read. Pass nil with a plain fake clientset.
func NewClock(start time.Time, srv *Server) *Clock {
	return &Clock{FakeClock: clocktesting.NewFakeClock(start), MaxStep: 250 * time.Millisecond, srv: srv}
}

// Advance moves the clock forward by d in steps of at most MaxStep,
// settling before the first step and after each one.
func (c *Clock) Advance(d time.Duration) {
	c.Settle()
	step := c.MaxStep
	if step <= 0 {
		step = 250 * time.Millisecond
	}
	for d > 0 {
		s := min(d, step)
		c.Step(s)
		d -= s
		c.Settle()
	}
}

// Settle waits, in real time, until the electors have reacted to
// everything so far: the number of timers waiting on the clock has stayed
// the same for a while and, with a Server, no request is in flight and no
// watch event is unread. It gives up after two seconds of real time, so a
// test that keeps a goroutine busy still makes progress.
func (c *Clock) Settle() {
	const (
		poll   = 100 * time.Microsecond
		stable = 10 // polls in a row with nothing changing
	)
	deadline := time.Now().Add(2 * time.Second)
	last, same := -1, 0
	for same < stable && time.Now().Before(deadline) {
		n := c.Waiters()
		busy := false
		if c.srv != nil {
			busy = c.srv.InFlight() > 0 || c.srv.Unread() > 0
		}
		if n == last && !busy {
			same++
		} else {
			last, same = n, 0
		}
		time.Sleep(poll)
	}
}
