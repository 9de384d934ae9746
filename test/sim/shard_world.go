package sim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
	"github.com/leasehold/leasehold/shard"
)

// shardGroup is the group every member of a shard world joins.
const shardGroup = "group"

// The kinds of violation only a shard world reports.
const (
	// VShardIdle: a shard without a running work ShardLiveBound after
	// the last disturbance, with no fault active and a member running.
	VShardIdle = "shard-idle"
)

// shardWorld is one simulated shard group: M members of one group on one
// server, each incarnation with its own client and identity, inside a
// synctest bubble, under the plan's operations and faults.
type shardWorld struct {
	p      Plan
	t      Timings
	opts   Options
	res    *Result
	srv    *leaseholdtest.Server
	admin  coordinationv1client.LeaseInterface
	hist   *history
	start  time.Time
	budget int

	mu          sync.Mutex
	slots       []*mslot
	incs        map[string]*minc
	works       []map[*swork]struct{} // per shard
	active      []*activeFault
	queue       actions
	seq         int
	wake        chan struct{}
	lastDisturb time.Time
	// watchCut is when watches were last closed, expired or held: a hand
	// deletion of the assignment waits until they have been healthy for a
	// LeaseDuration.
	watchCut time.Time
	stopNow  bool
	// returnHang, set by tests, delays the report of the next Run's
	// return that long.
	returnHang time.Duration
}

// mslot is one member position; each start makes a new incarnation.
type mslot struct {
	i            int
	name         string
	cur          *minc
	n            int
	pendingStart bool
}

// minc is one incarnation of a member: one process.
type minc struct {
	w      *shardWorld
	s      *mslot
	n      int
	client string // its client's name and its identity
	m      *shard.Member
	cancel context.CancelFunc
	began  time.Time

	// Guarded by w.mu.
	cancelled   bool
	cancelledAt time.Time
	crashed     bool
	dead        atomic.Bool
	killed      chan struct{}
	killOnce    sync.Once
	done        chan struct{}
	returned    bool
	returnedAt  time.Time
	watches     map[*shardWatch]struct{}
	instant     time.Time
	instantN    int
	minute      int64
	minuteN     int
	looped      bool
	overBudget  bool
	reqN        uint64
	runs        uint64 // works started, for their draws
	working     int    // works running
	lastWorkEnd time.Time
}

func (c *minc) kill() { c.killOnce.Do(func() { close(c.killed) }) }

// swork is one call of OnShardStarted.
type swork struct {
	c           *minc
	shard       int
	started     time.Time
	cancelledAt time.Time
	stopDelay   time.Duration
}

func newShardWorld(p Plan, opts Options, res *Result, hist *history) *shardWorld {
	w := &shardWorld{
		p: p, t: p.Timings, opts: opts, res: res,
		srv:  leaseholdtest.NewServer(),
		hist: hist,
		incs: map[string]*minc{},
		wake: make(chan struct{}, 1),
		// Steady state is one renewal per RetryPeriod and a watch; each
		// assignment change costs a few writes per member, whatever K.
		budget: 8*int(time.Minute/p.Timings.RetryPeriod) + 60,
	}
	res.Budget = w.budget
	w.admin = w.srv.Client(adminClient).Leases(namespace)
	for i := range p.Candidates {
		w.slots = append(w.slots, &mslot{i: i, name: slotName(i)})
	}
	for range p.Shards {
		w.works = append(w.works, map[*swork]struct{}{})
	}
	w.srv.AddHook(w.hook)
	return w
}

func (w *shardWorld) since() time.Duration { return time.Since(w.start) }

// skewOf is slot i's clock offset (none in plans from before skew).
func (w *shardWorld) skewOf(i int) time.Duration {
	if i < len(w.p.Skew) {
		return w.p.Skew[i]
	}
	return 0
}

func (w *shardWorld) push(at time.Time, fn func()) {
	w.mu.Lock()
	w.pushLocked(at, fn)
	w.mu.Unlock()
}

