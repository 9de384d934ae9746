package sim

import (
	"context"
	"flag"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var (
	seedFlag    = flag.Uint64("sim.seed", 0, "TestExplore: run this seed")
	durFlag     = flag.Duration("sim.duration", 10*time.Minute, "TestExplore: virtual duration")
	historyFlag = flag.Bool("sim.history", false, "TestExplore: write the whole history")
)

// TestExplore runs one seed and writes its history: go test ./sim -run
// Explore -sim.seed 7 -sim.history.
func TestExplore(t *testing.T) {
	if *seedFlag == 0 {
		t.Skip("no -sim.seed")
	}
	r := Run(t, NewPlan(*seedFlag, 3, *durFlag), Options{})
	t.Log(r)
	if *historyFlag {
		r.WriteHistory(os.Stdout)
	}
	if r.Failed() {
		r.Report(os.Stdout)
		t.Fail()
	}
}

// quietPlan is a world of n candidates at the default timings with no
// fault at all.
func quietPlan(n int, d time.Duration) Plan {
	p := Plan{Seed: 1, Candidates: n, Duration: d, Horizon: d, Timings: profiles[0], RestartAfter: time.Second}
	for range n {
		p.Rejoin = append(p.Rejoin, true)
		p.ReleaseOnCancel = append(p.ReleaseOnCancel, true)
	}
	return p
}

func TestPlanIsTheSeeds(t *testing.T) {
	a, b := NewPlan(42, 3, 10*time.Minute), NewPlan(42, 3, 10*time.Minute)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two plans of seed 42 differ")
	}
	if c := NewPlan(43, 3, 10*time.Minute); reflect.DeepEqual(a.Faults, c.Faults) {
		t.Fatal("seeds 42 and 43 drew the same schedule")
	}
	if len(a.Faults) < 10 {
		t.Fatalf("seed 42 drew %d faults in 10 minutes; want at least 10", len(a.Faults))
	}
	// A shorter world draws a prefix of the same schedule.
	short := NewPlan(42, 3, 5*time.Minute)
	if n := len(short.Faults); n == 0 || !reflect.DeepEqual(short.Faults, a.Faults[:n]) {
		t.Fatal("a shorter world of seed 42 does not draw a prefix of its schedule")
	}
	k := a.Keep([]int{0, 2})
	if len(k.Faults) != 2 || k.Faults[0] != a.Faults[0] || k.Faults[1] != a.Faults[2] {
		t.Fatalf("Keep(0, 2) = %v", k.Faults)
	}
	last := a.Faults[len(a.Faults)-1]
	if end := last.At + last.Dur + last.Delay; end > a.Duration-a.Timings.LeaderBound() {
		t.Fatalf("the last fault heals at %v, less than LeaderBound before the end %v", end, a.Duration)
	}
}

// A world without faults elects one leader, which keeps the Lease and
// renews it once per RetryPeriod.
func TestQuietWorld(t *testing.T) {
	p := quietPlan(3, 10*time.Minute)
	r := Run(t, p, Options{})
	if r.Failed() {
		r.Report(os.Stdout)
		t.Fatal("violations in a world without faults")
	}
	starts := 0
	for _, e := range r.history {
		if e.kind == evWork && strings.HasPrefix(e.what, "WORK STARTS") {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("%d terms in a world without faults; want 1", starts)
	}
	renewals := int(p.Duration / p.Timings.RetryPeriod)
	if r.Requests < renewals || r.Requests > renewals+30 {
		t.Errorf("%d requests; want about %d renewals and a few reads and watches", r.Requests, renewals)
	}
	if r.Simulated < p.Duration || r.CandidateTime < 3*p.Duration-5*time.Second {
		t.Errorf("simulated %v, candidate time %v; want %v and about 3 times that", r.Simulated, r.CandidateTime, p.Duration)
	}
}

// afterMinute runs f in the bubble one virtual minute after the world
// started, when the election has long settled.
func afterMinute(f func(w *world)) func(w *world) {
	return func(w *world) {
		go func() {
			time.Sleep(time.Minute)
			f(w)
		}()
	}
}

func leaderOf(w *world) *inc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leaderLocked()
}

