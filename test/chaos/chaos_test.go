package chaos

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

// TestPlanDeterministic: one seed, one plan.
func TestPlanDeterministic(t *testing.T) {
	a, b := Plan(42, 200, DefaultTimings), Plan(42, 200, DefaultTimings)
	seen := map[Kind]bool{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("fault %d differs between two plans of one seed: %+v vs %+v", i, a[i], b[i])
		}
		seen[a[i].Kind] = true
	}
	for _, k := range CandidateKinds {
		if !seen[k] {
			t.Errorf("200 faults without a single %s", k)
		}
	}
	if len(seen) != len(CandidateKinds) {
		t.Errorf("Plan drew %d kinds, want the %d candidate kinds only", len(seen), len(CandidateKinds))
	}
	if c := Plan(43, 200, DefaultTimings); c[0] == a[0] && c[1] == a[1] && c[2] == a[2] {
		t.Errorf("seeds 42 and 43 start with the same faults")
	}
}

// TestPlanMix: one seed and weights, one plan; every kind drawn in
// proportion; each kind's schedule its own (the j-th fault of a kind is
// the same whatever else is mixed in); parameters within their bounds.
func TestPlanMix(t *testing.T) {
	tm := DefaultTimings
	all := Weights(Kinds...)
	a, b := PlanMix(7, 400, tm, all), PlanMix(7, 400, tm, all)
	if !slices.Equal(a, b) {
		t.Fatal("two mixed plans of one seed differ")
	}
	n := map[Kind]int{}
	for _, f := range a {
		n[f.Kind]++
		switch f.Kind {
		case KindAPIPause:
			if f.Window <= tm.RenewDeadline {
				t.Errorf("fault %d: %s for %v, not longer than RenewDeadline %v", f.Index, f.Kind, f.Window, tm.RenewDeadline)
			}
		case KindLag:
			if f.Lag <= 0 || f.Window <= 0 {
				t.Errorf("fault %d: %s without lag or window: %+v", f.Index, f.Kind, f)
			}
		case KindYield, KindAnnotate:
			if !f.OnLeader {
				t.Errorf("fault %d: %s not aimed at the leader", f.Index, f.Kind)
			}
		}
	}
	for _, k := range Kinds {
		if DefaultWeights[k] > 0 && n[k] == 0 {
			t.Errorf("400 mixed faults without a single %s", k)
		}
		if DefaultWeights[k] == 0 && n[k] > 0 {
			t.Errorf("%d %s in a mixed plan: a measurement kind has no weight", n[k], k)
		}
	}
	// Each kind's own schedule: the control-plane faults of a mix with
	// the candidates' kinds are, in order, those of a plan of
	// control-plane kinds alone.
	mixed := PlanMix(9, 300, tm, Weights(slices.Concat(CandidateKinds, ControlPlaneKinds)...))
	alone := PlanMix(9, 300, tm, Weights(ControlPlaneKinds...))
	next := map[Kind]int{}
	byKind := map[Kind][]Fault{}
	for _, f := range alone {
		byKind[f.Kind] = append(byKind[f.Kind], f)
	}
	compared := 0
	for _, f := range mixed {
		if !slices.Contains(ControlPlaneKinds, f.Kind) {
			continue
		}
		j := next[f.Kind]
		next[f.Kind]++
		if j >= len(byKind[f.Kind]) {
			continue
		}
		g := byKind[f.Kind][j]
		f.Index, g.Index = 0, 0
		if f != g {
			t.Fatalf("%s #%d differs between a mix and a plan of its own: %+v vs %+v", f.Kind, j, f, g)
		}
		compared++
	}
	if compared < 50 {
		t.Errorf("only %d control-plane faults compared", compared)
	}
}

// TestChaos is the short version of `make chaos`: 40 faults on 5
// candidate processes and a real control plane, about 2 minutes. Set
// LEASEHOLD_CHAOS_SEED and LEASEHOLD_CHAOS_FAULTS to vary it (and the
// other TestChaos* tests).
func TestChaos(t *testing.T) {
	r := runChaos(t, 1, 40, Config{})
	if len(r.Faults) < 8 {
		t.Errorf("only %d kinds of fault injected", len(r.Faults))
	}
}

// TestChaosControlPlane: the control plane fails under the candidates:
// kube-apiserver SIGKILLed and restarted, SIGSTOPped past RenewDeadline,
// etcd SIGKILLed and restarted, SIGSTOPped, compacted under the watches
// (the API server runs with --watch-cache=false: each compaction must
// bring real 410 Gone answers, which the candidates handle). About 1.5
// minutes.
func TestChaosControlPlane(t *testing.T) {
	r := runChaos(t, 2, 10, Config{Weights: Weights(ControlPlaneKinds...), WatchCacheOff: true},
		controlplane.WithAPIServerFlag("watch-cache", "false"))
	wantKinds(t, r, ControlPlaneKinds...)
	if r.Gone == 0 {
		t.Errorf("no real 410 Gone reached the candidates")
	}
}

// TestChaosHA: five candidates spread over two kube-apiservers on one
// etcd, moved from one to the other as by a load balancer, one server's
// watch streams lagging, one server killed or paused, among candidate
// faults. About 1.5 minutes.
func TestChaosHA(t *testing.T) {
	r := runChaos(t, 3, 12, Config{APIServers: 2, Weights: Weights(KindMove, KindLag, KindAPIKill, KindAPIPause, KindKill, KindPartition)})
	wantKinds(t, r, KindMove, KindLag, KindAPIKill, KindAPIPause)
}

