package prometheus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
	"github.com/leasehold/leasehold/shard"
)

// elect runs an elector on srv with m as its Metrics until the returned
// cancel; work, if not nil, is its OnStartedLeading.
func elect(t *testing.T, srv *leaseholdtest.Server, id string, m leasehold.Metrics, work func(context.Context), mutate ...func(*leasehold.Config)) (*leasehold.Elector, context.CancelFunc, chan error) {
	t.Helper()
	if work == nil {
		work = func(ctx context.Context) { <-ctx.Done() }
	}
	cfg := leasehold.Config{
		Lock:      &leasehold.LeaseLock{Namespace: "ns", Name: "lock", Identity: id, Client: srv.Client(id)},
		Metrics:   m,
		Callbacks: leasehold.Callbacks{OnStartedLeading: work},
	}
	for _, f := range mutate {
		f(&cfg)
	}
	e, err := leasehold.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return e, cancel, done
}

// The term metrics of a real elector, read back from the registry as a
// scraper sees them: a yield requested and completed, every renewal's
// headroom (RenewDeadline 10s minus RetryPeriod 2s on a server that
// answers at once).
func TestYieldsAndHeadroom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m, err := leaseholdprom.New(reg)
		if err != nil {
			t.Fatal(err)
		}
		srv := leaseholdtest.NewServer()
		a, cancelA, doneA := elect(t, srv, "a", m, nil)
		synctest.Wait()
		_, cancelB, doneB := elect(t, srv, "b", nil, nil)
		synctest.Wait()
		time.Sleep(5 * time.Second) // renewals at 2s and 4s
		synctest.Wait()
		if !a.IsLeader() {
			t.Fatal("a does not lead")
		}
		if err := a.Yield(context.Background(), "b"); err != nil {
			t.Fatal(err)
		}
		const want = `
# HELP leasehold_yields_total Handoffs this process was asked for (Elector.Yield or the preferred-holder annotation), by outcome: requested when asked, then completed, refused or failed. 'name' is leasehold.Config.Name.
# TYPE leasehold_yields_total counter
leasehold_yields_total{name="ns/lock",outcome="completed"} 1
leasehold_yields_total{name="ns/lock",outcome="failed"} 0
leasehold_yields_total{name="ns/lock",outcome="refused"} 0
leasehold_yields_total{name="ns/lock",outcome="requested"} 1
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "leasehold_yields_total"); err != nil {
			t.Error(err)
		}
		n := count(t, reg, "leasehold_renew_headroom_seconds")
		if n != 1 {
			t.Errorf("%d headroom series, want 1", n)
		}
		h := find(t, reg, "leasehold_renew_headroom_seconds", "name", "ns/lock").GetHistogram()
		if h.GetSampleCount() != 2 || h.GetSampleSum() != 16 {
			t.Errorf("headroom: %d renewals, sum %vs; want 2 renewals of 8s", h.GetSampleCount(), h.GetSampleSum())
		}
		cancelA()
		cancelB()
		<-doneA
		<-doneB
	})
}

// A refused release counts a refused yield.
func TestYieldRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m, err := leaseholdprom.New(reg)
		if err != nil {
			t.Fatal(err)
		}
		srv := leaseholdtest.NewServer()
		a, cancel, done := elect(t, srv, "a", m, nil)
		synctest.Wait()
		srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
			if r.Verb == "update" && (r.Lease.Spec.HolderIdentity == nil || *r.Lease.Spec.HolderIdentity == "") {
				return apierrors.NewBadRequest("no")
			}
			return nil
		})
		if err := a.Yield(context.Background(), ""); err == nil {
			t.Fatal("Yield succeeded although the release was refused")
		}
		for outcome, want := range map[string]float64{"requested": 1, "refused": 1, "completed": 0, "failed": 0} {
			if got := valueOf(t, reg, "leasehold_yields_total", "name", "ns/lock", "outcome", outcome); got != want {
				t.Errorf("leasehold_yields_total{outcome=%q} = %v, want %v", outcome, got, want)
			}
		}
		cancel()
		<-done
	})
}

// A step-down whose work does not return within StepDownTimeout, and a
// lost term whose work outlives the safety margin, are each counted once.
func TestStepDownTimeoutAndWorkOutlived(t *testing.T) {
	t.Run("step-down timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := leaseholdprom.New(reg)
			if err != nil {
				t.Fatal(err)
			}
			hold := make(chan struct{})
			defer close(hold)
			a, cancel, done := elect(t, leaseholdtest.NewServer(), "a", m,
				func(ctx context.Context) { <-ctx.Done(); <-hold },
				func(c *leasehold.Config) { c.StepDownTimeout = 5 * time.Second })
			synctest.Wait()
			if !a.IsLeader() {
				t.Fatal("a does not lead")
			}
			cancel()
			if err := <-done; !errors.Is(err, leasehold.ErrStepDownTimeout) {
				t.Fatalf("Run = %v, want ErrStepDownTimeout", err)
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP leasehold_step_down_timeouts_total Step-downs whose work did not return within StepDownTimeout. 'name' is leasehold.Config.Name.
# TYPE leasehold_step_down_timeouts_total counter
leasehold_step_down_timeouts_total{name="ns/lock"} 1
`), "leasehold_step_down_timeouts_total"); err != nil {
				t.Error(err)
			}
		})
	})
	t.Run("work outlived", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := leaseholdprom.New(reg)
			if err != nil {
				t.Fatal(err)
			}
			hold := make(chan struct{})
			srv := leaseholdtest.NewServer()
			a, cancel, done := elect(t, srv, "a", m, func(ctx context.Context) { <-ctx.Done(); <-hold })
			synctest.Wait()
			if !a.IsLeader() {
				t.Fatal("a does not lead")
			}
			srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
				if r.Verb == "update" {
					return apierrors.NewInternalError(errors.New("down"))
				}
				return nil
			})
			time.Sleep(15 * time.Second) // the renew deadline at 10s, then the 5s margin
			synctest.Wait()
			if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP leasehold_work_outlived_total Lost terms whose work did not return within the safety margin: another leader may have started while it ran. 'name' is leasehold.Config.Name.
