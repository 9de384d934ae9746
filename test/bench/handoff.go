package bench

// Handoffs on purpose (issue 12, item 5), report only:
//   - yield gap: a leader + 2 followers; the leader Yields to a named
//     follower; from the old work's return to the new work's start;
//   - coordinated election (KEP-4355) on a second control plane started
//     with the CoordinatedLeaderElection gate: a candidate with an older
//     emulation version joins a running election and the controller moves
//     leadership to it; leasehold's NewCoordinated against client-go's
//     Coordinated: true;
//   - a rolling update of 3 replicas as a Deployment with maxSurge 1 does
//     it: a new replica is started (and ready) before each old one is
//     stopped, the oldest (the leader) first; leader changes, leaderless
//     and overlapping time, for leasehold, client-go, and leasehold with an
//     upgrade handoff (the stretch target: the first new replica asks the
//     leader, once, to hand over).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/controlplane"
)

// YieldGapP50Target is issue 12's target for the yield gap.
const YieldGapP50Target = 10 * time.Millisecond

// CoordinatedControlPlane is the control plane the coordinated phase and
// test/coordinated start: kube-apiserver's election controller on, the
// LeaseCandidate API served.
func CoordinatedControlPlane() []controlplane.Option {
	return []controlplane.Option{
		controlplane.WithAPIServerFlag("feature-gates", "CoordinatedLeaderElection=true"),
		controlplane.WithAPIServerFlag("runtime-config", "coordination.k8s.io/v1beta1=true"),
	}
}

// HandoffsResult is what the handoffs phase measured.
type HandoffsResult struct {
	YieldRounds int
	// YieldGap is the old work's return → the successor's work start.
	YieldGap Dist
	// YieldCall is Yield called → the successor's work start.
	YieldCall Dist
	// YieldRelease is the old work's return → the release write's
	// answer; YieldAcquire the release's answer → the successor's work
	// start (the watch event and the successor's acquire write).
	YieldRelease, YieldAcquire Dist

	// Coordinated is per library; CoordinatedErr says why it is missing.
	Coordinated    map[Lib]*CoordinatedResult
	CoordinatedErr string

	// Rolling is per variant, in RollingVariants order.
	Rolling map[string]*RollingResult
}

// CoordinatedResult is one library's coordinated handovers.
type CoordinatedResult struct {
	Rounds []*CoordinatedRound
}

// dist collects one duration of every round.
func (c *CoordinatedResult) dist(f func(*CoordinatedRound) time.Duration) Dist {
	var d Dist
	for _, r := range c.Rounds {
		d.Add(f(r))
	}
	return d
}

// CoordinatedRound is the timeline of one coordinated handover: a leader
// with emulation version 1.31.0 and a candidate with 1.30.0 joining.
type CoordinatedRound struct {
	Lib Lib
	// Joined is when the older candidate started (its LeaseCandidate is
	// registered within a request).
	Joined time.Time
	// Marked, Released, Assigned and TakenUp are when a watch saw the
	// controller write spec.preferredHolder, the leader release the
	// Lease (zero if it let it expire), the controller assign it to the
	// new candidate, and the new candidate's first write of its term. A
	// watch sees these a little after the electors do.
	Marked, Released, Assigned, TakenUp time.Time
	// OldReturned is when the old leader's work returned; NewStarted
	// when the new leader's started.
	OldReturned, NewStarted time.Time
}

// Gap is the leaderless time: the old work's return → the new work's
// start. Negative means the two works overlapped.
func (r *CoordinatedRound) Gap() time.Duration { return r.NewStarted.Sub(r.OldReturned) }

// Handover is the older candidate's start → its work's start.
func (r *CoordinatedRound) Handover() time.Duration { return r.NewStarted.Sub(r.Joined) }

// String renders the round's timeline relative to Joined.
func (r *CoordinatedRound) String() string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmtDur(t.Sub(r.Joined))
	}
	return fmt.Sprintf("%s: joined 0, preferredHolder set %s, released %s, old work returned %s, assigned %s, taken up %s, new work started %s (gap %s)",
		r.Lib, at(r.Marked), at(r.Released), at(r.OldReturned), at(r.Assigned), at(r.TakenUp), at(r.NewStarted), fmtDur(r.Gap()))
}

// RollingVariants are the rolling-update variants, in report order.
var RollingVariants = []string{"leasehold", "leasehold + upgrade handoff", "client-go"}

