package sim

// Paused processes: a candidate's process stops for a while (a GC's
// stop-the-world, SIGSTOP, a frozen VM, or a suspend of its machine),
// and nothing of it runs meanwhile; then it goes on as if nothing
// happened, and its first look at its clock shows the time it lost.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold"
)

// KindPause pauses a candidate's process (Target, or the leader of the
// moment) for Dur: its clock stands still and its timers do not fire,
// its requests are not sent and their answers not delivered, its watch
// events are held, its work does not move; at the end its clock jumps to
// true time (a suspend, Suspend set: it does not, as a monotonic clock
// does not count a suspend, while the time since boot does), what was due
// fires, and everything held arrives at once. A cancel or yield meant
// for a paused process waits for its resumption; a crash ends the pause.
const KindPause Kind = "pause"

// pauseSpan is one pause of an incarnation, in true (virtual) time; to
// is zero while it lasts.
type pauseSpan struct {
	from, to time.Time
	until    time.Time // when it is to end
	suspend  bool
}

// procClock is the clock of one process (incarnation): the bubble's
// virtual clock set off by off, which stands still while the process is
// paused (pause), and whose timers fire only while it runs. It
// implements clock.WithTicker, clock.WithDelayedExecution and
// leasehold.BootClock (the time since boot counts every pause).
type procClock struct {
	off  time.Duration // how far its readings are set from true time
	boot time.Time     // true time its machine booted

	mu sync.Mutex
	// lag is the time its monotonic clock did not count: the suspends.
	lag time.Duration
	// frozen: the clock reads pausedAt; hold, closed when the pause
	// ends, is nil while the process runs. Between thaw and release
	// the clock reads true time again but timers and goroutines are
	// still held.
	frozen   bool
	pausedAt time.Time
	suspend  bool
	hold     chan struct{}
	timers   map[*procTimer]struct{} // armed
}

var (
	_ clock.WithTicker           = (*procClock)(nil)
	_ clock.WithDelayedExecution = (*procClock)(nil)
	_ leasehold.BootClock        = (*procClock)(nil)
)

func newProcClock(off time.Duration, boot time.Time) *procClock {
	return &procClock{off: off, boot: boot, timers: map[*procTimer]struct{}{}}
}

// seenLocked is the true instant the process believes it is.
func (c *procClock) seenLocked() time.Time {
	if c.frozen {
		return c.pausedAt
	}
	return time.Now()
}

// monoLocked is the process's monotonic time, on the true time scale.
func (c *procClock) monoLocked() time.Time { return c.seenLocked().Add(-c.lag) }

func (c *procClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.monoLocked().Add(c.off)
}

func (c *procClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// SinceBoot is the time since its machine booted, suspends included.
func (c *procClock) SinceBoot() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seenLocked().Sub(c.boot)
}

func (c *procClock) NewTimer(d time.Duration) clock.Timer { return c.newTimer(d, nil, 0) }
func (c *procClock) After(d time.Duration) <-chan time.Time {
	return c.newTimer(d, nil, 0).C()
}
func (c *procClock) Sleep(d time.Duration) { <-c.newTimer(d, nil, 0).C() }
func (c *procClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return c.newTimer(d, f, 0)
}
func (c *procClock) NewTicker(d time.Duration) clock.Ticker {
	return procTicker{c.newTimer(d, nil, d)}
}
func (c *procClock) Tick(d time.Duration) <-chan time.Time { return c.NewTicker(d).C() }

// paused returns the channel closed when the current pause ends, nil if
// the process runs.
func (c *procClock) paused() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold == nil {
		return nil
	}
	return c.hold
}

// pause stops the clock and holds its timers; false if already paused.
func (c *procClock) pause(suspend bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold != nil {
		return false
	}
	c.hold, c.frozen, c.pausedAt, c.suspend = make(chan struct{}), true, time.Now(), suspend
	for t := range c.timers {
		t.unscheduleLocked()
	}
	return true
}

// thaw makes the clock read true time again (less the suspend's length
// after a suspend), its timers and goroutines still held: the instant of
// the resumption, before the process has done anything.
func (c *procClock) thaw() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.thawLocked()
}

func (c *procClock) thawLocked() {
	if !c.frozen {
		return
	}
	c.frozen = false
	if c.suspend {
		c.lag += time.Since(c.pausedAt)
	}
}

// release ends the pause: timers due fire now, the others are re-armed,
// and the goroutines held go on.
func (c *procClock) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.thawLocked()
	if c.hold == nil {
		return
	}
	close(c.hold)
	c.hold = nil
	for t := range c.timers {
		t.scheduleLocked()
	}
}