func (w *shardWorld) pushLocked(at time.Time, fn func()) {
	w.seq++
	heap.Push(&w.queue, &action{at: at, seq: w.seq, fn: fn})
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *shardWorld) unit(parts ...uint64) float64 {
	x := w.p.Seed
	for _, p := range parts {
		x = mix(x ^ mix(p+0x9e3779b97f4a7c15))
	}
	return float64(x>>11) / (1 << 53)
}

func (w *shardWorld) violateSigLocked(kind, sig, who, msg string) {
	v := Violation{At: w.since(), Kind: kind, Sig: sig, Who: who, Msg: msg}
	w.hist.add(entry{kind: evViolation, who: who, what: kind + ": " + msg})
	if len(w.res.Violations) < maxViolations {
		w.res.Violations = append(w.res.Violations, v)
	}
	if o := w.opts.StopOn; o != "" && (o == "*" || o == kind || o == sig) {
		w.stopNow = true
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *shardWorld) violateLocked(kind, who, msg string) { w.violateSigLocked(kind, kind, who, msg) }

func (w *shardWorld) violate(kind, who, msg string) {
	w.mu.Lock()
	w.violateLocked(kind, who, msg)
	w.mu.Unlock()
}

// disturbLocked notes a disturbance and schedules the liveness check
// ShardLiveBound after it.
func (w *shardWorld) disturbLocked() {
	now := time.Now()
	w.lastDisturb = now
	w.pushLocked(now.Add(w.t.ShardLiveBound()), w.checkLive)
}

func (w *shardWorld) quietLocked() bool {
	return len(w.active) == 0 && time.Since(w.lastDisturb) >= w.t.ShardLiveBound()
}

func (w *shardWorld) aliveLocked() bool {
	for _, s := range w.slots {
		if c := s.cur; c != nil && !c.cancelled && !c.returned {
			return true
		}
	}
	return false
}

// checkLive: ShardLiveBound after the last disturbance, with no fault
// active and a member running, every shard has a work running that was
// not cancelled.
func (w *shardWorld) checkLive() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopNow || !w.quietLocked() || !w.aliveLocked() {
		return
	}
	var idle []string
	for i, ws := range w.works {
		w.res.Checks++
		live := false
		for wk := range ws {
			live = live || wk.cancelledAt.IsZero()
		}
		if !live {
			idle = append(idle, fmt.Sprint(i))
		}
	}
	if len(idle) > 0 {
		w.violateLocked(VShardIdle, "-", fmt.Sprintf("shards [%s] of %d run nowhere %v after the last disturbance (at %s), with no fault active and a member running",
			strings.Join(idle, " "), w.p.Shards, time.Since(w.lastDisturb), fmtDur(w.lastDisturb.Sub(w.start))))
	}
}

// run drives the world as world.run does.
func (w *shardWorld) run() {
	w.start = time.Now()
	w.hist.start = w.start
	w.mu.Lock()
	w.disturbLocked()
	for _, s := range w.slots {
		jitter := time.Duration(w.unit(1, uint64(s.i)) * float64(w.t.RetryPeriod))
		w.pushLocked(w.start.Add(jitter), func() { w.startSlot(s) })
	}
	for _, f := range w.p.Faults {
		w.pushLocked(w.start.Add(f.At), func() { w.op(f) })
	}
	for at := w.t.LeaseDuration; at < w.p.Duration; at += w.t.LeaseDuration {
		w.pushLocked(w.start.Add(at), func() {})
	}
	w.mu.Unlock()
	if w.opts.shardInject != nil {
		w.opts.shardInject(w)
	}
	end := w.start.Add(w.p.Duration)
	for {
		w.opts.progress.Store(int64(w.since()))
		w.mu.Lock()
		if w.stopNow {
			w.mu.Unlock()
			break
		}
		next := end
		if len(w.queue) > 0 && w.queue[0].at.Before(end) {
			next = w.queue[0].at
		}
		if now := time.Now(); !now.Before(next) {
			if next.Equal(end) && (len(w.queue) == 0 || !w.queue[0].at.Before(end)) {
				w.mu.Unlock()
				break
			}
			a := heap.Pop(&w.queue).(*action)
			w.mu.Unlock()
			a.fn()
			continue
		}
		w.mu.Unlock()
		t := time.NewTimer(time.Until(next))
		select {
		case <-t.C:
		case <-w.wake:
		}
		t.Stop()
	}
	w.finish()
}