// RollingResult is one variant's rolling updates.
type RollingResult struct {
	Rounds     int
	Changes    []int // leader changes per round
	ToOld      []int // of which to an old replica
	Leaderless Dist  // total leaderless time per round
	Overlap    Dist  // total time two works ran at once, per round
	// SteadyPerMin is the requests/min of the 3 new replicas after the
	// rollout (upgrade-handoff variant only), over SteadyWindow.
	SteadyPerMin float64
	SteadyVerbs  map[string]int
	SteadyWindow time.Duration
}

// handoffSizes are the rounds per part of the phase.
type handoffSizes struct {
	yield, coordinated, rolling int
	steadyWindow                time.Duration
}

func (o Options) handoffSizes() handoffSizes {
	if o.Smoke {
		return handoffSizes{yield: 3, coordinated: 1, rolling: 1, steadyWindow: 10 * time.Second}
	}
	return handoffSizes{yield: 20, coordinated: 3, rolling: 5, steadyWindow: 60 * time.Second}
}

// handoffs is the phase.
func (b *runner) handoffs(ctx context.Context) {
	sz := b.opts.handoffSizes()
	res := &HandoffsResult{Coordinated: map[Lib]*CoordinatedResult{}, Rolling: map[string]*RollingResult{}}
	b.rep.Handoffs = res
	for _, ns := range []string{"bench-yield", "bench-rolling"} {
		if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			b.rep.errorf("handoffs: create namespace %s: %v", ns, err)
			return
		}
	}

	t := b.opts.HandoffTimings
	for round := 0; round < sz.yield && ctx.Err() == nil; round++ {
		if err := b.yieldRound(ctx, res, fmt.Sprintf("yield-%d", round), t); err != nil {
			b.rep.errorf("yield round %d: %v", round, err)
		}
	}
	res.YieldRounds = res.YieldGap.N()
	b.logf("yield gap: p50 %s p99 %s (old work returned → new work started; parts p50 %s to the release's answer, %s from it); Yield called → new work p50 %s",
		fmtDur(res.YieldGap.P50()), fmtDur(res.YieldGap.P99()), fmtDur(res.YieldRelease.P50()), fmtDur(res.YieldAcquire.P50()), fmtDur(res.YieldCall.P50()))

	for _, variant := range RollingVariants {
		rr := &RollingResult{}
		res.Rolling[variant] = rr
		for round := 0; round < sz.rolling && ctx.Err() == nil; round++ {
			window := time.Duration(0)
			if variant == "leasehold + upgrade handoff" && round == 0 {
				window = sz.steadyWindow
			}
			if err := b.rollingRound(ctx, rr, variant, fmt.Sprintf("rolling-%s-%d", strings.NewReplacer(" + ", "-", " ", "-").Replace(variant), round), t, window); err != nil {
				b.rep.errorf("rolling update %s round %d: %v", variant, round, err)
			}
		}
		b.logf("rolling update %s: leader changes %v (to an old replica %v), leaderless p50 %s max %s, overlap max %s",
			variant, rr.Changes, rr.ToOld, fmtDur(rr.Leaderless.P50()), fmtDur(rr.Leaderless.Max()), fmtDur(rr.Overlap.Max()))
	}

	b.logf("starting a second control plane with CoordinatedLeaderElection")
	cp, err := controlplane.Start(CoordinatedControlPlane()...)
	if err != nil {
		res.CoordinatedErr = err.Error()
		b.rep.errorf("coordinated: %v", err)
		return
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			b.logf("stopping the coordinated control plane: %v", err)
		}
	}()
	admin := cp.Config()
	for _, lib := range Libs {
		cr := &CoordinatedResult{}
		res.Coordinated[lib] = cr
		for round := 0; round < sz.coordinated && ctx.Err() == nil; round++ {
			r, err := CoordinatedHandover(ctx, admin, lib, "default", fmt.Sprintf("coordinated-%s-%d", lib, round), t)
			if err != nil {
				b.rep.errorf("coordinated %s round %d: %v", lib, round, err)
				continue
			}
			cr.Rounds = append(cr.Rounds, r)
			b.logf("coordinated %s", r)
		}
	}
}

// replica is one candidate of either library, with its terms on a shared
// timeline.
type replica struct {
	id      string
	lib     Lib
	version string
	rec     *Recorder
	cs      kubernetes.Interface
	elector *leasehold.Elector // leasehold only
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	seen    chan struct{} // closed when the first leader is observed
	once    sync.Once
}

