package sim

import (
	"context"
	"flag"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var shardSeedFlag = flag.Uint64("sim.shardseed", 0, "TestShardExplore: run this shard seed")

// TestShardExplore runs one shard seed and writes its history: go test
// ./sim -run ShardExplore -sim.shardseed 7 -sim.history.
func TestShardExplore(t *testing.T) {
	if *shardSeedFlag == 0 {
		t.Skip("no -sim.shardseed")
	}
	r := Run(t, NewShardPlan(*shardSeedFlag, 3, *durFlag), Options{})
	t.Log(r)
	if *historyFlag {
		r.WriteHistory(os.Stdout)
	}
	if r.Failed() {
		r.Report(os.Stdout)
		t.Fail()
	}
}

// quietShardPlan is a group of m members and k shards at the default
// timings with no fault at all.
func quietShardPlan(m, k int, d time.Duration) Plan {
	t := profiles[0]
	t.StepDownTimeout = shardStepDown
	p := Plan{Seed: 1, Candidates: m, Duration: d, Horizon: d, Timings: t, RestartAfter: time.Second, World: WorldShard, Shards: k}
	for range m {
		p.ReleaseOnCancel = append(p.ReleaseOnCancel, true)
	}
	return p
}

func TestShardPlanIsTheSeeds(t *testing.T) {
	a, b := NewShardPlan(42, 3, 10*time.Minute), NewShardPlan(42, 3, 10*time.Minute)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two shard plans of seed 42 differ")
	}
	if len(a.Faults) < 10 || a.World != WorldShard || !slices.Contains(shardCounts, a.Shards) {
		t.Fatalf("seed 42: %d faults, world %q, K %d", len(a.Faults), a.World, a.Shards)
	}
	ks := map[int]bool{}
	for seed := range uint64(40) {
		ks[NewShardPlan(seed, 3, time.Minute).Shards] = true
	}
	if len(ks) != len(shardCounts) {
		t.Errorf("40 seeds drew K in %v; want each of %v", ks, shardCounts)
	}
	last := a.Faults[len(a.Faults)-1]
	if end := last.At + last.Dur; end > a.Duration-a.Timings.ShardLiveBound() {
		t.Fatalf("the last fault heals at %v, less than ShardLiveBound before the end %v", end, a.Duration)
	}
	if cmd := ReplayCommand(a, nil, ""); !strings.Contains(cmd, " -world shard ") {
		t.Errorf("replay command %q lacks -world shard", cmd)
	}
}

// A group without faults spreads its shards once and keeps them: each
// shard starts once, and members renew about once per RetryPeriod.
func TestShardQuietWorld(t *testing.T) {
	for _, k := range shardCounts {
		p := quietShardPlan(3, k, 5*time.Minute)
		r := Run(t, p, Options{})
		if r.Failed() {
			r.Report(os.Stdout)
			t.Fatalf("K=%d: violations in a world without faults", k)
		}
		starts := 0
		for _, e := range r.history {
			if e.kind == evWork && strings.HasPrefix(e.what, "WORK STARTS") {
				starts++
			}
		}
		// Members join one after the other: a shard may move once or
		// twice as they do.
		if starts < k || starts > 3*k {
			t.Errorf("K=%d: %d works started in a world without faults", k, starts)
		}
		if perMin := float64(r.Requests) / (r.CandidateTime.Minutes()); perMin > 2*float64(time.Minute/p.Timings.RetryPeriod) {
			t.Errorf("K=%d: %.0f requests per member-minute", k, perMin)
		}
		t.Logf("K=%d: %s", k, r)
	}
}

// afterMinuteShard runs f in the bubble one virtual minute after the
// world started, when the shards have long settled.
func afterMinuteShard(f func(w *shardWorld)) func(w *shardWorld) {
	return func(w *shardWorld) {
		go func() {
			time.Sleep(time.Minute)
			f(w)
		}()
	}
}

// ownerOf returns the incarnation that runs shard i, and another running
// one.
func ownerOf(w *shardWorld, i int) (owner, other *minc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wk := range w.works[i] {
		owner = wk.c
	}
	for _, s := range w.slots {
		if s.cur != nil && s.cur != owner {
			other = s.cur
		}
	}
	return owner, other
}

// Every check of the shard world can fail: each case makes the world
// misbehave on purpose and expects its violation.
func TestShardEveryCheckCanFail(t *testing.T) {
	cases := []struct {
		name, want string
		inject     func(w *shardWorld)
	}{
		{"overlap", VOverlap, afterMinuteShard(func(w *shardWorld) {
			// Another member runs shard 0 while its owner does.
			_, c := ownerOf(w, 0)
			ctx, cancel := context.WithCancel(context.Background())
			go c.runWork(ctx, 0)
			time.Sleep(time.Second)
			cancel()
		})},
		{"overlap-within-margin", VOverlap, afterMinuteShard(func(w *shardWorld) {
			// The owner's work was cancelled, but less than the safety
			// margin ago: not excused.
			o, c := ownerOf(w, 0)
			w.mu.Lock()
			for wk := range w.works[0] {
				if wk.c == o {
					wk.cancelledAt = time.Now().Add(-w.t.Margin() / 2)
				}
			}
			w.mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			go c.runWork(ctx, 0)
			time.Sleep(time.Second)
			cancel()
		})},
		{"shard-idle", VShardIdle, afterMinuteShard(func(w *shardWorld) {
			// Every client dies, unannounced: the shards stop and nobody
			// can take them.
			w.mu.Lock()
			for _, c := range w.incs {
				c.dead.Store(true)
			}
			w.disturbLocked()
			w.mu.Unlock()
		})},
		{"request-loop", VRequestLoop, afterMinuteShard(func(w *shardWorld) {
			_, c := ownerOf(w, 0)
			l := shardClient{c: c, inner: w.srv.Client(c.client)}.Leases(namespace)
			for range instantLimit + 1 {
				_, _ = l.Get(context.Background(), shardGroup, metav1.GetOptions{})
			}
		})},
		{"request-budget", VRequestBudget, afterMinuteShard(func(w *shardWorld) {
			_, c := ownerOf(w, 0)
			l := shardClient{c: c, inner: w.srv.Client(c.client)}.Leases(namespace)
			for range w.budget + 1 {
				_, _ = l.Get(context.Background(), shardGroup, metav1.GetOptions{})
				time.Sleep(time.Millisecond)
			}
		})},
		{"run-return", VRunReturn, afterMinuteShard(func(w *shardWorld) {
			// Run returns past the bound after its ctx is cancelled.
			o, _ := ownerOf(w, 0)
			w.mu.Lock()
			w.returnHang = 2 * w.runBound()
			w.mu.Unlock()
			w.stop(o, false, "test")
		})},
		{"leaked-goroutines", VLeak, func(w *shardWorld) {
			go func() { <-make(chan struct{}) }()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Run(t, quietShardPlan(3, 4, 3*time.Minute), Options{shardInject: tc.inject})
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