// finish stops every member gracefully and waits for every Run.
func (w *shardWorld) finish() {
	w.mu.Lock()
	w.stopNow = true
	var running []*minc
	for _, c := range w.incs {
		if !c.returned {
			running = append(running, c)
		}
	}
	// Faults still active (a test's) heal now, so that nothing waits on
	// them.
	for _, a := range w.active {
		close(a.healed)
	}
	w.active = nil
	w.mu.Unlock()
	for _, c := range running {
		w.stop(c, false, "the world ends")
	}
	deadline := time.NewTimer(w.runBound() + w.t.Margin() + time.Second)
	defer deadline.Stop()
	for _, c := range running {
		select {
		case <-c.done:
		case <-deadline.C:
			w.violate(VRunReturn, c.client, "Run has not returned after its ctx was cancelled at the end")
			w.mu.Lock()
			for _, c := range running {
				c.kill()
			}
			w.res.Simulated = w.since()
			w.mu.Unlock()
			return
		}
	}
	w.mu.Lock()
	for _, c := range w.incs {
		w.res.CandidateTime += c.returnedAt.Sub(c.began)
	}
	w.res.Simulated = w.since()
	w.mu.Unlock()
}

// runBound bounds how long Run takes to return after its ctx was
// cancelled and its last work returned: the election's step-down
// (StepDownTimeout, which also covers a leaving member's handover, at
// most RenewDeadline), one request in flight, and the deletion of its
// member Lease.
func (w *shardWorld) runBound() time.Duration {
	return w.t.StepDownTimeout + 2*w.t.RequestTimeout()
}

func (w *shardWorld) startSlot(s *mslot) {
	w.mu.Lock()
	if w.stopNow {
		w.mu.Unlock()
		return
	}
	if prev := s.cur; prev != nil && !prev.returned && !prev.crashed {
		s.pendingStart = true
		w.mu.Unlock()
		return
	}
	s.pendingStart = false
	s.n++
	c := &minc{
		w: w, s: s, n: s.n,
		client:  fmt.Sprintf("%s.%d", s.name, s.n),
		killed:  make(chan struct{}),
		done:    make(chan struct{}),
		watches: map[*shardWatch]struct{}{},
		began:   time.Now(),
	}
	s.cur = c
	w.incs[c.client] = c
	w.disturbLocked()
	w.mu.Unlock()

	m, err := shard.New(shard.Config{
		Namespace: namespace, Group: shardGroup, Identity: c.client,
		Client:        shardClient{c: c, inner: w.srv.Client(c.client)},
		Shards:        w.p.Shards,
		LeaseDuration: w.t.LeaseDuration, RenewDeadline: w.t.RenewDeadline, RetryPeriod: w.t.RetryPeriod,
		ReleaseOnCancel: w.p.ReleaseOnCancel[s.i],
		Clock:           skewedClock{off: w.skewOf(s.i)},
		OnShardStarted:  c.runWork,
	})
	if err != nil {
		panic(fmt.Sprintf("sim: shard.New: %v", err))
	}
	c.m = m
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logr.New(&logSink{h: w.hist, who: c.client})))
	c.cancel = cancel
	w.hist.add(entry{kind: evRun, who: c.client, what: fmt.Sprintf("Run starts (K %d, ReleaseOnCancel %v)", w.p.Shards, w.p.ReleaseOnCancel[s.i])})
	go func() {
		err := m.Run(ctx)
		w.mu.Lock()
		hang := w.returnHang
		w.returnHang = 0
		w.mu.Unlock()
		time.Sleep(hang)
		w.runReturned(c, err)
	}()
}