func followerOf(w *world) *inc {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.leaderLocked()
	for _, s := range w.slots {
		if s.cur != nil && s.cur != l {
			return s.cur
		}
	}
	return nil
}

// Every check can fail: each case makes the world misbehave on purpose
// and expects its violation.
func TestEveryCheckCanFail(t *testing.T) {
	cases := []struct {
		want   string
		inject func(w *world)
	}{
		{VOverlap, afterMinute(func(w *world) {
			// A follower runs a work of its own while the leader works.
			c := followerOf(w)
			ctx, cancel := context.WithCancel(context.Background())
			go c.runWork(ctx)
			time.Sleep(time.Second)
			cancel()
		})},
		{VNoLeader, afterMinute(func(w *world) {
			// Every client dies, unannounced: the leader loses the
			// Lease and nobody can take it.
			w.mu.Lock()
			for _, c := range w.incs {
				c.dead.Store(true)
			}
			w.mu.Unlock()
		})},
		{VRequestLoop, afterMinute(func(w *world) {
			c := followerOf(w)
			l := simClient{c: c, inner: w.srv.Client(c.client)}.Leases(namespace)
			for range instantLimit + 1 {
				_, _ = l.Get(context.Background(), leaseName, metav1.GetOptions{})
			}
		})},
		{VRequestBudget, afterMinute(func(w *world) {
			c := followerOf(w)
			l := simClient{c: c, inner: w.srv.Client(c.client)}.Leases(namespace)
			for range w.budget + 1 {
				_, _ = l.Get(context.Background(), leaseName, metav1.GetOptions{})
				time.Sleep(time.Millisecond)
			}
		})},
		{VReleaseRetry, afterMinute(func(w *world) {
			c := followerOf(w)
			w.mu.Lock()
			w.addFaultLocked(Fault{Kind: KindRefuse, Target: c.s.i, Code: 422, Verbs: VerbUpdate, Prob: 1, Dur: time.Minute})
			w.mu.Unlock()
			l := simClient{c: c, inner: w.srv.Client(c.client)}.Leases(namespace)
			rel := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseName, ResourceVersion: "1"},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("")}}
			for range 2 {
				_, _ = l.Update(context.Background(), rel, metav1.UpdateOptions{})
			}
		})},
		{VYield, afterMinute(func(w *world) {
			// OnStoppedLeading hangs: the yield is never answered in time.
			c := leaderOf(w)
			w.mu.Lock()
			w.stoppedHang = 2 * w.t.YieldBound()
			w.disturbLocked()
			w.mu.Unlock()
			w.yield(c, "", false)
		})},
		{VHandoff, afterMinute(func(w *world) {
			// The named successor is dead, unannounced.
			l, f := leaderOf(w), followerOf(w)
			f.dead.Store(true)
			w.mu.Lock()
			w.disturbLocked()
			w.mu.Unlock()
			w.yield(l, f.id, true)
		})},
		{VRunReturn, afterMinute(func(w *world) {
			c := leaderOf(w)
			w.mu.Lock()
			w.stoppedHang = 2 * w.t.RunBound()
			w.mu.Unlock()
			w.stop(c, false, "test")
		})},
		{VCallback, afterMinute(func(w *world) {
			// OnStoppedLeading without a term.
			followerOf(w).stopped()
		})},
		{VRelease, afterMinute(func(w *world) {
			// A release after OnStoppedLeading.
			c := followerOf(w)
			w.mu.Lock()
			c.stoppedLast = true
			w.mu.Unlock()
			l := simClient{c: c, inner: w.srv.Client(c.client)}.Leases(namespace)
			rel := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseName, ResourceVersion: "1"},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("")}}
			_, _ = l.Update(context.Background(), rel, metav1.UpdateOptions{})
		})},
		{VCheck, afterMinute(func(w *world) {
			// OnStoppedLeading while a work runs that the elector does
			// not know of: its Check passes.
			c := followerOf(w)
			w.mu.Lock()
			c.terms++
			c.work = &work{c: c, term: c.terms, started: time.Now(), cancelledAt: time.Now().Add(-w.t.Margin()), mayStepDown: true}
			w.mu.Unlock()
			c.stopped()
		})},
		{VLateRenewal, afterMinute(func(w *world) {
			// The world believes the leader's last renewal older than it
			// is: its next renewal lands past that deadline.
			c := leaderOf(w)
			w.mu.Lock()
			c.lastWinSent = time.Now().Add(-2 * w.t.RenewDeadline)
			w.mu.Unlock()
		})},
		{VCheckStalled, afterMinute(func(w *world) {
			// The leader is paused for a second, and the world believes
			// its last renewal older than it is: Check, which knows
			// better, passes at its resumption.
			c := leaderOf(w)
			w.mu.Lock()
			w.pauseLocked(c, Fault{Kind: KindPause, Target: c.s.i, Dur: time.Second})
			c.lastWinSent = time.Now().Add(-2 * w.t.RenewDeadline)
			w.mu.Unlock()
		})},
		{VLeak, func(w *world) {
			go func() { <-make(chan struct{}) }()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			r := Run(t, quietPlan(3, 3*time.Minute), Options{inject: tc.inject})
			if !slices.ContainsFunc(r.Violations, func(v Violation) bool { return v.Kind == tc.want }) {
				r.Report(os.Stdout)
				t.Fatalf("no %s violation; got %v", tc.want, r.Violations)
			}
			if r.Violations[0].Kind != tc.want && tc.want != VLeak {
				t.Errorf("first violation %v; want a %s", r.Violations[0], tc.want)
			}
		})
	}
}

