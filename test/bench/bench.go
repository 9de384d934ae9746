// Package bench measures leasehold against client-go's
// tools/leaderelection on one real kube-apiserver and etcd
// (test/controlplane), both libraries in the same run, against the same
// server, with the same timings: handoff after a clean release, failover
// after a crash, steady-state request load for N candidates, and 1,000
// elections in one process. cmd/bench runs the full version and writes
// BENCHMARKS.md; the smoke test runs a small version.
//
// Every candidate of the handoff, failover and steady-state phases has its
// own clientset with its own HTTP transport (its own TCP connection), as
// separate processes would; a rest.Config.WrapTransport (Recorder) counts
// its requests and timestamps the writes the latencies start from. The
// scale phase shares one clientset among all its electors, as one process
// would.
package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/test/controlplane"
)

// Options size a run. FullOptions and SmokeOptions are the two presets.
type Options struct {
	Smoke bool

	// Handoff after a clean release (ReleaseOnCancel).
	HandoffRounds  int
	LimitRounds    int // raw release write + watch event + acquire write
	HandoffTimings Timings

	// Failover after a crash (no release).
	FailoverRounds  int
	FailoverTimings Timings

	// Steady-state request load, N candidates on one Lease.
	SteadyNs      []int
	SteadyTimings Timings
	SteadyWarmup  time.Duration
	SteadyWindow  time.Duration

	// Scale: ScaleN elections (distinct Leases) in one process, per run
	// and library (scale.go). ScaleRuns runs at ScaleTimings with JSON
	// bodies, ScaleProtobufRuns with protobuf among them, then, unless
	// ScaleCompare is zero, one JSON run at ScaleCompare. Each run is
	// leasehold, then client-go: a warm-up, then the measured window.
	ScaleN            int
	ScaleTimings      Timings
	ScaleRuns         int
	ScaleProtobufRuns int
	ScaleCompare      Timings
	ScaleWarmup       time.Duration
	ScaleWindow       time.Duration

	// Settle is waited after the followers are ready, plus a random part
	// of up to one RetryPeriod, before the leader is stopped, so that the
	// stop lands at a random phase of the renewal and polling cycles.
	Settle time.Duration

	// Micro runs `go test -run '^$' -bench . -benchmem` in RootDir first.
	Micro          bool
	MicroBenchtime string // -benchtime, "" for the default
	RootDir        string

	// Phases limits the run to some of "handoff" (with its limit),
	// "failover", "steady", "scale", "handoffs" (yield, rolling update,
	// coordinated election), "sharding" and "fencing"; empty runs all
	// (a smoke run skips sharding and fencing, which test/sharding and
	// test/fencing run smoke-sized).
	Phases []string

	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (o Options) runs(phase string) bool {
	return len(o.Phases) == 0 || slices.Contains(o.Phases, phase)
}

// FullOptions is `make bench`: about 35-45 minutes on 2 cores.
func FullOptions() Options {
	return Options{
		HandoffRounds:   20,
		LimitRounds:     20,
		HandoffTimings:  DefaultTimings,
		FailoverRounds:  5,
		FailoverTimings: DefaultTimings,
		SteadyNs:        []int{3, 10, 50},
		SteadyTimings:   DefaultTimings,
		SteadyWarmup:    15 * time.Second,
		SteadyWindow:    60 * time.Second,
		// Issue 10: 1,000 elections at the defaults (500 renewals/s), three
		// runs, JSON and protobuf bodies, and one run at 30s/20s/5s (200
		// renewals/s) for comparison: 10 runs of about 60s (start, warm-up,
		// window, stop), which keeps make bench under 40 minutes on 2 cores
		// with the sharding and fencing phases.
		ScaleN:            1000,
		ScaleTimings:      DefaultTimings,
		ScaleRuns:         3,
		ScaleProtobufRuns: 1,
		ScaleCompare:      Timings{30 * time.Second, 20 * time.Second, 5 * time.Second},
		ScaleWarmup:       10 * time.Second,
		ScaleWindow:       45 * time.Second,
		Settle:            200 * time.Millisecond,
		Micro:             true,
	}
}

// SmokeOptions is a quick run for tests: 3 rounds, small N, short windows,
// short failover timings.
func SmokeOptions() Options {
	return Options{
		Smoke:           true,
		HandoffRounds:   3,
		LimitRounds:     3,
		HandoffTimings:  DefaultTimings,
		FailoverRounds:  3,
		FailoverTimings: Timings{2 * time.Second, 1200 * time.Millisecond, 500 * time.Millisecond},
		SteadyNs:        []int{3, 6},
		SteadyTimings:   DefaultTimings,
		SteadyWarmup:    3 * time.Second,
		SteadyWindow:    10 * time.Second,
		ScaleN:          50,
		ScaleTimings:    DefaultTimings,
		ScaleRuns:       1,
		ScaleWarmup:     2 * time.Second,
		ScaleWindow:     6 * time.Second,
		Settle:          100 * time.Millisecond,
	}
}

// Report is everything one run measured.
type Report struct {
	Opts              Options
	Started, Ended    time.Time
	Machine           Machine
	Versions          Versions
	ControlPlaneUp    time.Duration
	Micro             string // go test -bench output
	Handoff           map[Lib]*HandoffResult
	Limit             LimitResult
	Failover          map[Lib]*Dist // last successful renewal -> OnStartedLeading
	Steady            []SteadyResult
	ScaleRuns         []*ScaleRun // scale.go, in the order made
	PhaseDurations    []PhaseDuration
	Handoffs          *HandoffsResult // handoff.go
	Shard             *ShardResult    // shard.go
	Fence             *FenceResult    // fence.go
	Errors            []string
	Notes             []string
	mu                sync.Mutex
	goroutineBaseline int
}

// HandoffResult is one library's handoff latencies.
type HandoffResult struct {
	FromRelease Dist // release write's response -> follower's OnStartedLeading
	FromCancel  Dist // leader's cancel() -> follower's OnStartedLeading
}

// LimitResult is the raw-client lower bound of a handoff.
type LimitResult struct {
	Acquire      Dist // release response -> acquire response (watch event + acquire write)
	ReleaseWrite Dist // the release write's own latency
	WatchEvent   Dist // release response -> watch event received (may be < 0)
}

// SteadyResult is the request load of N candidates on one Lease.
type SteadyResult struct {
	Lib     Lib
	N       int
	Window  time.Duration
	Counts  Counts // requests during the window; WatchesOpen at its end
	Leaders int    // candidates leading at the end of the window
}

// PerMin is requests per minute during the window.
func (s SteadyResult) PerMin() float64 {
	return float64(s.Counts.Total()) / s.Window.Minutes()
}

// PhaseDuration is how long one phase took.
type PhaseDuration struct {
	Name string
	Took time.Duration
}

func (r *Report) errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
}