// stop cancels c's Run; crash kills its process first: its client
// refuses everything and its works die at once.
func (w *shardWorld) stop(c *minc, crash bool, why string) {
	w.mu.Lock()
	if c.cancelled || c.returned {
		w.mu.Unlock()
		return
	}
	c.cancelled, c.cancelledAt = true, time.Now()
	what := "cancelled: " + why
	if crash {
		c.crashed = true
		c.dead.Store(true)
		c.kill()
		for f := range c.watches {
			f.Stop()
		}
		what = "crashed: " + why
	}
	w.hist.add(entry{kind: evRun, who: c.client, what: what})
	w.disturbLocked()
	w.mu.Unlock()
	c.cancel()
}

func (w *shardWorld) runReturned(c *minc, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	c.returned, c.returnedAt = true, now
	close(c.done)
	w.hist.add(entry{kind: evRun, who: c.client, what: "Run returned", err: err})
	w.res.Checks++
	switch {
	case c.crashed:
	case c.cancelled:
		from := c.cancelledAt
		if c.lastWorkEnd.After(from) {
			from = c.lastWorkEnd
		}
		if d := now.Sub(from); d > w.runBound() {
			w.violateLocked(VRunReturn, c.client, fmt.Sprintf("Run returned %v after its ctx was cancelled and its last work returned (bound %v)", d, w.runBound()))
		}
	case err == nil:
		w.violateLocked(VRunEnded, c.client, "Run returned nil although its ctx was not cancelled")
	case errors.Is(err, leasehold.ErrIdentityConflict), errors.Is(err, shard.ErrShardCountMismatch),
		errors.Is(err, shard.ErrBadAssignment), errors.Is(err, shard.ErrNoCompareAndSwap):
		w.violateLocked(VRunEnded, c.client, fmt.Sprintf("Run returned %v: every incarnation has an identity of its own, one K and a compare-and-swap server", err))
	}
	if c.working > 0 && !c.crashed {
		w.violateLocked(VRunReturn, c.client, fmt.Sprintf("Run returned while %d of its works still run", c.working))
	}
	c.kill()
	s := c.s
	switch {
	case s.cur == c && s.pendingStart:
		w.pushLocked(now, func() { w.startSlot(s) })
	case s.cur == c && !c.cancelled && !w.stopNow:
		// Returned on its own (a refusal for good): the kubelet restarts
		// the container.
		w.pushLocked(now.Add(w.p.RestartAfter), func() { w.startSlot(s) })
	}
	w.disturbLocked()
}

// runWork is OnShardStarted: it checks that nobody else runs the shard,
// waits for its ctx, then takes its stop delay (or hangs until a
// hang-work fault heals) before returning. A crash kills it at once.
func (c *minc) runWork(ctx context.Context, i int) {
	w := c.w
	wk := w.workStarted(c, i)
	if wk == nil {
		return
	}
	select {
	case <-ctx.Done():
	case <-c.killed:
		w.workEnded(wk, "work killed with its process")
		return
	}
	w.mu.Lock()
	wk.cancelledAt = time.Now()
	var hang chan struct{}
	for _, a := range w.active {
		if a.f.Kind == KindHangWork && (a.f.Target < 0 || a.f.Target == c.s.i) {
			hang = a.healed
		}
	}
	how := fmt.Sprintf("returns in %v", wk.stopDelay)
	if hang != nil {
		how = "ignores it until the hang-work fault heals"
	}
	w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("work of shard %d cancelled; %s", i, how)})
	w.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-c.killed:
		}
	}
	if wk.stopDelay > 0 {
		t := time.NewTimer(wk.stopDelay)
		select {
		case <-t.C:
		case <-c.killed:
		}
		t.Stop()
	}
	w.workEnded(wk, "work returned")
}