# TYPE leasehold_work_outlived_total counter
leasehold_work_outlived_total{name="ns/lock"} 1
`), "leasehold_work_outlived_total"); err != nil {
				t.Error(err)
			}
			close(hold)
			cancel()
			<-done
		})
	})
}

// member runs a shard member of group "ns/grp" on srv until the returned
// cancel.
func member(t *testing.T, srv *leaseholdtest.Server, id string, m shard.Metrics) (*shard.Member, context.CancelFunc, chan error) {
	t.Helper()
	sm, err := shard.New(shard.Config{
		Namespace: "ns", Group: "grp", Identity: id, Client: srv.Client(id), Shards: 4,
		ReleaseOnCancel: true,
		Metrics:         m,
		OnShardStarted:  func(ctx context.Context, _ int) { <-ctx.Done() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sm.Run(ctx) }()
	return sm, cancel, done
}

// Two real shard members, each with its own registry as two processes
// would have: the series exist at zero from shard.New on; then the
// owned shards, the moves by cause, the handovers and the members seen
// follow a first member, a join and a graceful leave. PerShard adds one
// series per shard run here.
func TestShardMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
		ma, err := leaseholdprom.New(regA, leaseholdprom.PerShard())
		if err != nil {
			t.Fatal(err)
		}
		mb, err := leaseholdprom.New(regB)
		if err != nil {
			t.Fatal(err)
		}
		srv := leaseholdtest.NewServer()
		if _, err := shard.New(shard.Config{Namespace: "ns", Group: "grp", Identity: "x", Client: srv.Client("x"), Shards: 4,
			Metrics: mb, OnShardStarted: func(context.Context, int) {}}); err != nil {
			t.Fatal(err)
		}
		const atZero = `