// A goroutine that loops without blocking stops virtual time: the
// watchdog reports it in real time.
func TestStuckWorldIsReported(t *testing.T) {
	var stuck atomic.Bool
	var msg atomic.Value
	o := Options{
		StuckAfter: 200 * time.Millisecond,
		OnStuck:    func(m string) { msg.Store(m); stuck.Store(true) },
		inject: afterMinute(func(*world) {
			for !stuck.Load() {
				runtime.Gosched()
			}
		}),
	}
	Run(t, quietPlan(2, 2*time.Minute), o)
	m, _ := msg.Load().(string)
	if !strings.Contains(m, VStuck) || !strings.Contains(m, "replay: ") {
		t.Fatalf("watchdog message %q; want a %s report with a replay command", m, VStuck)
	}
}

// Shrink finds the one fault of a schedule that makes a world fail.
func TestShrinkFindsTheFault(t *testing.T) {
	p := quietPlan(3, 10*time.Minute)
	for i := range 12 {
		p.Faults = append(p.Faults, Fault{At: time.Duration(i+1) * 30 * time.Second, Kind: KindCloseWatches, Target: -1, To: -1})
	}
	p.Faults[7].Kind = KindCompact
	// The world breaks an invariant on purpose when it compacts.
	o := Options{onOp: func(w *world, f Fault) {
		if f.Kind == KindCompact {
			w.violateLocked(VCallback, "-", "compacted")
		}
	}}
	r := Run(t, p, o)
	if !r.Failed() {
		t.Fatal("the world did not fail")
	}
	small := Shrink(t, p, r, 2, t.Logf)
	if len(small.Plan.Faults) != 1 || small.Plan.Faults[0].Kind != KindCompact || !slices.Equal(small.Kept, []int{7}) {
		t.Fatalf("shrunk to %v (kept %v); want the compaction alone, #7", small.Plan.Faults, small.Kept)
	}
	if small.Plan.Duration >= p.Duration {
		t.Errorf("shrunk world runs %v; want it cut short after the violation", small.Plan.Duration)
	}
	want := "cd test && go run ./cmd/sim -start 1 -seeds 1 -candidates 3 -duration 10m0s -until "
	if cmd := ReplayCommand(small.Plan, small.Kept, small.Violations[0].Sig); !strings.HasPrefix(cmd, want) || !strings.HasSuffix(cmd, " -keep 7 -repeat 20 -want callback") {
		t.Errorf("replay command %q", cmd)
	}
}