func (w *shardWorld) workStarted(c *minc, i int) *swork {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if c.crashed || c.returned || i < 0 || i >= len(w.works) {
		w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("OnShardStarted(%d) in a dead process: no work", i)})
		return nil
	}
	c.runs++
	wk := &swork{c: c, shard: i, started: now}
	if u := w.unit(2, uint64(c.s.i), uint64(c.n), c.runs); u >= 0.3 {
		wk.stopDelay = time.Duration((u - 0.3) / 0.7 * float64(w.t.Margin()/2)).Truncate(time.Millisecond)
	}
	for other := range w.works[i] {
		w.res.Checks++
		if other.c.crashed {
			// Its process died: the work died with it (its goroutine
			// may not have noticed yet at this instant).
			w.res.ExcusedCrashed++
			continue
		}
		if !other.cancelledAt.IsZero() && now.Sub(other.cancelledAt) > w.t.Margin() {
			w.res.ExcusedOverdue++
			w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("starts shard %d while %s's work, cancelled %v ago (more than the safety margin %v), still runs: allowed",
				i, other.c.client, now.Sub(other.cancelledAt), w.t.Margin())})
			continue
		}
		state := "not cancelled"
		if !other.cancelledAt.IsZero() {
			state = fmt.Sprintf("cancelled %v ago", now.Sub(other.cancelledAt))
		}
		text, sig := w.hist.recent(c.client, 3)
		w.violateSigLocked(VOverlap, VOverlap+"["+sig+"]", c.client, fmt.Sprintf("%s started shard %d while the work of %s (since %s, %s) still runs; %s's last requests: %s",
			c.client, i, other.c.client, fmtDur(other.started.Sub(w.start)), state, c.client, text))
	}
	w.res.Checks++
	w.works[i][wk] = struct{}{}
	c.working++
	w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("WORK STARTS (shard %d)", i)})
	return wk
}

func (w *shardWorld) workEnded(wk *swork, how string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.works[wk.shard], wk)
	wk.c.working--
	wk.c.lastWorkEnd = time.Now()
	w.hist.add(entry{kind: evWork, who: wk.c.client, what: fmt.Sprintf("WORK ENDS (shard %d): %s", wk.shard, how)})
}

// watchesHealthyLocked reports whether every member's watch is healthy:
// no fault that touches requests or watches active, none closed, held
// or healed for a LeaseDuration, and every running member's group watch
// open.
func (w *shardWorld) watchesHealthyLocked() bool {
	for _, a := range w.active {
		if a.f.Kind != KindHangWork {
			return false
		}
	}
	if !w.watchCut.IsZero() && time.Since(w.watchCut) < w.t.LeaseDuration {
		return false
	}
	// Every member running has its group watch open.
	for _, s := range w.slots {
		c := s.cur
		if c == nil || c.cancelled || c.returned {
			continue
		}
		open := false
		for f := range c.watches {
			open = open || f.group
		}
		if !open {
			return false
		}
	}
	return true
}

// op runs one entry of the plan.
func (w *shardWorld) op(f Fault) {
	w.mu.Lock()
	if w.stopNow {
		w.mu.Unlock()
		return
	}
	if f.Kind == KindDeleteAssignment && !w.watchesHealthyLocked() {
		w.hist.add(entry{kind: evOp, who: "sim", what: f.String() + ": skipped, some member's watch is not healthy (shard/doc.go)"})
		w.mu.Unlock()
		return
	}
	w.res.FaultsRun[f.Kind]++
	w.hist.add(entry{kind: evOp, who: "sim", what: f.String()})
	w.disturbLocked()
	var target *minc
	if f.Target >= 0 {
		if c := w.slots[f.Target].cur; c != nil && !c.cancelled && !c.returned {
			target = c
		}
	}
	switch f.Kind {
	case KindCancel, KindCrash:
		w.mu.Unlock()
		if target == nil {
			w.hist.add(entry{kind: evOp, who: "sim", what: "  (no such member running)"})
			return
		}
		w.stop(target, f.Kind == KindCrash, string(f.Kind))
		s := target.s
		w.push(time.Now().Add(f.Dur), func() { w.startSlot(s) })
		return
	case KindRefuse, KindLatency, KindStall, KindHangWork, KindWatchLag, KindLoseAnswer:
		w.addFaultLocked(f)
	case KindWatchOutage, KindPartition, KindWatchDrop:
		w.addFaultLocked(f)
		w.watchCut = time.Now()
		if f.Kind != KindPartition {
			w.closeWatchesLocked(f.Target)
		}
	case KindCloseWatches, KindExpireWatches, KindCompact:
		w.watchCut = time.Now()
	}
	w.mu.Unlock()
	ctx := context.Background()
	switch f.Kind {
	case KindDeleteAssignment:
		err := w.admin.Delete(ctx, shardGroup, metav1.DeleteOptions{})
		w.hist.add(entry{kind: evRequest, who: "sim", what: "delete " + shardGroup, err: err})
	case KindDeleteMember:
		if target == nil {
			w.hist.add(entry{kind: evOp, who: "sim", what: "  (no such member running)"})
			return
		}
		name := shard.MemberLeaseName(shardGroup, target.client)
		err := w.admin.Delete(ctx, name, metav1.DeleteOptions{})
		w.hist.add(entry{kind: evRequest, who: "sim", what: "delete " + name, err: err})
	case KindCloseWatches:
		w.srv.CloseWatches()
	case KindExpireWatches:
		w.srv.ExpireWatches()
	case KindCompact:
		w.srv.Compact()
	}
}