// replicaSpec describes a replica to start.
type replicaSpec struct {
	lib       Lib
	admin     *rest.Config
	ns, lease string
	id        string
	t         Timings
	tl        *timeline
	// coordinated: NewCoordinated / Coordinated: true with a candidate
	// of these versions.
	coordinated       bool
	binary, emulation string
	// version, if set, is written as the app.kubernetes.io/version label
	// while this replica leads (leasehold only).
	version string
	rejoin  bool
}

// versionLabel carries a leader's version on the Lease, for the upgrade
// handoff.
const versionLabel = "app.kubernetes.io/version"

func startReplica(parent context.Context, s replicaSpec) (*replica, error) {
	rec := NewRecorder()
	rec.TrackRelease = true
	admin := rest.CopyConfig(s.admin)
	admin.WarningHandler = rest.NoWarnings{} // LeaseCandidate v1beta1 is deprecated: one warning per request
	cs, err := clientFor(admin, rec, true)
	if err != nil {
		return nil, err
	}
	logger := logr.Discard()
	if verboseElectors {
		logger = klog.Background().WithValues("bench", s.id)
	}
	ctx, cancel := context.WithCancel(klog.NewContext(parent, logger))
	r := &replica{id: s.id, lib: s.lib, version: s.version, rec: rec, cs: cs, cancel: cancel, done: make(chan struct{}), seen: make(chan struct{})}
	work := func(ctx context.Context) {
		i := s.tl.begin(s.id)
		<-ctx.Done()
		s.tl.end(i)
	}
	seen := func(string) { r.once.Do(func() { close(r.seen) }) }
	switch s.lib {
	case Leasehold:
		cfg := leasehold.Config{
			Lock:          &leasehold.LeaseLock{Namespace: s.ns, Name: s.lease, Identity: s.id, Client: cs.CoordinationV1()},
			LeaseDuration: s.t.Lease, RenewDeadline: s.t.Renew, RetryPeriod: s.t.Retry,
			ReleaseOnCancel: true,
			Rejoin:          s.rejoin,
			Callbacks:       leasehold.Callbacks{OnStartedLeading: work, OnNewLeader: seen},
		}
		if s.version != "" {
			cfg.Lock.Labels = map[string]string{versionLabel: s.version}
		}
		var e *leasehold.Elector
		if s.coordinated {
			e, err = leasehold.NewCoordinated(cfg, leasehold.CandidateConfig{Client: cs.CoordinationV1beta1(), BinaryVersion: s.binary, EmulationVersion: s.emulation})
		} else {
			e, err = leasehold.New(cfg)
		}
		if err != nil {
			cancel()
			return nil, err
		}
		r.elector = e
		go func() {
			defer close(r.done)
			r.err = e.Run(ctx)
		}()
	case ClientGo:
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: s.ns, Name: s.lease},
				Client:     cs.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: s.id},
			},
			LeaseDuration: s.t.Lease, RenewDeadline: s.t.Renew, RetryPeriod: s.t.Retry,
			ReleaseOnCancel: true,
			Coordinated:     s.coordinated,
			Name:            s.ns + "/" + s.lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: work,
				OnStoppedLeading: func() {},
				OnNewLeader:      seen,
			},
		})
		if err != nil {
			cancel()
			return nil, err
		}
		var candidate *leaderelection.LeaseCandidate
		if s.coordinated {
			if candidate, _, err = leaderelection.NewCandidate(cs, s.ns, s.id, s.lease, s.binary, s.emulation, coordinationv1.OldestEmulationVersion); err != nil {
				cancel()
				return nil, err
			}
		}
		go func() {
			defer close(r.done)
			var wg sync.WaitGroup
			if candidate != nil {
				wg.Go(func() { candidate.Run(ctx) })
			}
			for ctx.Err() == nil { // client-go's Run returns when a term ends
				le.Run(ctx)
			}
			wg.Wait()
		}()
	}
	return r, nil
}

// ready reports whether the replica follows: leasehold's watch is open,
// client-go has made its first request.
func (r *replica) ready() bool {
	if r.lib == Leasehold {
		return r.rec.WatchesOpen() > 0
	}
	return r.rec.Requests("get")+r.rec.Requests("create") > 0
}

// stop cancels the replica and waits for it to return.
func (r *replica) stop(timeout time.Duration) error {
	r.cancel()
	select {
	case <-r.done:
		r.rec.CloseIdle()
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: did not return %v after cancel", r.id, timeout)
	}
}