func (r *Report) notef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

type runner struct {
	opts  Options
	admin *rest.Config
	cs    kubernetes.Interface
	rep   *Report
	start time.Time
}

func (b *runner) logf(format string, args ...any) {
	if b.opts.Log == nil {
		return
	}
	fmt.Fprintf(b.opts.Log, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// Run starts its own control plane, measures, stops it, and returns the
// report. Measurement problems are in Report.Errors; the error is for a run
// that could not take place at all.
func Run(ctx context.Context, opts Options) (*Report, error) {
	b := &runner{opts: opts, start: time.Now()}
	rep := &Report{
		Opts:     opts,
		Started:  time.Now(),
		Machine:  machineInfo(),
		Handoff:  map[Lib]*HandoffResult{},
		Failover: map[Lib]*Dist{},
	}
	b.rep = rep

	if opts.Micro {
		b.phase("micro-benchmarks", func() {
			out, err := runMicro(ctx, opts.RootDir, opts.MicroBenchtime)
			rep.Micro = out
			if err != nil {
				rep.errorf("micro-benchmarks: %v", err)
			}
		})
	}

	b.logf("starting kube-apiserver and etcd")
	cp, err := controlplane.Start()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			b.logf("stopping the control plane: %v", err)
		}
	}()
	rep.ControlPlaneUp = cp.StartupTime
	rep.Versions = versions(cp.BinDir())
	b.admin = cp.Config()
	b.admin.QPS, b.admin.Burst = 5000, 10000
	if b.cs, err = kubernetes.NewForConfig(b.admin); err != nil {
		return nil, err
	}
	b.logf("control plane up in %v (kube-apiserver %s, etcd %s)", cp.StartupTime.Round(time.Millisecond), rep.Versions.Kubernetes, rep.Versions.Etcd)
	for _, ns := range []string{"bench-limit", "bench-handoff", "bench-failover", "bench-steady"} { // the scale phase makes its own
		if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	time.Sleep(time.Second)
	runtime.GC()
	rep.goroutineBaseline = runtime.NumGoroutine()

	if opts.runs("handoff") {
		b.phase("handoff limit (raw calls)", func() { b.limit(ctx) })
		for _, lib := range Libs {
			b.phase("handoff "+lib.String(), func() { b.handoff(ctx, lib) })
		}
	}
	if opts.runs("failover") {
		b.phase("failover (both libraries concurrently)", func() { b.failover(ctx) })
	}
	if opts.runs("steady") {
		b.phase("steady state (all groups concurrently)", func() { b.steady(ctx) })
	}
	if opts.runs("scale") {
		b.scaleRuns(ctx) // scale.go: a phase per run and library
	}
	if opts.runs("handoffs") { // handoff.go: yield, rolling update, coordinated election
		b.phase("handoffs on purpose (yield, rolling update, coordinated election)", func() { b.handoffs(ctx) })
	}
	if b.runsOwn("sharding") { // shard.go, on a control plane of its own
		b.phase("sharding (leasehold shard vs client-go × K)", func() { b.sharding(ctx) })
	}
	if b.runsOwn("fencing") { // fence.go, on a control plane of its own
		b.phase("fencing (ValidatingAdmissionPolicy)", func() { b.fencing(ctx) })
	}
	if cg := rep.Failover[ClientGo]; cg != nil && cg.N() > 0 && cg.Min() < opts.FailoverTimings.Lease {
		rep.notef("client-go took over %s before LeaseDuration had passed since the leader's last successful renewal: its follower compares the Lease record with renewTime serialized in whole seconds (LeaderElectionRecord uses metav1.Time), so renewals within one second look unchanged to it; with a sub-second RetryPeriod (%v) its expiry can start from an older renewal",
			fmtDur(opts.FailoverTimings.Lease-cg.Min()), opts.FailoverTimings.Retry)
	}
	rep.Ended = time.Now()
	return rep, ctx.Err()
}

// phase runs f, records its duration, and checks that it left no
// goroutines behind.
func (b *runner) phase(name string, f func()) {
	b.logf("phase: %s", name)
	t := time.Now()
	f()
	took := time.Since(t)
	b.rep.PhaseDurations = append(b.rep.PhaseDurations, PhaseDuration{name, took})
	b.logf("phase: %s done in %v", name, took.Round(100*time.Millisecond))
	if base := b.rep.goroutineBaseline; base > 0 {
		ok := waitFor(context.Background(), 15*time.Second, func() bool { return runtime.NumGoroutine() <= base+10 })
		if !ok {
			b.rep.errorf("%s: %d goroutines left after the phase (baseline %d): electors leaked", name, runtime.NumGoroutine(), base)
		}
	}
}

// phaseDelay is Settle plus a random part of one retry period.
func (b *runner) phaseDelay(t Timings) time.Duration {
	return b.opts.Settle + rand.N(t.Retry)
}

type startEvent struct {
	e  *elector
	at time.Time
}

// trio starts a leader, waits until it leads, then starts two followers
// and waits until they are ready. It returns the three and the channel of
// OnStartedLeading entries after the leader's.
func (b *runner) trio(ctx context.Context, lib Lib, ns, lease string, t Timings, release bool) ([]*elector, chan startEvent, error) {
	starts := make(chan startEvent, 16)
	var es []*elector
	mk := func(id string) (*elector, error) {
		rec := NewRecorder()
		rec.TrackRelease = true
		cs, err := clientFor(b.admin, rec, true)
		if err != nil {
			return nil, err
		}
		e := startElector(ctx, electorSpec{
			lib: lib, namespace: ns, lease: lease, id: lease + "-" + id, timings: t, release: release,
			client: cs, rec: rec,
			onStart: func(e *elector, at time.Time) {
				select {
				case starts <- startEvent{e, at}:
				default:
				}
			},
		})
		es = append(es, e)
		return e, e.err
	}
	leader, err := mk("a")
	if err != nil {
		return es, nil, err
	}
	select {
	case ev := <-starts:
		if ev.e != leader {
			return es, nil, fmt.Errorf("%s: unexpected first leader %s", lease, ev.e.spec.id)
		}
	case <-time.After(30 * time.Second):
		return es, nil, fmt.Errorf("%s: first candidate did not lead within 30s", lease)
	}
	f1, err1 := mk("b")
	f2, err2 := mk("c")
	if err1 != nil || err2 != nil {
		return es, nil, fmt.Errorf("%s: start followers: %v %v", lease, err1, err2)
	}
	if !waitFor(ctx, 10*time.Second, func() bool { return f1.ready() && f2.ready() }) {
		return es, nil, fmt.Errorf("%s: followers not ready within 10s", lease)
	}
	return es, starts, nil
}

func teardown(es []*elector) error {
	err := stopAll(es, 30*time.Second)
	for _, e := range es {
		e.spec.rec.CloseIdle()
	}
	return err
}

// handoff measures the takeover after a clean release: leader cancelled
// with ReleaseOnCancel, two followers.
func (b *runner) handoff(ctx context.Context, lib Lib) {
	res := &HandoffResult{}
	b.rep.Handoff[lib] = res
	t := b.opts.HandoffTimings
	for round := 0; round < b.opts.HandoffRounds && ctx.Err() == nil; round++ {
		lease := fmt.Sprintf("handoff-%s-%d", lib, round)
		es, starts, err := b.trio(ctx, lib, "bench-handoff", lease, t, true)
		if err == nil {
			time.Sleep(b.phaseDelay(t))
			leader := es[0]
			cancelled := time.Now()
			leader.cancel()
			timeout := 3*t.Retry + 10*time.Second
			select {
			case ev := <-starts:
				if err = leader.stop(10 * time.Second); err == nil {
					rel := leader.spec.rec.ReleaseAt()
					if rel.IsZero() {
						err = fmt.Errorf("%s: the leader made no release write", lease)
					} else {
						res.FromRelease.Add(ev.at.Sub(rel))
						res.FromCancel.Add(ev.at.Sub(cancelled))
					}
				}
			case <-time.After(timeout):
				err = fmt.Errorf("%s: no follower took over within %v of the leader's cancel", lease, timeout)
			}
		}
		if terr := teardown(es); terr != nil && err == nil {
			err = terr
		}
		if err != nil {
			b.rep.errorf("handoff %s round %d: %v", lib, round, err)
		}
	}
	b.logf("handoff %s: p50 %s p99 %s (from release response), p50 %s from cancel()",
		lib, fmtDur(res.FromRelease.P50()), fmtDur(res.FromRelease.P99()), fmtDur(res.FromCancel.P50()))
}

// limit measures what a handoff costs at least with raw client calls: one
// release write, the watch event it causes, one acquire write.
func (b *runner) limit(ctx context.Context) {
	res := &b.rep.Limit
	for round := 0; round < b.opts.LimitRounds && ctx.Err() == nil; round++ {
		if err := b.limitRound(ctx, round, res); err != nil {
			b.rep.errorf("handoff limit round %d: %v", round, err)
		}
	}
	b.logf("handoff limit: p50 %s p99 %s (release response -> acquire response); release write p50 %s",
		fmtDur(res.Acquire.P50()), fmtDur(res.Acquire.P99()), fmtDur(res.ReleaseWrite.P50()))
}

func (b *runner) limitRound(ctx context.Context, round int, res *LimitResult) error {
	const ns = "bench-limit"
	name := fmt.Sprintf("limit-%d", round)
	recA, recB := NewRecorder(), NewRecorder()
	defer recA.CloseIdle()
	defer recB.CloseIdle()
	csA, err := clientFor(b.admin, recA, true)
	if err != nil {
		return err
	}
	csB, err := clientFor(b.admin, recB, true)
	if err != nil {
		return err
	}
	now := metav1.NewMicroTime(time.Now())
	lease, err := csA.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a"), LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To[int32](0)},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	w, err := csB.CoordinationV1().Leases(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: lease.ResourceVersion,
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	time.Sleep(b.opts.Settle)

	rel := lease.DeepCopy()
	rel.Spec.HolderIdentity = nil
	rel.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
	t0 := time.Now()
	released, err := csA.CoordinationV1().Leases(ns).Update(ctx, rel, metav1.UpdateOptions{})
	t1 := time.Now()
	if err != nil {
		return err
	}
	var seen *coordinationv1.Lease
	var tEv time.Time
	timeout := time.After(10 * time.Second)
	for seen == nil {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch closed")
			}
			if l, isLease := ev.Object.(*coordinationv1.Lease); isLease && ev.Type == watch.Modified && l.ResourceVersion == released.ResourceVersion {
				seen, tEv = l, time.Now()
			}
		case <-timeout:
			return fmt.Errorf("no watch event for the release within 10s")
		}
	}
	acq := seen.DeepCopy()
	stamp := metav1.NewMicroTime(time.Now())
	acq.Spec.HolderIdentity = ptr.To("b")
	acq.Spec.AcquireTime, acq.Spec.RenewTime = &stamp, &stamp
	acq.Spec.LeaseTransitions = ptr.To(*acq.Spec.LeaseTransitions + 1)
	if _, err := csB.CoordinationV1().Leases(ns).Update(ctx, acq, metav1.UpdateOptions{}); err != nil {
		return err
	}
	t2 := time.Now()
	res.Acquire.Add(t2.Sub(t1))
	res.ReleaseWrite.Add(t1.Sub(t0))
	res.WatchEvent.Add(tEv.Sub(t1))
	return nil
}