func (w *shardWorld) addFaultLocked(f Fault) {
	a := &activeFault{f: f, healed: make(chan struct{})}
	w.active = append(w.active, a)
	w.pushLocked(time.Now().Add(f.Dur), func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !slices.Contains(w.active, a) {
			return // healed by finish
		}
		w.active = slices.DeleteFunc(w.active, func(x *activeFault) bool { return x == a })
		close(a.healed)
		w.hist.add(entry{kind: evOp, who: "sim", what: "healed: " + f.String()})
		if f.Kind != KindHangWork {
			// Watches may have broken meanwhile, and reopen from now.
			w.watchCut = time.Now()
		}
		if f.Kind == KindPartition {
			w.closeWatchesLocked(f.Target)
		}
		w.disturbLocked()
	})
}

func (w *shardWorld) closeWatchesLocked(target int) {
	for _, c := range w.incs {
		if target < 0 || c.s.i == target {
			for f := range c.watches {
				f.Stop()
			}
		}
	}
}

// hook runs before every request the server serves: it counts each
// incarnation's requests and applies the active faults, as world.hook.
func (w *shardWorld) hook(ctx context.Context, req leaseholdtest.Request) error {
	if req.Client == adminClient {
		return nil
	}
	now := time.Now()
	verb := verbOf(req.Verb)
	if req.Verb == "list" {
		verb = VerbGet // a refusal of reads refuses lists too
	}
	w.mu.Lock()
	c := w.incs[req.Client]
	w.res.Requests++
	w.res.Checks += 2
	if now.Equal(c.instant) {
		c.instantN++
	} else {
		c.instant, c.instantN = now, 1
	}
	if c.instantN > instantLimit && !c.looped {
		c.looped = true
		text, sig := w.hist.recent(c.client, 6)
		parts := strings.Fields(sig)
		slices.Sort(parts)
		sig = strings.Join(slices.Compact(parts), " ")
		w.violateSigLocked(VRequestLoop, VRequestLoop+"["+sig+"]", c.client, fmt.Sprintf("%d requests at one virtual instant; the last ones: %s", c.instantN, text))
	}
	if m := int64(now.Sub(w.start) / time.Minute); m != c.minute {
		c.minute, c.minuteN = m, 0
	}
	if !c.crashed {
		c.minuteN++
		if !c.looped && c.minuteN > w.res.BusiestMinute {
			w.res.BusiestMinute = c.minuteN
		}
		if c.minuteN > w.budget && !c.overBudget {
			c.overBudget = true
			w.violateLocked(VRequestBudget, c.client, fmt.Sprintf("more than %d requests in virtual minute %d", w.budget, c.minute))
		}
	}
	throttle := c.looped
	c.reqN++
	u1 := w.unit(3, uint64(c.s.i), uint64(c.n), c.reqN)
	u2 := w.unit(4, uint64(c.s.i), uint64(c.n), c.reqN)
	var lat time.Duration
	var waits []chan struct{}
	var refuse error
	for _, a := range w.active {
		f := a.f
		if f.Target >= 0 && f.Target != c.s.i {
			continue
		}
		switch f.Kind {
		case KindLatency:
			lat = max(lat, time.Duration(u1*float64(f.Max)))
		case KindStall:
			waits = append(waits, a.healed)
		case KindPartition:
			if f.Prob < 0.5 {
				refuse = errConnRefused
			} else {
				waits = append(waits, a.healed)
			}
		case KindRefuse:
			if f.Verbs&verb != 0 && u2 < f.Prob && refuse == nil {
				refuse = statusError(f.Code, req)
			}
		case KindWatchOutage:
			if verb == VerbWatch && refuse == nil {
				refuse = apierrors.NewInternalError(fmt.Errorf("watch unavailable"))
			}
		}
	}
	w.mu.Unlock()
	if throttle {
		lat += loopThrottle
	}
	if lat > 0 {
		t := time.NewTimer(lat)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return refuse
}

// activeLocked returns the first active fault of kind k that applies to
// slot i, or nil.
func (w *shardWorld) activeLocked(k Kind, i int) *activeFault {
	for _, a := range w.active {
		if a.f.Kind == k && (a.f.Target < 0 || a.f.Target == i) {
			return a
		}
	}
	return nil
}

// answerLost reports whether the answer to c's write just served is lost.
func (w *shardWorld) answerLost(c *minc) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.activeLocked(KindLoseAnswer, c.s.i); a != nil {
		return w.unit(5, uint64(c.s.i), uint64(c.n), c.reqN) < a.f.Prob
	}
	return false
}