func stopReplicas(rs []*replica) error {
	var errs []error
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		errs = append(errs, r.stop(30*time.Second))
	}
	return errors.Join(errs...)
}

// timeline records the terms of all replicas of one election on one
// clock.
type timeline struct {
	mu    sync.Mutex
	spans []span
}

type span struct {
	id         string
	start, end time.Time // end zero while running
}

func newTimeline() *timeline { return &timeline{} }

func (tl *timeline) begin(id string) int {
	now := time.Now()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.spans = append(tl.spans, span{id: id, start: now})
	return len(tl.spans) - 1
}

func (tl *timeline) end(i int) {
	now := time.Now()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.spans[i].end = now
}

// leader returns the replica whose work runs now, "" if none.
func (tl *timeline) leader() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := len(tl.spans) - 1; i >= 0; i-- {
		if tl.spans[i].end.IsZero() {
			return tl.spans[i].id
		}
	}
	return ""
}

// snapshot returns a copy of the spans.
func (tl *timeline) snapshot() []span {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.spans)
}

// coverage sums, over [from, to], the time no work ran and the time two
// or more ran at once.
func coverage(spans []span, from, to time.Time) (none, overlap time.Duration) {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, s := range spans {
		end := s.end
		if end.IsZero() || end.After(to) {
			end = to
		}
		start := s.start
		if start.Before(from) {
			start = from
		}
		if end.After(start) {
			edges = append(edges, edge{start, +1}, edge{end, -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // ends before starts at one instant
	})
	n, last := 0, from
	for _, e := range edges {
		switch {
		case n == 0:
			none += e.at.Sub(last)
		case n >= 2:
			overlap += e.at.Sub(last)
		}
		n += e.delta
		last = e.at
	}
	if n == 0 && to.After(last) {
		none += to.Sub(last)
	}
	return none, overlap
}

// yieldRound runs a leader and two followers; the leader yields to the
// second follower.
func (b *runner) yieldRound(ctx context.Context, res *HandoffsResult, lease string, t Timings) error {
	tl := newTimeline()
	var rs []*replica
	defer func() { _ = stopReplicas(rs) }()
	start := func(id string) (*replica, error) {
		r, err := startReplica(ctx, replicaSpec{lib: Leasehold, admin: b.admin, ns: "bench-yield", lease: lease, id: lease + "-" + id, t: t, tl: tl})
		if err == nil {
			rs = append(rs, r)
		}
		return r, err
	}
	a, err := start("a")
	if err != nil {
		return err
	}
	if !waitFor(ctx, 30*time.Second, func() bool { return tl.leader() == a.id }) {
		return fmt.Errorf("%s: a did not lead within 30s", lease)
	}
	f1, err1 := start("b")
	f2, err2 := start("c")
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if !waitFor(ctx, 10*time.Second, func() bool { return f1.ready() && f2.ready() }) {
		return fmt.Errorf("%s: followers not ready within 10s", lease)
	}
	time.Sleep(b.phaseDelay(t))
	called := time.Now()
	if err := a.elector.Yield(ctx, f2.id); err != nil {
		return fmt.Errorf("%s: Yield: %w", lease, err)
	}
	if !waitFor(ctx, 10*time.Second, func() bool { return tl.leader() == f2.id }) {
		return fmt.Errorf("%s: the successor did not lead within 10s of the yield", lease)
	}
	spans := tl.snapshot()
	if len(spans) != 2 || spans[0].id != a.id || spans[1].id != f2.id || spans[0].end.IsZero() {
		return fmt.Errorf("%s: terms %v, want a's then c's", lease, spans)
	}
	res.YieldGap.Add(spans[1].start.Sub(spans[0].end))
	res.YieldCall.Add(spans[1].start.Sub(called))
	if rel := a.rec.ReleaseAt(); !rel.IsZero() {
		res.YieldRelease.Add(rel.Sub(spans[0].end))
		res.YieldAcquire.Add(spans[1].start.Sub(rel))
	}
	return nil
}

// rollingRound runs one rolling update of 3 replicas of variant, as a
// Deployment with maxSurge 1 and maxUnavailable 0 does it: a new pod
// starts (its process 1s after the pod is created) and is ready 1s later;
// then the oldest old pod is deleted and terminates (graceful: its ctx is
// cancelled, it releases) while the next new pod is created.
func (b *runner) rollingRound(ctx context.Context, rr *RollingResult, variant, lease string, t Timings, steadyWindow time.Duration) error {
	const ns = "bench-rolling"
	lib := Leasehold
	if variant == "client-go" {
		lib = ClientGo
	}
	upgrade := variant == "leasehold + upgrade handoff"
	tl := newTimeline()
	var all []*replica
	defer func() { _ = stopReplicas(all) }()
	start := func(id, ver string) (*replica, error) {
		s := replicaSpec{lib: lib, admin: b.admin, ns: ns, lease: lease, id: lease + "-" + id, t: t, tl: tl, rejoin: true}
		if upgrade {
			s.version = ver
		}
		r, err := startReplica(ctx, s)
		if err != nil {
			return nil, err
		}
		all = append(all, r)
		if !waitFor(ctx, 10*time.Second, r.ready) {
			return nil, fmt.Errorf("%s did not get ready within 10s", r.id)
		}
		return r, nil
	}
	var old []*replica
	for i := 1; i <= 3; i++ {
		r, err := start(fmt.Sprintf("old%d", i), "1.0.0")
		if err != nil {
			return err
		}
		old = append(old, r)
		if i == 1 && !waitFor(ctx, 30*time.Second, func() bool { return tl.leader() == r.id }) {
			return fmt.Errorf("the first replica did not lead within 30s")
		}
	}
	time.Sleep(b.phaseDelay(t))
	from := time.Now()
	var fresh []*replica
	for i := 1; i <= 3; i++ {
		n, err := start(fmt.Sprintf("new%d", i), "1.1.0")
		if err != nil {
			return err
		}
		fresh = append(fresh, n)
		if upgrade {
			select {
			case <-n.seen:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("%s saw no leader within 10s", n.id)
			}
			if err := askUpgradeHandoff(ctx, n.cs, ns, lease, n.id, n.version); err != nil {
				return fmt.Errorf("%s: upgrade handoff: %w", n.id, err)
			}
		}
		time.Sleep(time.Second) // the new pod's readiness: the Deployment waits for it
		// The old pod terminates; meanwhile the Deployment creates the
		// next new pod, whose process starts a second later.
		old[i-1].cancel()
		time.Sleep(time.Second)
	}
	for _, r := range old {
		if err := r.stop(30 * time.Second); err != nil {
			return err
		}
	}
	if !waitFor(ctx, 2*t.Lease+10*time.Second, func() bool { return tl.leader() != "" }) {
		return fmt.Errorf("no leader after the rollout")
	}
	to := time.Now()
	spans := tl.snapshot()
	none, overlap := coverage(spans, from, to)
	changes, toOld := 0, 0
	for _, s := range spans[1:] {
		changes++
		if strings.Contains(s.id, "-old") {
			toOld++
		}
	}
	b.logf("rolling update %s: terms %s; leaderless %s, overlap %s", variant, terms(spans, from), fmtDur(none), fmtDur(overlap))
	rr.Rounds++
	rr.Changes = append(rr.Changes, changes)
	rr.ToOld = append(rr.ToOld, toOld)
	rr.Leaderless.Add(none)
	rr.Overlap.Add(overlap)

	if steadyWindow > 0 {
		var c0 Counts
		time.Sleep(5 * time.Second)
		for _, n := range fresh {
			c0 = c0.Add(n.rec.Snapshot())
		}
		w0 := time.Now()
		time.Sleep(steadyWindow)
		var c1 Counts
		for _, n := range fresh {
			c1 = c1.Add(n.rec.Snapshot())
		}
		c := c1.Sub(c0)
		rr.SteadyWindow = time.Since(w0)
		rr.SteadyPerMin = float64(c.Total()) / rr.SteadyWindow.Minutes()
		rr.SteadyVerbs = c.Verbs
	}
	return nil
}

// askUpgradeHandoff is the upgrade handoff: a replica that has just
// started reads the Lease once and, if its leader runs an older version
// (the app.kubernetes.io/version label the leader writes with its
// LeaseLock.Labels), names itself in the leasehold.dev/preferred-holder
// annotation, with one conditional update. The leader yields to it in
// milliseconds; the next new replicas find a leader of their own version
// and write nothing. It costs one GET per replica start and one update per
// rollout, nothing in steady state.
func askUpgradeHandoff(ctx context.Context, cs kubernetes.Interface, ns, lease, self, mine string) error {
	me, err := version.ParseSemantic(mine)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 3; attempt++ {
		l, err := cs.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		theirs, err := version.ParseSemantic(l.Labels[versionLabel])
		if holder == "" || holder == self || err != nil || !theirs.LessThan(me) {
			return nil // no leader, ours, unversioned or not older: nothing to ask
		}
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[leasehold.PreferredHolderAnnotation] = self
		_, err = cs.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("the Lease kept changing")
}

// CoordinatedHandover runs one coordinated handover of lib on a control
// plane started with CoordinatedControlPlane: a candidate with emulation
// version 1.31.0 leads, then one with 1.30.0 joins, and kube-apiserver's
// election controller moves leadership to it. It returns the round's
// timeline once the new candidate's work runs; test/coordinated checks it.
func CoordinatedHandover(ctx context.Context, admin *rest.Config, lib Lib, ns, lease string, t Timings) (*CoordinatedRound, error) {
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, err
	}
	tl := newTimeline()
	var rs []*replica
	defer func() { _ = stopReplicas(rs) }()
	start := func(id, emulation string) (*replica, error) {
		r, err := startReplica(ctx, replicaSpec{lib: lib, admin: admin, ns: ns, lease: lease, id: lease + "-" + id, t: t, tl: tl,
			coordinated: true, binary: "1.31.0", emulation: emulation, rejoin: true})
		if err == nil {
			rs = append(rs, r)
		}
		return r, err
	}
	a, err := start("a", "1.31.0")
	if err != nil {
		return nil, err
	}
	if !waitFor(ctx, 60*time.Second, func() bool { return tl.leader() == a.id }) {
		return nil, fmt.Errorf("%s: the first candidate did not lead within 60s", lease)
	}
	time.Sleep(time.Second)

	round := &CoordinatedRound{Lib: lib}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watched := make(chan error, 1)
	w, err := cs.CoordinationV1().Leases(ns).Watch(wctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", lease).String()})
	if err != nil {
		return nil, err
	}
	newID := lease + "-b"
	assignedRV := ""
	var mu sync.Mutex
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			l, ok := ev.Object.(*coordinationv1.Lease)
			if !ok {
				continue
			}
			now := time.Now()
			holder := ""
			if l.Spec.HolderIdentity != nil {
				holder = *l.Spec.HolderIdentity
			}
			mu.Lock()
			switch {
			case round.Marked.IsZero() && l.Spec.PreferredHolder != nil && *l.Spec.PreferredHolder == newID:
				round.Marked = now
			case !round.Marked.IsZero() && round.Released.IsZero() && holder == "":
				round.Released = now
			case round.Assigned.IsZero() && holder == newID && l.Spec.AcquireTime == nil:
				round.Assigned, assignedRV = now, l.ResourceVersion
			case !round.Assigned.IsZero() && round.TakenUp.IsZero() && holder == newID && l.ResourceVersion != assignedRV:
				// The newcomer's first write (client-go's keeps the
				// controller's empty acquireTime).
				round.TakenUp = now
			}
			done := !round.TakenUp.IsZero()
			mu.Unlock()
			if done {
				watched <- nil
				return
			}
		}
		watched <- fmt.Errorf("the Lease watch closed")
	}()

	round.Joined = time.Now()
	b, err := start("b", "1.30.0")
	if err != nil {
		return nil, err
	}
	limit := 3*t.Lease + t.Renew + 30*time.Second
	if !waitFor(ctx, limit, func() bool { return tl.leader() == b.id }) {
		return nil, fmt.Errorf("%s: the older candidate did not lead within %v of joining (terms %v)", lease, limit, tl.snapshot())
	}
	select {
	case err := <-watched:
		if err != nil {
			return nil, err
		}
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%s: the Lease watch did not see the take-up", lease)
	}
	mu.Lock()
	defer mu.Unlock()
	spans := tl.snapshot()
	if len(spans) != 2 || spans[0].id != a.id || spans[1].id != b.id {
		return nil, fmt.Errorf("%s: terms %v, want a's then b's", lease, spans)
	}
	if spans[0].end.IsZero() {
		return nil, fmt.Errorf("%s: a's work still runs while b leads", lease)
	}
	round.OldReturned, round.NewStarted = spans[0].end, spans[1].start
	return round, nil
}

// handoffSections renders the phase for the report.
func (r *Report) handoffSections() []section {
	h := r.Handoffs
	if h == nil {
		return nil
	}
	var out []section
	t := r.Opts.HandoffTimings
	if h.YieldGap.N() > 0 {
		out = append(out, section{
			Title: fmt.Sprintf("Yield: the leader calls Elector.Yield naming one of its 2 followers, %s, %d rounds", t, h.YieldGap.N()),
			Rows: []row{
				{"p50, old work returned → successor's OnStartedLeading", fmtDur(h.YieldGap.P50()), "no Yield", ""},
				{"p99 (nearest rank)", fmtDur(h.YieldGap.P99()), "", ""},
				{"max", fmtDur(h.YieldGap.Max()), "", ""},
				{"p50, Yield called → successor's OnStartedLeading", fmtDur(h.YieldCall.P50()), "", ""},
				{"parts, p50: old work returned → release answered / release answered → successor's OnStartedLeading",
					fmtDur(h.YieldRelease.P50()) + " / " + fmtDur(h.YieldAcquire.P50()), "", ""},
			},
		})
	}
	if lh, cg := h.Coordinated[Leasehold], h.Coordinated[ClientGo]; lh != nil && cg != nil && len(lh.Rounds)+len(cg.Rounds) > 0 {
		type metric struct {
			label string
			f     func(*CoordinatedRound) time.Duration
		}
		since := func(a, b func(*CoordinatedRound) time.Time) func(*CoordinatedRound) time.Duration {
			return func(c *CoordinatedRound) time.Duration {
				if a(c).IsZero() || b(c).IsZero() {
					return 0
				}
				return b(c).Sub(a(c))
			}
		}
		joined := func(c *CoordinatedRound) time.Time { return c.Joined }
		marked := func(c *CoordinatedRound) time.Time { return c.Marked }
		returned := func(c *CoordinatedRound) time.Time { return c.OldReturned }
		assigned := func(c *CoordinatedRound) time.Time { return c.Assigned }
		started := func(c *CoordinatedRound) time.Time { return c.NewStarted }
		s := section{
			Title: fmt.Sprintf("Coordinated election (KEP-4355): a candidate with emulation version 1.30.0 joins a 1.31.0 leader; kube-apiserver's election controller moves leadership, %s, ReleaseOnCancel, %d/%d rounds",
				t, len(lh.Rounds), len(cg.Rounds)),
			Note: `on a second control plane started with --feature-gates=CoordinatedLeaderElection=true --runtime-config=coordination.k8s.io/v1beta1=true; leasehold is NewCoordinated, client-go is LeaderElectionConfig.Coordinated with leaderelection.NewCandidate. Times are medians; a negative gap would be an overlap. "Seen" is when the bench's own watch of the Lease saw the controller's write, a little after the electors did (so the yield can look negative)`,
		}
		for _, m := range []metric{
			{"older candidate started → its OnStartedLeading (the handover)", since(joined, started)},
			{"old work returned → new OnStartedLeading (leaderless)", since(returned, started)},
			{"started → preferredHolder seen set (the controller's election)", since(joined, marked)},
			{"preferredHolder seen set → old work returned", since(marked, returned)},
			{"old work returned → assignment seen", since(returned, assigned)},
			{"assignment seen → new OnStartedLeading", since(assigned, started)},
		} {
			a, b := lh.dist(m.f), cg.dist(m.f)
			r := row{Label: m.label, LH: fmtDur(a.P50()), CG: fmtDur(b.P50()), Ratio: ratio(float64(a.P50()), float64(b.P50()))}
			if a.N() == 0 {
				r.LH = "-"
			}
			if b.N() == 0 {
				r.CG = "-"
			}
			s.Rows = append(s.Rows, r)
		}
		gl, gc := lh.dist(since(returned, started)), cg.dist(since(returned, started))
		s.Rows = append(s.Rows, row{"min gap (negative: the works overlapped)", fmtDur(gl.Min()), fmtDur(gc.Min()), ""})
		out = append(out, s)
	} else if h.CoordinatedErr != "" {
		out = append(out, section{Title: "Coordinated election (KEP-4355)", Note: "not measured: " + h.CoordinatedErr})
	}
	lh, up, cg := h.Rolling["leasehold"], h.Rolling["leasehold + upgrade handoff"], h.Rolling["client-go"]
	if lh != nil && cg != nil && up != nil && lh.Rounds > 0 {
		s := section{
			Title: fmt.Sprintf("Rolling update of 3 replicas as a Deployment with maxSurge 1 does it: a new replica started and ready (1 s) before each old one is stopped, the oldest (the leader) first; the next new process starts 1 s after that stop, %s, %d/%d/%d rounds",
				t, lh.Rounds, up.Rounds, cg.Rounds),
			Note: "every replica has ReleaseOnCancel (and leasehold's Rejoin); leaderless and overlap are summed over the rollout, from the first new replica's start until a leader runs after the last old one stopped. Upgrade handoff: each replica writes its version as the app.kubernetes.io/version label while it leads (LeaseLock.Labels), and a new replica reads the Lease once at start and, if the leader's version is older, names itself in the leasehold.dev/preferred-holder annotation (one conditional update)",
		}
		mean := func(v []int) string {
			if len(v) == 0 {
				return "-"
			}
			n := 0
			for _, x := range v {
				n += x
			}
			return fmt.Sprintf("%.1f %v", float64(n)/float64(len(v)), v)
		}
		s.Rows = append(s.Rows,
			row{"leader changes per round, mean [per round]", mean(lh.Changes), mean(cg.Changes), ""},
			row{"of which to an old replica", mean(lh.ToOld), mean(cg.ToOld), ""},
			durRow("leaderless time per round, p50", lh.Leaderless.P50(), cg.Leaderless.P50()),
			durRow("leaderless time per round, max", lh.Leaderless.Max(), cg.Leaderless.Max()),
			row{"overlap per round, max", fmtDur(lh.Overlap.Max()), fmtDur(cg.Overlap.Max()), ""},
			row{"with the upgrade handoff: leader changes per round [per round]", mean(up.Changes), "", ""},
			row{"with the upgrade handoff: of which to an old replica", mean(up.ToOld), "", ""},
			row{"with the upgrade handoff: leaderless time per round, p50 / max", fmtDur(up.Leaderless.P50()) + " / " + fmtDur(up.Leaderless.Max()), "", ""},
			row{"with the upgrade handoff: overlap per round, max", fmtDur(up.Overlap.Max()), "", ""},
		)
		if up.SteadyWindow > 0 {
			c := Counts{Verbs: up.SteadyVerbs}
			s.Rows = append(s.Rows, row{fmt.Sprintf("with the upgrade handoff: requests/min of the 3 new replicas after the rollout, %v window", up.SteadyWindow.Round(time.Second)),
				perMin(c, up.SteadyWindow), "", ""})
		}
		out = append(out, s)
	}
	return out
}

// handoffTargets checks the phase against issue 12's targets.
func (r *Report) handoffTargets() []Target {
	h := r.Handoffs
	if h == nil {
		return nil
	}
	n := h.YieldGap.N()
	return []Target{{What: "leasehold yield gap p50 (old work returned → new work started)", Limit: YieldGapP50Target,
		Measured: h.YieldGap.P50(), Met: n > 0 && h.YieldGap.P50() <= YieldGapP50Target, Valid: n > 0}}
}

// RollingSteadyLimit bounds the stretch target's cost: the 3 replicas'
// steady-state requests/min after the rollout (issue 12, item 5).
const RollingSteadyLimit = 36

// rollingTargets checks the upgrade handoff against issue 12's stretch
// target for a rolling update: leadership moves once, to a new replica,
// without steady-state requests growing past RollingSteadyLimit at N=3.
// The worst round counts.
func (r *Report) rollingTargets() []Target {
	if r.Handoffs == nil {
		return nil
	}
	up := r.Handoffs.Rolling["leasehold + upgrade handoff"]
	if up == nil {
		return nil
	}
	worst := func(v []int) float64 {
		m := 0
		for _, x := range v {
			m = max(m, x)
		}
		return float64(m)
	}
	return []Target{
		countTarget(fmt.Sprintf("rolling update with the upgrade handoff (stretch): leader changes per rollout of 3 replicas, worst of %d round(s)", up.Rounds),
			1, worst(up.Changes), up.Rounds > 0),
		countTarget("rolling update with the upgrade handoff (stretch): of which to an old replica, worst round",
			0, worst(up.ToOld), up.Rounds > 0),
		countTarget("rolling update with the upgrade handoff (stretch): steady-state requests/min of the 3 new replicas after the rollout",
			RollingSteadyLimit, up.SteadyPerMin, up.SteadyWindow > 0),
	}
}

// terms renders spans relative to from, for the log.
func terms(spans []span, from time.Time) string {
	var parts []string
	for _, s := range spans {
		end := "running"
		if !s.end.IsZero() {
			end = fmtDur(s.end.Sub(from))
		}
		parts = append(parts, fmt.Sprintf("%s [%s, %s]", s.id[strings.LastIndex(s.id, "-")+1:], fmtDur(s.start.Sub(from)), end))
	}
	return strings.Join(parts, ", ")
}