// failover measures the takeover after a crash: the leader's client is
// blackholed and its ctx cancelled without release. Latency runs from the
// response of the leader's last successful write to a follower's
// OnStartedLeading. Both libraries run their rounds concurrently, on
// different Leases.
func (b *runner) failover(ctx context.Context) {
	t := b.opts.FailoverTimings
	var wg sync.WaitGroup
	for _, lib := range Libs {
		d := &Dist{}
		b.rep.Failover[lib] = d
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < b.opts.FailoverRounds && ctx.Err() == nil; round++ {
				lease := fmt.Sprintf("failover-%s-%d", lib, round)
				es, starts, err := b.trio(ctx, lib, "bench-failover", lease, t, false)
				if err == nil {
					time.Sleep(b.phaseDelay(t))
					leader := es[0]
					leader.spec.rec.Blackhole()
					leader.cancel()
					timeout := t.Lease + 3*t.Retry + 15*time.Second
					select {
					case ev := <-starts:
						last := leader.spec.rec.LastWriteOK()
						d.Add(ev.at.Sub(last))
					case <-time.After(timeout):
						err = fmt.Errorf("%s: no follower took over within %v of the crash", lease, timeout)
					}
				}
				if terr := teardown(es); terr != nil && err == nil {
					err = terr
				}
				if err != nil {
					b.rep.errorf("failover %s round %d: %v", lib, round, err)
				}
			}
			b.logf("failover %s: p50 %s max %s (LeaseDuration %v)", lib, fmtDur(d.P50()), fmtDur(d.Max()), t.Lease)
		}()
	}
	wg.Wait()
}

