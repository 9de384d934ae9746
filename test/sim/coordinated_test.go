package sim

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// coordinatedPlan is quietPlan with coordinated election, every clock
// set to true time but the controller's, set ahead by ahead.
func coordinatedPlan(n int, d, ahead time.Duration) Plan {
	p := quietPlan(n, d)
	p.Coordinated, p.CtrlSkew = true, ahead
	p.Skew = make([]time.Duration, n)
	return p
}

// termStarts returns who started a term, in order.
func termStarts(r *Result) []string {
	var who []string
	for _, e := range r.history {
		if e.kind == evWork && strings.HasPrefix(e.what, "WORK STARTS") {
			who = append(who, e.who)
		}
	}
	return who
}

// In a quiet coordinated world the controller assigns the Lease once, to
// the best candidate (the oldest emulation version, then binary), which
// takes the term up and keeps it.
func TestQuietCoordinatedWorld(t *testing.T) {
	p := coordinatedPlan(3, 10*time.Minute, 0)
	r := Run(t, p, Options{})
	if r.Failed() {
		r.Report(os.Stdout)
		t.Fatal("violations in a coordinated world without faults")
	}
	w := &world{p: p}
	versions := map[string][2]string{}
	for i := range p.Candidates {
		cc := w.candidateConfig(&inc{w: w, s: &slot{i: i}, n: 1})
		versions[slotName(i)+".1"] = [2]string{cc.EmulationVersion, cc.BinaryVersion}
	}
	starts := termStarts(r)
	// The controller may assign the first candidate to register before
	// a better one registers, and then move the Lease to it.
	if len(starts) == 0 || len(starts) > 2 {
		t.Fatalf("terms started by %v; want one or two", starts)
	}
	last := versions[starts[len(starts)-1]]
	for who, v := range versions {
		if v[0] < last[0] || v[0] == last[0] && v[1] < last[1] {
			t.Errorf("%s leads with versions %v; %s has older ones, %v", starts[len(starts)-1], last, who, v)
		}
	}
	if r.Assignments < 1 || r.Assignments > 2 {
		t.Errorf("%d assignments; want 1 or 2", r.Assignments)
	}
}

// A controller whose clock runs ahead of the candidates' assigns the
// Lease of a leader cut off from the API server before its claim has run
// out by their clocks: the assignee waits it out, so the two works never
// overlap, and the assignee leads within the coordinated bound.
func TestCoordinatedControllerAheadIsWaitedOut(t *testing.T) {
	p := coordinatedPlan(2, 3*time.Minute, 6*time.Second) // more than LeaseDuration - RenewDeadline
	var leader string
	o := Options{inject: afterMinute(func(w *world) {
		c := leaderOf(w)
		w.mu.Lock()
		leader = c.client
		w.addFaultLocked(Fault{Kind: KindPartition, Target: c.s.i, Prob: 1, Dur: time.Minute})
		w.disturbLocked()
		w.mu.Unlock()
	})}
	r := Run(t, p, o)
	if r.Failed() {
		r.Report(os.Stdout)
		t.Fatal("violations")
	}
	starts := termStarts(r)
	if len(starts) < 2 || starts[0] != leader || !slices.ContainsFunc(starts[1:], func(s string) bool { return s != leader }) {
		t.Fatalf("terms started by %v; want %s's, then the other's", starts, leader)
	}
	waited := false
	for _, e := range r.history {
		if e.kind == evLog && strings.HasPrefix(e.what, "The election controller assigned the lease to this process; starting when the previous holder's claim runs out") && e.at > time.Minute {
			waited = true
		}
	}
	if !waited {
		r.WriteHistory(os.Stdout)
		t.Fatal("the assignee did not wait out the partitioned leader's claim")
	}
}

// Coordinated plans are drawn in about one seed in four, from a stream of
// their own: a plain plan is the same as before.
func TestCoordinatedPlansAreDrawn(t *testing.T) {
	n := 0
	for seed := uint64(1); seed <= 400; seed++ {
		p := NewPlan(seed, 3, 10*time.Minute)
		if p.Coordinated != drawnCoordinated(seed) {
			t.Fatalf("seed %d: Coordinated %v, drawn %v", seed, p.Coordinated, drawnCoordinated(seed))
		}
		if !p.Coordinated {
			continue
		}
		n++
		L := p.Timings.LeaseDuration
		for i, s := range p.Skew {
			if d := p.CtrlSkew - s; d < -L/2-time.Millisecond || d > L/2+time.Millisecond {
				t.Fatalf("seed %d: candidate %d's clock is %v from the controller's; want at most %v", seed, i, d, L/2)
			}
		}
		q := NewPlanCoordinated(seed, 3, 10*time.Minute, false)
		if q.Coordinated || len(q.Faults) < len(p.Faults) {
			t.Fatalf("seed %d forced plain: %+v", seed, q)
		}
	}
	if n < 70 || n > 130 {
		t.Fatalf("%d coordinated plans in 400 seeds; want about 100", n)
	}
}