// loseAnswer, under a lose-answer fault, loses the answer to a write that
// landed: the client waits for its timeout.
func (l *shardLeases) loseAnswer(ctx context.Context, got *coordinationv1.Lease, err error) (*coordinationv1.Lease, error) {
	if err != nil || !l.c.w.answerLost(l.c) {
		return got, err
	}
	l.c.w.hist.add(entry{kind: evRequest, who: l.c.client, what: "  (answer lost: the client waits for its timeout)"})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.c.killed:
		return nil, errConnRefused
	}
}

func (w *shardWorld) record(who, what string, got *coordinationv1.Lease, err error) {
	e := entry{kind: evRequest, who: who, what: what, err: err}
	if got != nil {
		e.holder, e.rv = holderOf(got), got.ResourceVersion
		if st, err := shard.ReadStatus(got); err == nil {
			e.what += " " + assignmentSummary(st)
		}
	}
	w.hist.add(e)
}

// assignmentSummary renders an assignment for the history: per member,
// the shards it owns and those targeted at it, and the pending moves.
func assignmentSummary(st shard.Status) string {
	var b strings.Builder
	b.WriteString("[")
	for i, m := range st.Members {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s owns %v targets %v", m.Identity, m.Owned, m.Targeted)
		if m.Leaving {
			b.WriteString(" leaving")
		}
	}
	b.WriteString("]")
	return b.String()
}

// shardClient is a member incarnation's client: a dead process's
// requests fail, requests are logged, watches can be held and cut.
type shardClient struct {
	c     *minc
	inner *leaseholdtest.Client
}

func (s shardClient) Leases(ns string) coordinationv1client.LeaseInterface {
	return &shardLeases{LeaseInterface: s.inner.Leases(ns), c: s.c}
}

type shardLeases struct {
	coordinationv1client.LeaseInterface
	c *minc
}

func (l *shardLeases) Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error) {
	if l.c.dead.Load() {
		l.c.w.record(l.c.client, "get "+name, nil, errConnRefused)
		return nil, errConnRefused
	}
	got, err := l.LeaseInterface.Get(ctx, name, opts)
	l.c.w.record(l.c.client, "get "+name, got, err)
	return got, err
}

func (l *shardLeases) List(ctx context.Context, opts metav1.ListOptions) (*coordinationv1.LeaseList, error) {
	if l.c.dead.Load() {
		l.c.w.record(l.c.client, "list", nil, errConnRefused)
		return nil, errConnRefused
	}
	got, err := l.LeaseInterface.List(ctx, opts)
	l.c.w.record(l.c.client, "list", nil, err)
	return got, err
}