// TestChaosYield: the leader is asked to yield, by Elector.Yield
// (SIGUSR1) and by the preferred-holder annotation, to a named follower
// or to anyone, among faults; a named follower must be the next leader.
// About a minute.
func TestChaosYield(t *testing.T) {
	w := map[Kind]int{KindYield: 30, KindAnnotate: 30, KindKill: 10, KindPauseLong: 10, KindPartition: 10, KindLatency: 10}
	r := runChaos(t, 1, 12, Config{Mode: ModeYield, Weights: w})
	wantKinds(t, r, KindYield, KindAnnotate, KindKill, KindPauseLong)
	if len(r.Handoffs) == 0 {
		t.Errorf("no yield handoffs measured")
	}
}

// TestChaosShard: five members of a shard group with K = 64, checked
// shard by shard, through member faults. About a minute.
func TestChaosShard(t *testing.T) {
	r := runChaos(t, 2, 8, Config{Mode: ModeShard, Shards: 64, Weights: Weights(KindKill, KindPauseLong, KindPartition, KindDropWatch, KindLatency)})
	wantKinds(t, r, KindKill, KindPartition, KindPauseLong)
	if r.Terms < 64 {
		t.Errorf("%d shard runs, fewer than the 64 shards", r.Terms)
	}
}

// TestChaosFenced: the work writes one ConfigMap continuously, each
// write stamped with its term and fenced by the Lease's admission
// policy; leaders are SIGSTOPped past the lease (pause windows), killed,
// partitioned. No write of a deposed term may be admitted. About a
// minute.
func TestChaosFenced(t *testing.T) {
	w := map[Kind]int{KindPauseLong: 30, KindPauseShort: 10, KindKill: 10, KindPartition: 10, KindLatency: 10}
	r := runChaos(t, 1, 10, Config{Mode: ModeFenced, Weights: w})
	wantKinds(t, r, KindPauseLong, KindKill)
	if r.FencedWrites < 100 {
		t.Errorf("only %d fenced writes admitted", r.FencedWrites)
	}
	t.Logf("fenced writes admitted %d, stale admitted %d, refused %d; pause windows %d", r.FencedWrites, len(r.Stale), r.Refused, len(r.PauseOverlaps))
}

// TestLagTakeover measures what a lagging kube-apiserver does to
// takeovers: the leader on one server, its followers on another whose
// watch events all arrive lag late. A follower can act on the leader's
// last renewal, or its release, only once it sees it: a crash is taken
// over no sooner than L - P + lag after the SIGKILL (the last renewal was
// at most P before it, and the follower counts L from when it saw it),
// and a yield no sooner than lag after the request. About a minute.
func TestLagTakeover(t *testing.T) {
	lags := []time.Duration{0, time.Second}
	r := runChaos(t, 1, 0, Config{N: 3, APIServers: 2, Script: LagPlan(lags, 1)})
	var b strings.Builder
	r.LagTable(&b)
	t.Log(b.String())
	tm := r.Timings
	n := 0
	for _, f := range r.Rec.Faults {
		if f.Next == "" {
			t.Errorf("fault %d (%s, lag %v): no takeover measured", f.Index, f.Kind, f.Lag)
			continue
		}
		n++
		lo, hi := f.Lag, f.Lag+time.Second
		if f.Kind == KindLagCrash {
			lo, hi = tm.LeaseDuration-tm.RetryPeriod+f.Lag, tm.LeaseDuration+tm.RetryPeriod+f.Lag+time.Second
		}
		if f.Takeover < lo || f.Takeover > hi {
			t.Errorf("fault %d (%s, lag %v): %s took over %v after, want within [%v, %v]", f.Index, f.Kind, f.Lag, f.Next, f.Takeover, lo, hi)
		}
	}
	if n != 2*len(lags) {
		t.Errorf("%d takeovers measured, want %d", n, 2*len(lags))
	}
}

func wantKinds(t *testing.T, r *Report, kinds ...Kind) {
	t.Helper()
	for _, k := range kinds {
		if r.Faults[k] == 0 {
			t.Errorf("no %s fault injected (choose another seed)", k)
		}
	}
}

var (
	candidateOnce sync.Once
	candidateDir  string
	candidateBin  string
	candidateErr  error
)

// TestMain removes the candidate binary the chaos tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if candidateDir != "" {
		_ = os.RemoveAll(candidateDir)
	}
	os.Exit(code)
}

// runChaos runs faults faults of cfg from seed (LEASEHOLD_CHAOS_SEED and
// LEASEHOLD_CHAOS_FAULTS override them) on its own control plane, checks
// the run, fails the test on any failure, and returns the report.
func runChaos(t *testing.T, seed uint64, faults int, cfg Config, opts ...controlplane.Option) *Report {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	if s := os.Getenv("LEASEHOLD_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	if s := os.Getenv("LEASEHOLD_CHAOS_FAULTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		faults = v
	}

	// Candidate logs are kept when the test fails.
	dir, err := os.MkdirTemp("", "leasehold-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("candidate logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	began := time.Now()
	candidateOnce.Do(func() {
		if candidateDir, candidateErr = os.MkdirTemp("", "leasehold-chaos-bin-"); candidateErr == nil {
			candidateBin, candidateErr = BuildCandidate(candidateDir)
		}
	})
	if candidateErr != nil {
		t.Fatal(candidateErr)
	}
	cp := testkit.StartControlPlane(t, opts...)
	t.Logf("candidate built and control plane ready in %v", time.Since(began).Round(time.Millisecond))

	cfg.ControlPlane, cfg.Candidate, cfg.Faults, cfg.Seed, cfg.WorkDir, cfg.Logf = cp, candidateBin, faults, seed, dir, t.Logf
	rec, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	r := Check(rec)
	var b strings.Builder
	r.Print(&b)
	t.Log(b.String())
	for _, f := range r.Failures {
		t.Error(f)
	}
	return r
}
