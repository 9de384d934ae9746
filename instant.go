package leasehold

import (
	"time"

	"k8s.io/utils/clock"
)

// Elapsed time, and what a suspended machine does to it.
//
// Go measures elapsed time on the monotonic clock, which on Linux stops
// while the machine is suspended: a leader resumed after a suspend longer
// than RenewDeadline would still believe its term valid. So the leader's
// side (IsLeader, Term, the renew deadline) also reads the time since
// boot, which counts the suspend (CLOCK_BOOTTIME on Linux), and its term
// is valid only while both readings are within the deadline. Followers
// keep measuring expiry on the monotonic clock: a suspended follower
// waits longer, never less, so that side errs safe.

// instant is one reading of the elector's clock, with the time since boot
// (suspend included) read at the same moment; boot is negative where it
// is unknown (a platform without such a clock, or a test's clock that
// does not offer one).
type instant struct {
	at   time.Time
	boot time.Duration
}

// IsZero reports whether the instant was never set.
func (i instant) IsZero() bool { return i.at.IsZero() }

// elapsed returns the time from `from` to `to`: the larger of the clock's
// elapsed time and the time elapsed since boot, where both are known.
func elapsed(from, to instant) time.Duration {
	d := to.at.Sub(from.at)
	if from.boot >= 0 && to.boot >= 0 {
		d = max(d, to.boot-from.boot)
	}
	return d
}

// BootClock is implemented by a Config.Clock that can tell the time
// elapsed since the machine booted, counting time spent suspended. A test
// clock implements it to simulate a suspend: its Now stands still while
// SinceBoot advances. With the real clock (the default), leasehold reads
// CLOCK_BOOTTIME on Linux; elsewhere it uses the clock alone.
type BootClock interface {
	SinceBoot() time.Duration
}

// bootReader returns how to read the time since boot for clock c, or nil
// if there is none.
func bootReader(c clock.PassiveClock) func() time.Duration {
	switch c := c.(type) {
	case BootClock:
		return c.SinceBoot
	case clock.RealClock, *clock.RealClock:
		return sinceBoot // nil where the platform has none
	}
	return nil
}

// now reads the elector's clock and the time since boot.
func (e *Elector) now() instant {
	i := instant{at: e.clock.Now(), boot: -1}
	if e.boot != nil {
		i.boot = e.boot()
	}
	return i
}