# HELP leasehold_shard_members Members of the shard group this process sees, itself included while its membership is live. 'group' is namespace/group.
# TYPE leasehold_shard_members gauge
leasehold_shard_members{group="ns/grp"} 0
# HELP leasehold_shard_moves_total Shards that moved to this process, counted when their work starts here, by cause: join, leave, crash or rebalance. 'group' is namespace/group.
# TYPE leasehold_shard_moves_total counter
leasehold_shard_moves_total{cause="crash",group="ns/grp"} 0
leasehold_shard_moves_total{cause="join",group="ns/grp"} 0
leasehold_shard_moves_total{cause="leave",group="ns/grp"} 0
leasehold_shard_moves_total{cause="rebalance",group="ns/grp"} 0
# HELP leasehold_shards The number of shards of the shard group (shard.Config.Shards). 'group' is namespace/group.
# TYPE leasehold_shards gauge
leasehold_shards{group="ns/grp"} 4
# HELP leasehold_shards_owned Shards of the group whose work runs in this process. 'group' is namespace/group.
# TYPE leasehold_shards_owned gauge
leasehold_shards_owned{group="ns/grp"} 0
`
		if err := testutil.GatherAndCompare(regB, strings.NewReader(atZero),
			"leasehold_shards", "leasehold_shards_owned", "leasehold_shard_moves_total", "leasehold_shard_members"); err != nil {
			t.Errorf("before Run: %v", err)
		}
		if n := count(t, regB, "leasehold_shard_handover_duration_seconds"); n != 4 {
			t.Errorf("%d handover series before Run, want one per cause", n)
		}

		a, cancelA, doneA := member(t, srv, "a", ma)
		synctest.Wait()
		if got := len(a.Owned()); got != 4 {
			t.Fatalf("a runs %d shards alone", got)
		}
		b, cancelB, doneB := member(t, srv, "b", mb)
		synctest.Wait()
		if got := len(b.Owned()); got != 2 {
			t.Fatalf("b runs %d shards after joining, want 2", got)
		}
		g := func(reg prometheus.Gatherer, name string, labels ...string) float64 {
			t.Helper()
			return valueOf(t, reg, name, labels...)
		}
		for _, c := range []struct {
			reg            prometheus.Gatherer
			owned, members float64
			joins          float64
		}{{regA, 2, 2, 4}, {regB, 2, 2, 2}} {
			if got := g(c.reg, "leasehold_shards_owned", "group", "ns/grp"); got != c.owned {
				t.Errorf("leasehold_shards_owned = %v, want %v", got, c.owned)
			}
			if got := g(c.reg, "leasehold_shard_members", "group", "ns/grp"); got != c.members {
				t.Errorf("leasehold_shard_members = %v, want %v", got, c.members)
			}
			if got := g(c.reg, "leasehold_shard_moves_total", "group", "ns/grp", "cause", "join"); got != c.joins {
				t.Errorf("leasehold_shard_moves_total{cause=join} = %v, want %v", got, c.joins)
			}
			if got := g(c.reg, "leasehold_shard_handover_duration_seconds", "group", "ns/grp", "cause", "join"); got != c.joins {
				t.Errorf("handovers of joins = %v, want %v", got, c.joins)
			}
		}
		owned := 0.0
		for _, s := range []string{"0", "1", "2", "3"} {
			owned += g(regA, "leasehold_shard_owned", "group", "ns/grp", "shard", s)
		}
		if owned != 2 || count(t, regB, "leasehold_shard_owned") != 0 {
			t.Errorf("per-shard series: a's sum to %v (want 2); b, without PerShard, has %d", owned, count(t, regB, "leasehold_shard_owned"))
		}

		cancelB()
		if err := <-doneB; err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := g(regA, "leasehold_shard_moves_total", "group", "ns/grp", "cause", "leave"); got != 2 {
			t.Errorf("a counted %v leave moves after b left, want 2", got)
		}
		if got := g(regA, "leasehold_shards_owned", "group", "ns/grp"); got != 4 {
			t.Errorf("a owns %v shards after b left, want 4", got)
		}
		if got := g(regB, "leasehold_shards_owned", "group", "ns/grp"); got != 0 {
			t.Errorf("b owns %v shards after leaving, want 0", got)
		}
		time.Sleep(30 * time.Second) // b's released Lease is not live
		synctest.Wait()
		if got := g(regA, "leasehold_shard_members", "group", "ns/grp"); got != 1 {
			t.Errorf("a sees %v members after b left, want 1", got)
		}
		cancelA()
		<-doneA
	})
}

// find returns the series of the metric name whose labels include the
// given name/value pairs, gathered from reg; it fails the test if there is
// none.
func find(t *testing.T, reg prometheus.Gatherer, name string, pairs ...string) *dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i < len(pairs); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] }) {
					continue series
				}
			}
			return m
		}
	}
	t.Fatalf("no series %s%v", name, pairs)
	return nil
}

// valueOf is the value of a gauge or counter series, or a histogram's
// sample count.
func valueOf(t *testing.T, reg prometheus.Gatherer, name string, pairs ...string) float64 {
	t.Helper()
	m := find(t, reg, name, pairs...)
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("%s%v is neither a gauge, a counter nor a histogram", name, pairs)
	return 0
}

// count is the number of series of the metric name in reg.
func count(t *testing.T, reg prometheus.Gatherer, name string) int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

// The candidacy of a coordinated election: one series per state, 1 for
// the current one; none before the first report.
func TestCandidacyState(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.LeaderChanged("ns/lock", false)
	if n := count(t, reg, "leasehold_candidacy_state"); n != 0 {
		t.Errorf("%d candidacy series before any report, want none", n)
	}
	m.Candidacy("ns/lock", leasehold.CandidacyCandidate)
	m.Candidacy("ns/lock", leasehold.CandidacyNoController)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP leasehold_candidacy_state 1 for the current state of this process's candidacy in a coordinated election (leasehold.NewCoordinated), 0 for the others: candidate, unsupported, no-controller or withdrawn. 'name' is leasehold.Config.Name.
# TYPE leasehold_candidacy_state gauge
leasehold_candidacy_state{name="ns/lock",state="candidate"} 0
leasehold_candidacy_state{name="ns/lock",state="no-controller"} 1
leasehold_candidacy_state{name="ns/lock",state="unsupported"} 0
leasehold_candidacy_state{name="ns/lock",state="withdrawn"} 0
`), "leasehold_candidacy_state"); err != nil {
		t.Error(err)
	}
}