func (l *shardLeases) Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error) {
	what := "create " + lease.Name + " holder=" + quote(holderOf(lease))
	if l.c.dead.Load() {
		l.c.w.record(l.c.client, what, nil, errConnRefused)
		return nil, errConnRefused
	}
	got, err := l.LeaseInterface.Create(ctx, lease, opts)
	l.c.w.record(l.c.client, what, got, err)
	return l.loseAnswer(ctx, got, err)
}

func (l *shardLeases) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	what := "update " + lease.Name + " holder=" + quote(holderOf(lease)) + " from rv=" + lease.ResourceVersion
	if l.c.dead.Load() {
		l.c.w.record(l.c.client, what, nil, errConnRefused)
		return nil, errConnRefused
	}
	got, err := l.LeaseInterface.Update(ctx, lease, opts)
	l.c.w.record(l.c.client, what, got, err)
	return l.loseAnswer(ctx, got, err)
}

func (l *shardLeases) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	if l.c.dead.Load() {
		l.c.w.record(l.c.client, "delete "+name, nil, errConnRefused)
		return errConnRefused
	}
	err := l.LeaseInterface.Delete(ctx, name, opts)
	l.c.w.record(l.c.client, "delete "+name, nil, err)
	return err
}

func (l *shardLeases) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	c, w := l.c, l.c.w
	what := "watch " + opts.LabelSelector + opts.FieldSelector + " from rv=" + opts.ResourceVersion
	if c.dead.Load() {
		w.record(c.client, what, nil, errConnRefused)
		return nil, errConnRefused
	}
	inner, err := l.LeaseInterface.Watch(ctx, opts)
	w.record(c.client, what, nil, err)
	if err != nil {
		return nil, err
	}
	f := &shardWatch{c: c, inner: inner, out: make(chan watch.Event), stop: make(chan struct{}), group: opts.LabelSelector != ""}
	w.mu.Lock()
	if c.dead.Load() {
		w.mu.Unlock()
		inner.Stop()
		return nil, errConnRefused
	}
	c.watches[f] = struct{}{}
	if w.activeLocked(KindWatchDrop, c.s.i) != nil {
		f.Stop() // accepted, and ended at once
	}
	w.mu.Unlock()
	go f.run()
	return f, nil
}

// shardWatch forwards a watch's events, never under a partition (it
// closes when the partition heals), and closes when the world cuts it.
type shardWatch struct {
	c     *minc
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
	// group: the group's watch (by label), not an elector's of its own
	// Lease.
	group bool
}

func (f *shardWatch) ResultChan() <-chan watch.Event { return f.out }

func (f *shardWatch) Stop() { f.once.Do(func() { close(f.stop) }) }

func (f *shardWatch) run() {
	w := f.c.w
	defer func() {
		f.inner.Stop()
		w.mu.Lock()
		delete(f.c.watches, f)
		w.mu.Unlock()
		close(f.out)
	}()
	for {
		var ev watch.Event
		var open bool
		select {
		case <-f.stop:
			return
		case ev, open = <-f.inner.ResultChan():
			if !open {
				return
			}
		}
		w.mu.Lock()
		lag, hold := watchFaultsOf(w.active, f.c.s.i)
		w.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-f.stop:
			}
			return
		}
		if lag > 0 {
			t := time.NewTimer(lag)
			select {
			case <-t.C:
			case <-f.stop:
				t.Stop()
				return
			}
		}
		select {
		case f.out <- ev:
		case <-f.stop:
			return // cut: the member never saw it
		}
		holder, rv, name := "", "", ""
		if l, ok := ev.Object.(*coordinationv1.Lease); ok {
			holder, rv, name = holderOf(l), l.ResourceVersion, l.Name
		}
		w.hist.add(entry{kind: evWatch, who: f.c.client, what: string(ev.Type) + " " + name, holder: holder, rv: rv})
	}
}