// procTimer is a timer, ticker (period > 0) or AfterFunc (fn set) of a
// procClock. Like a time.Timer since Go 1.23, no stale value is received
// after Stop or Reset returns.
type procTimer struct {
	c      *procClock
	ch     chan time.Time
	fn     func()
	period time.Duration
	due    time.Time // on the monotonic scale (monoLocked)
	gen    uint64
	real   *time.Timer
}

func (c *procClock) newTimer(d time.Duration, fn func(), period time.Duration) *procTimer {
	t := &procTimer{c: c, fn: fn, period: period}
	if fn == nil {
		t.ch = make(chan time.Time, 1)
	}
	c.mu.Lock()
	t.armLocked(d)
	c.mu.Unlock()
	return t
}

func (t *procTimer) armLocked(d time.Duration) {
	t.due = t.c.monoLocked().Add(d)
	t.c.timers[t] = struct{}{}
	t.scheduleLocked()
}

// scheduleLocked starts the virtual timer for t's due time, unless the
// process is paused: release does it then.
func (t *procTimer) scheduleLocked() {
	t.unscheduleLocked()
	if t.c.hold != nil {
		return
	}
	gen := t.gen
	t.real = time.AfterFunc(max(t.due.Sub(t.c.monoLocked()), 0), func() { t.fire(gen) })
}

func (t *procTimer) unscheduleLocked() {
	t.gen++
	if t.real != nil {
		t.real.Stop()
		t.real = nil
	}
}

func (t *procTimer) fire(gen uint64) {
	c := t.c
	c.mu.Lock()
	if gen != t.gen || c.hold != nil {
		c.mu.Unlock()
		return
	}
	now := c.monoLocked()
	if t.period > 0 {
		t.due = t.due.Add(t.period)
		if t.due.Before(now) {
			t.due = now.Add(t.period)
		}
		t.scheduleLocked()
	} else {
		t.real = nil
		delete(c.timers, t)
	}
	if t.ch != nil {
		select {
		case t.ch <- now.Add(c.off):
		default:
		}
	}
	fn := t.fn
	c.mu.Unlock()
	if fn != nil {
		fn()
	}
}

func (t *procTimer) C() <-chan time.Time { return t.ch }

func (t *procTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, armed := t.c.timers[t]
	delete(t.c.timers, t)
	t.unscheduleLocked()
	t.drainLocked()
	return armed
}

func (t *procTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, armed := t.c.timers[t]
	t.drainLocked()
	t.armLocked(d)
	return armed
}

func (t *procTimer) drainLocked() {
	if t.ch != nil {
		select {
		case <-t.ch:
		default:
		}
	}
}

type procTicker struct{ t *procTimer }

func (p procTicker) C() <-chan time.Time { return p.t.C() }
func (p procTicker) Stop()               { p.t.Stop() }

// waitRunning blocks a goroutine of c's process while the process is
// paused; a dead process's goroutines go on (and fail).
func (c *inc) waitRunning() {
	for {
		h := c.clk.paused()
		if h == nil {
			return
		}
		select {
		case <-h:
		case <-c.killed:
			return
		}
	}
}

// pausedNowLocked reports whether c's process is paused. w.mu is held.
func (c *inc) pausedNowLocked() bool {
	return len(c.pauses) > 0 && c.pauses[len(c.pauses)-1].to.IsZero()
}

// pausedWithinLocked is how long c's process was paused between from and
// to. w.mu is held.
func (c *inc) pausedWithinLocked(from, to time.Time) time.Duration {
	var d time.Duration
	for _, p := range c.pauses {
		end := p.to
		if end.IsZero() {
			end = time.Now()
		}
		lo, hi := maxTime(p.from, from), minTime(end, to)
		if hi.After(lo) {
			d += hi.Sub(lo)
		}
	}
	return d
}

// deadlineLocked is when c's process, whose last successful write was
// sent at from, must have cancelled its work: from + d by its monotonic
// clock, which does not count suspends (its timers do not: the elector
// reads the time since boot when it looks, but nothing wakes it
// earlier), or, if it was paused then, as it resumes. w.mu is held.
func (c *inc) deadlineLocked(from time.Time, d time.Duration) time.Time {
	t, left := from, d
	for _, p := range c.pauses { // in order, apart
		end := p.to
		if end.IsZero() {
			end = time.Now()
		}
		if !p.suspend || !end.After(t) {
			continue
		}
		start := maxTime(p.from, t)
		if start.Sub(t) >= left {
			break
		}
		left -= start.Sub(t)
		t = end
	}
	dl := t.Add(left)
	for _, p := range c.pauses {
		if !p.suspend && !dl.Before(p.from) && (p.to.IsZero() || dl.Before(p.to)) {
			if p.to.IsZero() {
				return time.Now()
			}
			return p.to
		}
	}
	return dl
}

