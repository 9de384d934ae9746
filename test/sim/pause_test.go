package sim

import (
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// A paused process's clock stands still and its timers wait; at the
// resumption the clock jumps to true time (a suspend: it does not, but
// the time since boot does) and what fell due fires at once.
func TestProcClockPauses(t *testing.T) {
	for _, suspend := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			c := newProcClock(time.Hour, start.Add(-time.Minute))
			due := c.NewTimer(2 * time.Second)
			later := c.NewTimer(10 * time.Second)
			fired := make(chan struct{})
			c.AfterFunc(3*time.Second, func() { close(fired) })
			time.Sleep(time.Second)
			if !c.pause(suspend) || c.pause(suspend) {
				t.Fatal("pause: want true, then false while paused")
			}
			time.Sleep(4 * time.Second)
			if got := c.Now().Sub(start); got != time.Hour+time.Second {
				t.Errorf("paused 4s after a second: Now is start+%v; want start+1h1s", got)
			}
			select {
			case <-due.C():
				t.Fatal("a timer fired during the pause")
			case <-fired:
				t.Fatal("an AfterFunc ran during the pause")
			default:
			}
			c.release()
			if suspend {
				// Its monotonic clock did not count the suspend: the
				// timers are where they were in its time, 1s and 2s on.
				select {
				case <-due.C():
					t.Fatal("after a suspend, a timer due 1s later in its clock's time fired at once")
				case <-time.After(time.Millisecond):
				}
				<-due.C()
				<-fired
				if got := time.Since(start).Round(time.Millisecond); got != 7*time.Second {
					t.Errorf("after a suspend, the AfterFunc due at 3s ran at %v; want 7s (3s + the 4s suspend)", got)
				}
				if got := c.Now().Sub(start).Round(time.Millisecond); got != time.Hour+3*time.Second {
					t.Errorf("Now is start+%v; want start+1h3s: the suspend is not counted", got)
				}
				if got := c.SinceBoot().Round(time.Millisecond); got != time.Minute+7*time.Second {
					t.Errorf("SinceBoot %v; want 1m7s (the suspend counts)", got)
				}
			} else {
				select {
				case <-due.C():
				case <-time.After(time.Millisecond):
					t.Fatal("the timer due during the pause did not fire at the resumption")
				}
				<-fired
				if got := c.Now().Sub(start).Round(time.Millisecond); got != time.Hour+5*time.Second {
					t.Errorf("resumed: Now is start+%v; want start+1h5s", got)
				}
				if got := c.SinceBoot().Round(time.Millisecond); got != time.Minute+5*time.Second {
					t.Errorf("SinceBoot %v; want 1m5s", got)
				}
			}
			if !later.Reset(time.Second) {
				t.Error("Reset of an armed timer returned false")
			}
			time.Sleep(time.Second)
			<-later.C()
			if later.Stop() {
				t.Error("Stop of a fired timer returned true")
			}
		})
	}
}

// A leader paused for two lease durations: another takes over meanwhile
// (excused: the hole of doc.go), and at its resumption the elector ends
// its term at once; Check fails then, as its renewals stalled.
func TestPausedLeaderStopsAtResumption(t *testing.T) {
	var paused *inc
	o := Options{inject: afterMinute(func(w *world) {
		c := leaderOf(w)
		w.mu.Lock()
		paused = c
		w.pauseLocked(c, Fault{Kind: KindPause, Target: c.s.i, Dur: 2 * w.t.LeaseDuration})
		w.mu.Unlock()
	})}
	r := Run(t, quietPlan(3, 3*time.Minute), o)
	if r.Failed() {
		r.Report(os.Stdout)
		t.Fatal("violations")
	}
	if r.ExcusedPaused == 0 || r.CheckSamples < 2 {
		t.Errorf("%d overlaps excused by the pause, %d Check samples; want some of each", r.ExcusedPaused, r.CheckSamples)
	}
	var resumed, cancelled time.Duration
	for _, e := range r.history {
		switch {
		case e.who == paused.client && e.what == "process resumed":
			resumed = e.at
		case e.who == paused.client && resumed > 0 && cancelled == 0 && strings.Contains(e.what, "cancelled; returns in"):
			cancelled = e.at
		}
	}
	if resumed == 0 || cancelled != resumed {
		t.Errorf("resumed at %v, work cancelled at %v; want the same instant", resumed, cancelled)
	}
}