// steady counts the requests of N candidates on one Lease over a window,
// after a warm-up, for every N and both libraries at once (each group on
// its own Lease; the counts are per group).
func (b *runner) steady(ctx context.Context) {
	type group struct {
		lib Lib
		n   int
		es  []*elector
	}
	var groups []*group
	var all []*elector
	t := b.opts.SteadyTimings
	for _, lib := range Libs {
		for _, n := range b.opts.SteadyNs {
			g := &group{lib: lib, n: n}
			lease := fmt.Sprintf("steady-%s-%d", lib, n)
			for i := 0; i < n; i++ {
				rec := NewRecorder()
				cs, err := clientFor(b.admin, rec, true)
				if err != nil {
					b.rep.errorf("steady: %v", err)
					return
				}
				e := startElector(ctx, electorSpec{lib: lib, namespace: "bench-steady", lease: lease,
					id: fmt.Sprintf("%s-%d", lease, i), timings: t, release: true, client: cs, rec: rec})
				g.es = append(g.es, e)
				all = append(all, e)
			}
			groups = append(groups, g)
		}
	}
	defer func() {
		if err := teardown(all); err != nil {
			b.rep.errorf("steady: %v", err)
		}
	}()
	leaders := func(g *group) int {
		n := 0
		for _, e := range g.es {
			if e.leading.Load() {
				n++
			}
		}
		return n
	}
	snap := func(g *group) Counts {
		var c Counts
		for _, e := range g.es {
			c = c.Add(e.spec.rec.Snapshot())
		}
		return c
	}
	if !waitFor(ctx, 30*time.Second, func() bool {
		for _, g := range groups {
			if leaders(g) != 1 {
				return false
			}
		}
		return true
	}) {
		b.rep.errorf("steady: not every group had one leader within 30s")
	}
	time.Sleep(b.opts.SteadyWarmup)
	before := make([]Counts, len(groups))
	for i, g := range groups {
		before[i] = snap(g)
	}
	start := time.Now()
	time.Sleep(b.opts.SteadyWindow)
	window := time.Since(start)
	for i, g := range groups {
		r := SteadyResult{Lib: g.lib, N: g.n, Window: window, Counts: snap(g).Sub(before[i]), Leaders: leaders(g)}
		if r.Leaders != 1 {
			b.rep.errorf("steady %s N=%d: %d leaders at the end of the window", g.lib, g.n, r.Leaders)
		}
		b.rep.Steady = append(b.rep.Steady, r)
		b.logf("steady %s N=%d: %.0f requests/min %v, %d watches open", g.lib, g.n, r.PerMin(), r.Counts.Verbs, r.Counts.WatchesOpen)
	}
}