// pausedBetweenLocked reports whether c's process was paused at some
// instant after from and before to. w.mu is held.
func (c *inc) pausedBetweenLocked(from, to time.Time) bool {
	for _, p := range c.pauses {
		if p.from.Before(to) && (p.to.IsZero() || p.to.After(from)) {
			return true
		}
	}
	return false
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// pauseLocked pauses c's process for f.Dur. w.mu is held.
func (w *world) pauseLocked(c *inc, f Fault) {
	if !c.clk.pause(f.Suspend) {
		w.hist.add(entry{kind: evOp, who: "sim", what: "  (already paused)"})
		return
	}
	now := time.Now()
	c.pauses = append(c.pauses, pauseSpan{from: now, until: now.Add(f.Dur), suspend: f.Suspend})
	a := &activeFault{f: f, healed: make(chan struct{})}
	w.active = append(w.active, a)
	w.hist.add(entry{kind: evRun, who: c.client, what: fmt.Sprintf("process paused for %v", f.Dur)})
	w.pushLocked(now.Add(f.Dur), func() { w.resume(c, a) })
}

// deferLocked puts off f, a cancel or a yield meant for c, while c's
// process is paused, until it resumes (a signal sent to a stopped process
// waits for it to go on), and reports whether it did. w.mu is held.
func (w *world) deferLocked(c *inc, f Fault) bool {
	if !c.pausedNowLocked() {
		return false
	}
	w.res.FaultsRun[f.Kind]-- // counted when carried out
	g := f
	g.Target = c.s.i
	w.hist.add(entry{kind: evOp, who: "sim", what: "  (" + c.client + " is paused: put off until it resumes)"})
	w.pushLocked(c.pauses[len(c.pauses)-1].until, func() { w.op(g) })
	return true
}

// endPauseLocked ends c's pause in the world's books, if it is paused,
// and reports whether it was. The caller releases c.clk. w.mu is held.
func (w *world) endPauseLocked(c *inc) bool {
	if !c.pausedNowLocked() {
		return false
	}
	c.pauses[len(c.pauses)-1].to = time.Now()
	return true
}

// checkSlack keeps Check's samples off the exact boundary of its rule.
const checkSlack = time.Millisecond

// resume ends the pause a: the probe that waited is answered first (Check
// samples, at the instant of the resumption, before the elector has had
// a chance to act), then the process goes on.
func (w *world) resume(c *inc, a *activeFault) {
	w.mu.Lock()
	w.active = slices.DeleteFunc(w.active, func(x *activeFault) bool { return x == a })
	close(a.healed)
	w.disturbLocked()
	if !w.endPauseLocked(c) {
		w.mu.Unlock()
		return // ended already: the process crashed, or the world ends
	}
	w.hist.add(entry{kind: evRun, who: c.client, what: "process resumed"})
	type sample struct {
		tol      time.Duration
		mustFail bool
	}
	var samples []sample
	var stalled time.Duration
	// A process that leads for sure (its work runs, not cancelled, no
	// step-down asked) and whose last successful write was sent
	// `stalled` ago: Check(tol) fails for tol < stalled - RenewDeadline,
	// and does not report ErrRenewStalled for tol >= it.
	if wk := c.work; wk != nil && !wk.ended && wk.cancelledAt.IsZero() && !c.cancelled && !c.crashed && !c.lastWinSent.IsZero() {
		stalled = time.Since(c.lastWinSent)
		over := stalled - w.t.RenewDeadline
		if over > checkSlack {
			samples = append(samples, sample{over - checkSlack, true})
		}
		samples = append(samples, sample{max(over+checkSlack, 0), false})
	}
	w.mu.Unlock()
	c.clk.thaw()
	for _, s := range samples {
		err := c.e.Check(s.tol)
		w.mu.Lock()
		w.res.Checks++
		w.res.CheckSamples++
		switch {
		case s.mustFail && err == nil:
			w.violateLocked(VCheckStalled, c.client, fmt.Sprintf("Check(%v) passed at the resumption of a leader whose last successful renewal was sent %v ago (RenewDeadline %v)",
				s.tol, stalled, w.t.RenewDeadline))
		case !s.mustFail && errors.Is(err, leasehold.ErrRenewStalled):
			w.violateLocked(VCheckStalled, c.client, fmt.Sprintf("Check(%v) reported a stalled renewal at the resumption of a leader whose last successful renewal was sent %v ago (RenewDeadline %v): %v",
				s.tol, stalled, w.t.RenewDeadline, err))
		}
		w.mu.Unlock()
	}
	c.clk.release()
}
