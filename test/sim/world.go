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
	"k8s.io/apimachinery/pkg/types"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

const (
	namespace   = "sim"
	leaseName   = "lease"
	adminClient = "admin"
	intruder    = "intruder"

	// instantLimit is how many requests one incarnation may send at one
	// virtual instant: beyond it, it loops without letting time pass.
	instantLimit = 64
	// loopThrottle is the virtual delay added to every request of an
	// incarnation caught looping, so that the world still moves on.
	loopThrottle = 10 * time.Millisecond
	// maxViolations bounds the violations recorded in one world.
	maxViolations = 20
)

// Violation is one failed invariant check.
type Violation struct {
	At   time.Duration // virtual, since the world started
	Kind string
	// Sig tells failures of one kind apart: for a request loop and an
	// overlap, the verbs and answers of the incarnation's last requests.
	Sig string
	Who string
	Msg string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s %s: %s", fmtDur(v.At), v.Kind, v.Who, v.Msg)
}

// The kinds of violation.
const (
	VOverlap       = "overlap"        // two works at once
	VNoLeader      = "no-leader"      // nobody working LeaderBound after the last disturbance
	VRequestLoop   = "request-loop"   // requests without virtual time passing
	VRequestBudget = "request-budget" // too many requests in a virtual minute
	VReleaseRetry  = "release-retry"  // a release refused for good was sent again
	VYield         = "yield"          // a Yield not answered in time
	VHandoff       = "handoff"        // a Yield's named successor did not take over
	VRunReturn     = "run-return"     // Run did not return in time after cancel
	VRunEnded      = "run-ended"      // Run returned although nothing asked it to
	VDeadline      = "deadline"       // a work outlived its last renewal's send + RenewDeadline
	VCallback      = "callback"       // the callback contract broken
	VCheck         = "check"          // Check passed while a work outlived its term
	VRelease       = "release"        // a release sent after OnStoppedLeading, or again after a 409 without a read
	VLateRenewal   = "late-renewal"   // a renewal sent past its renew deadline, its work not cancelled, landed
	VCheckStalled  = "check-stalled"  // Check wrong about a leader resumed from a pause: renewals stalled, or not
	VLeak          = "leaked-goroutines"
	VStuck         = "no-virtual-progress"
)

// world is one simulated election: the server, the candidates, the plan's
// operations, and the checks. Everything runs inside one synctest bubble.
type world struct {
	p     Plan
	t     Timings
	opts  Options
	res   *Result
	srv   *leaseholdtest.Server
	admin coordinationv1client.LeaseInterface
	hist  *history
	start time.Time
	// budget is the most requests an incarnation may send in a virtual
	// minute.
	budget int

	mu          sync.Mutex
	slots       []*slot
	incs        map[string]*inc // by client name
	works       map[*work]struct{}
	active      []*activeFault // in order of start
	triggers    []func()
	queue       actions
	seq         int
	wake        chan struct{}
	lastDisturb time.Time
	lastHolder  string
	stopNow     bool
	yields      sync.WaitGroup
	// stoppedHang, set by tests, makes the next OnStoppedLeading call
	// block that long.
	stoppedHang time.Duration
	// cands and ctrl are the LeaseCandidate API and the election
	// controller of a coordinated world (coordinated_world.go).
	cands *candStore
	ctrl  *controller
	// ctrlNamed is, per identity, when the controller last wrote the
	// Lease naming it holder (an assignment, or a preferredHolder
	// update of one).
	ctrlNamed map[string]time.Time
}

// slot is one candidate position; each start makes a new incarnation.
type slot struct {
	i    int
	name string
	cur  *inc // the incarnation running, nil while down
	n    int  // incarnations so far
	// pendingStart is set while a start waits for the previous
	// incarnation's Run to return.
	pendingStart bool
}

// inc is one incarnation of a candidate: one process.
type inc struct {
	w      *world
	s      *slot
	n      int
	id     string // its identity in the Lease
	client string // its client's name on the server, unique
	e      *leasehold.Elector
	cancel context.CancelFunc
	began  time.Time
	// clk is its process's clock, which a pause stops (pause.go).
	clk *procClock

	// pauses are its process's pauses, the last one lasting if its to
	// is zero. Guarded by w.mu.
	pauses []pauseSpan

	// Guarded by w.mu.
	cancelled   bool
	cancelledAt time.Time
	crashed     bool
	dead        atomic.Bool   // its client refuses everything
	killed      chan struct{} // closed when the process exits: its work dies
	killOnce    sync.Once
	done        chan struct{} // closed when Run returned
	returned    bool
	returnedAt  time.Time
	// newLeaderCalls counts OnNewLeader calls in progress.
	newLeaderCalls atomic.Int32
	// lastWinSent is the send time of the last write naming this
	// incarnation holder whose success it was told of: its term's
	// deadline runs RenewDeadline from there (VDeadline).
	lastWinSent time.Time
	watches     map[*fwdWatch]struct{}
	instant     time.Time
	instantN    int
	minute      int64
	minuteN     int
	looped      bool
	overBudget  bool
	refusedRel  int // status of the last write if it was a release refused for good
	// conflictRel is the resourceVersion a release was sent from and
	// answered 409, until the next read: the Lease changed since, and
	// the same release cannot succeed.
	conflictRel string
	// stoppedLast is set by OnStoppedLeading and cleared by the next
	// winning write: no release may be sent meanwhile, as the Lease is
	// released before OnStoppedLeading is called.
	stoppedLast bool
	reqN        uint64
	terms       int
	stops       int
	work        *work
	// seen is set once the incarnation learned that the Lease exists: a
	// GET or watch event showed it, or a write found it there. blindWin
	// is set when its last winning write was sent before that: it never
	// saw the Lease it created.
	seen     bool
	blindWin bool
	// uids are the Lease objects (by UID) this incarnation has seen, with
	// when it first saw each: a Lease deleted by hand before a candidate
	// saw it cannot be known to it (see workStarted).
	uids map[types.UID]time.Time
}

// saw records, under w.mu, that c saw lease.
func (c *inc) saw(lease *coordinationv1.Lease) {
	if lease == nil {
		return
	}
	c.seen = true
	if c.uids == nil {
		c.uids = map[types.UID]time.Time{}
	}
	if _, ok := c.uids[lease.UID]; !ok {
		c.uids[lease.UID] = time.Now()
	}
}

// sawBefore reports whether c saw the Lease object uid before now. A
// sighting at the very instant c's work starts does not count: the watch
// event and the winning write's answer arrived together, and which one
// the elector took first is the order of two goroutines, not knowledge.
func (c *inc) sawBefore(uid types.UID, now time.Time) bool {
	at, ok := c.uids[uid]
	return ok && at.Before(now)
}

// work is one call of OnStartedLeading.
type work struct {
	c       *inc
	term    int
	started time.Time
	// uid is the Lease object the work's term was won on.
	uid         types.UID
	cancelledAt time.Time
	stopDelay   time.Duration
	hang        time.Duration
	ended       bool
	// mayStepDown is set once something may have asked the term to step
	// down (a Yield, a preferred-holder annotation); a term lost without
	// one calls OnStoppedLeading within the safety margin of the work's
	// cancellation.
	mayStepDown bool
}

type activeFault struct {
	idx    int
	f      Fault
	healed chan struct{}
}

type action struct {
	at  time.Time
	seq int
	fn  func()
}

type actions []*action

func (a actions) Len() int { return len(a) }
func (a actions) Less(i, j int) bool {
	if !a[i].at.Equal(a[j].at) {
		return a[i].at.Before(a[j].at)
	}
	return a[i].seq < a[j].seq
}
func (a actions) Swap(i, j int) { a[i], a[j] = a[j], a[i] }
func (a *actions) Push(x any)   { *a = append(*a, x.(*action)) }
func (a *actions) Pop() any {
	old := *a
	x := old[len(old)-1]
	*a = old[:len(old)-1]
	return x
}

func newWorld(p Plan, opts Options, res *Result, hist *history) *world {
	w := &world{
		p: p, t: p.Timings, opts: opts, res: res,
		srv:    leaseholdtest.NewServer(),
		hist:   hist,
		incs:   map[string]*inc{},
		works:  map[*work]struct{}{},
		wake:   make(chan struct{}, 1),
		budget: 8*int(time.Minute/p.Timings.RetryPeriod) + 60,
	}
	res.Budget = w.budget
	if p.Coordinated {
		w.cands = newCandStore()
	}
	w.admin = w.srv.Client(adminClient).Leases(namespace)
	for i := range p.Candidates {
		w.slots = append(w.slots, &slot{i: i, name: slotName(i)})
	}
	w.srv.AddHook(w.hook)
	return w
}

// push schedules fn on the driver at at. Safe from any goroutine.
func (w *world) push(at time.Time, fn func()) {
	w.mu.Lock()
	w.pushLocked(at, fn)
	w.mu.Unlock()
}

func (w *world) pushLocked(at time.Time, fn func()) {
	w.seq++
	heap.Push(&w.queue, &action{at: at, seq: w.seq, fn: fn})
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *world) since() time.Duration { return time.Since(w.start) }

// violateLocked records a violation. w.mu must be held.
func (w *world) violateLocked(kind, who, msg string) {
	w.violateSigLocked(kind, kind, who, msg)
}

func (w *world) violateSigLocked(kind, sig, who, msg string) {
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

func (w *world) violate(kind, who, msg string) {
	w.mu.Lock()
	w.violateLocked(kind, who, msg)
	w.mu.Unlock()
}

func (w *world) check() {
	w.mu.Lock()
	w.res.Checks++
	w.mu.Unlock()
}

// disturbLocked notes a disturbance (an operation, a fault starting or
// healing, a candidate starting or stopping) and schedules the leader
// check LeaderBound after it.
func (w *world) disturbLocked() {
	now := time.Now()
	w.lastDisturb = now
	w.pushLocked(now.Add(w.p.leaderBound()), w.checkLeader)
}

// quietLocked reports whether the world has been undisturbed for
// LeaderBound, with no fault active.
func (w *world) quietLocked() bool {
	return len(w.active) == 0 && time.Since(w.lastDisturb) >= w.p.leaderBound()
}

// aliveLocked reports whether some candidate runs that could lead.
func (w *world) aliveLocked() bool {
	for _, s := range w.slots {
		if c := s.cur; c != nil && !c.cancelled && !c.returned {
			return true
		}
	}
	return false
}

// checkLeader: LeaderBound after the last disturbance, with no fault
// active and a candidate running, somebody works.
func (w *world) checkLeader() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.quietLocked() || !w.aliveLocked() {
		return
	}
	w.res.Checks++
	if len(w.works) == 0 {
		w.violateLocked(VNoLeader, "-", fmt.Sprintf("nobody works %v after the last disturbance (at %s), with no fault active and a candidate running",
			time.Since(w.lastDisturb), fmtDur(w.lastDisturb.Sub(w.start))))
	}
}

// run drives the world: it starts the candidates, runs the plan, stops
// everything at the end, and waits for every goroutine it started.
func (w *world) run() {
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
	// The driver wakes at least every LeaseDuration, so the watchdog
	// sees virtual time pass.
	for at := w.t.LeaseDuration; at < w.p.Duration; at += w.t.LeaseDuration {
		w.pushLocked(w.start.Add(at), func() {})
	}
	w.mu.Unlock()
	if w.p.Coordinated {
		w.startController()
	}
	if w.opts.inject != nil {
		w.opts.inject(w)
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

// finish stops every candidate gracefully, checks that every Run returns
// within RunBound, and waits for Yield calls to be answered.
func (w *world) finish() {
	defer w.stopController()
	w.mu.Lock()
	w.stopNow = true
	var running []*inc
	for _, c := range w.incs {
		if w.endPauseLocked(c) {
			// A world cut short (a shrunk replay) may end mid-pause.
			c.clk.release()
		}
		if !c.returned {
			running = append(running, c)
		}
	}
	w.mu.Unlock()
	for _, c := range running {
		w.stop(c, false, "the world ends")
	}
	deadline := time.NewTimer(w.runBound() + time.Second)
	defer deadline.Stop()
	for _, c := range running {
		select {
		case <-c.done:
		case <-deadline.C:
			w.violate(VRunReturn, c.client, fmt.Sprintf("Run has not returned %v after its ctx was cancelled at the end", w.runBound()+time.Second))
			w.mu.Lock()
			for _, c := range running {
				c.kill()
			}
			w.res.Simulated = w.since()
			w.mu.Unlock()
			return // the leftover goroutines are reported by synctest
		}
	}
	yieldsDone := make(chan struct{})
	go func() { w.yields.Wait(); close(yieldsDone) }()
	select {
	case <-yieldsDone:
	case <-deadline.C:
		w.violate(VYield, "-", "a Yield was still unanswered after every Run returned")
	}
	w.mu.Lock()
	for _, c := range w.incs {
		w.res.CandidateTime += c.returnedAt.Sub(c.began)
	}
	w.res.Simulated = w.since()
	w.mu.Unlock()
}

// startSlot starts a new incarnation in s, once the previous one's Run
// has returned.
func (w *world) startSlot(s *slot) {
	w.mu.Lock()
	if w.stopNow {
		w.mu.Unlock()
		return
	}
	if prev := s.cur; prev != nil && !prev.returned && !prev.crashed {
		s.pendingStart = true // runReturned starts it
		w.mu.Unlock()
		return
	}
	s.pendingStart = false
	s.n++
	c := &inc{
		w: w, s: s, n: s.n,
		client:  fmt.Sprintf("%s.%d", s.name, s.n),
		killed:  make(chan struct{}),
		done:    make(chan struct{}),
		watches: map[*fwdWatch]struct{}{},
		began:   time.Now(),
		// Its machine booted an hour before the world started.
		clk: newProcClock(w.skew(s.i), w.start.Add(-time.Hour)),
	}
	c.id = c.client
	if w.p.SameIdentity {
		c.id = s.name
	}
	s.cur = c
	w.incs[c.client] = c
	w.disturbLocked()
	w.mu.Unlock()

	cfg := leasehold.Config{
		Lock: &leasehold.LeaseLock{Namespace: namespace, Name: leaseName, Identity: c.id,
			Client: simClient{c: c, inner: w.srv.Client(c.client)}},
		LeaseDuration:   w.t.LeaseDuration,
		RenewDeadline:   w.t.RenewDeadline,
		RetryPeriod:     w.t.RetryPeriod,
		StepDownTimeout: w.t.StepDownTimeout,
		Clock:           c.clk,
		ReleaseOnCancel: w.p.ReleaseOnCancel[s.i],
		Rejoin:          w.p.Rejoin[s.i],
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: c.runWork,
			OnStoppedLeading: c.stopped,
			OnNewLeader:      c.newLeader,
		},
	}
	var e *leasehold.Elector
	var err error
	if w.p.Coordinated {
		e, err = leasehold.NewCoordinated(cfg, w.candidateConfig(c))
	} else {
		e, err = leasehold.New(cfg)
	}
	if err != nil {
		panic(fmt.Sprintf("sim: leasehold.New: %v", err))
	}
	c.e = e
	log := logr.New(&logSink{h: w.hist, who: c.client})
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), log))
	c.cancel = cancel
	w.hist.add(entry{kind: evRun, who: c.client, what: fmt.Sprintf("Run starts (identity %q, Rejoin %v, ReleaseOnCancel %v)", c.id, w.p.Rejoin[s.i], w.p.ReleaseOnCancel[s.i])})
	go func() {
		err := e.Run(ctx)
		w.runReturned(c, err)
	}()
}

// skew is slot i's clock offset (none in plans from before skew).
func (w *world) skew(i int) time.Duration {
	if i < len(w.p.Skew) {
		return w.p.Skew[i]
	}
	return 0
}

// skewedClock is the real (in the bubble, virtual) clock set off by off:
// its readings are skewed, its durations and timers are not.
type skewedClock struct {
	clock.RealClock
	off time.Duration
}

func (c skewedClock) Now() time.Time                  { return time.Now().Add(c.off) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// stop cancels c's Run; crash also kills its process first: the client
// refuses everything and the work dies at once, so nothing is released.
func (w *world) stop(c *inc, crash bool, why string) {
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
		if w.endPauseLocked(c) {
			// A paused process is killed all the same; what is left of
			// it (Run, on a dead client) goes on to return.
			what += " (while paused)"
			c.clk.release()
		}
	}
	w.hist.add(entry{kind: evRun, who: c.client, what: what})
	w.disturbLocked()
	w.afterRunTimeLocked(c, time.Now(), w.runBound(), func() {
		w.res.Checks++
		if !c.returned {
			w.violateLocked(VRunReturn, c.client, fmt.Sprintf("Run has not returned %v after its ctx was cancelled (not counting its pauses)", w.runBound()))
		}
	})
	w.mu.Unlock()
	c.cancel()
}

// afterRunTimeLocked runs check (with w.mu held) bound after from, counted
// in the time c's process ran: its pauses meanwhile put the check off.
// w.mu is held.
func (w *world) afterRunTimeLocked(c *inc, from time.Time, bound time.Duration, check func()) {
	var at func()
	at = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if due := from.Add(bound + c.pausedWithinLocked(from, time.Now())); time.Now().Before(due) {
			w.pushLocked(due, at)
			return
		}
		check()
	}
	w.pushLocked(from.Add(bound), at)
}

// kill ends the process's work at once. w.mu must be held.
func (c *inc) kill() {
	c.killOnce.Do(func() { close(c.killed) })
}

func (w *world) runReturned(c *inc, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	c.returned, c.returnedAt = true, now
	close(c.done)
	w.hist.add(entry{kind: evRun, who: c.client, what: "Run returned", err: err})
	w.res.Checks++
	if c.cancelled {
		if d := now.Sub(c.cancelledAt) - c.pausedWithinLocked(c.cancelledAt, now); d > w.runBound() {
			w.violateLocked(VRunReturn, c.client, fmt.Sprintf("Run returned %v after its ctx was cancelled, not counting its pauses (bound %v)", d, w.runBound()))
		}
	} else if !c.crashed {
		// Run returns nil only when its ctx is cancelled, and with Rejoin
		// only for a step-down timeout or an identity conflict: a yield
		// or a lost term keeps the process campaigning.
		switch {
		case err == nil:
			w.violateLocked(VRunEnded, c.client, "Run returned nil although its ctx was not cancelled")
		case errors.Is(err, leasehold.ErrIdentityConflict) && !w.p.SameIdentity && w.assignedConflictLocked(c):
			// An open finding of coordinated election, counted apart
			// (coordinated_world.go).
		case errors.Is(err, leasehold.ErrIdentityConflict) && !w.p.SameIdentity:
			w.violateLocked(VRunEnded, c.client, fmt.Sprintf("Run returned %v although every incarnation has an identity of its own", err))
		case strings.Contains(err.Error(), "leasehold: yielded"):
			w.violateLocked(VRunEnded, c.client, fmt.Sprintf("a yield ended Run (%v): a yield moves leadership, not the process", err))
		case w.p.Rejoin[c.s.i] && !errors.Is(err, leasehold.ErrStepDownTimeout) && !errors.Is(err, leasehold.ErrIdentityConflict):
			w.violateLocked(VRunEnded, c.client, fmt.Sprintf("Run returned %v although Rejoin is set", err))
		}
	}
	if c.stops != c.terms && !c.crashed {
		w.violateLocked(VCallback, c.client, fmt.Sprintf("Run returned after %d OnStartedLeading calls but %d OnStoppedLeading calls", c.terms, c.stops))
	}
	// The process exits with Run: its work, if it still runs (a
	// step-down that timed out), dies with it.
	c.kill()
	s := c.s
	switch {
	case s.cur == c && s.pendingStart:
		w.pushLocked(now, func() { w.startSlot(s) })
	case s.cur == c && !c.cancelled && !w.stopNow:
		// Returned on its own: the kubelet restarts the container.
		w.pushLocked(now.Add(w.p.RestartAfter), func() { w.startSlot(s) })
	}
	w.disturbLocked()
}

// runWork is OnStartedLeading: it marks the work in the history, checks
// that nobody else works, waits for its ctx, then takes its stop delay
// (or hangs, under a hang-work fault) before returning.
func (c *inc) runWork(ctx context.Context) {
	w := c.w
	term, _ := leasehold.TermFromContext(ctx)
	wk := w.workStarted(c, term.UID)
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
	w.res.Checks++
	// Paused at its deadline, it can cancel its work only on resuming.
	dl := c.deadlineLocked(c.lastWinSent, w.t.RenewDeadline)
	if !c.lastWinSent.IsZero() && wk.cancelledAt.After(dl) {
		w.violateLocked(VDeadline, c.client, fmt.Sprintf("the work of term %d was cancelled %v after its last successful renewal's send + RenewDeadline (on its monotonic clock, and, if paused then, its resumption)", wk.term, wk.cancelledAt.Sub(dl)))
	}
	d := wk.stopDelay
	if wk.hang > d {
		d = wk.hang
	}
	w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("work of term %d cancelled; returns in %v", wk.term, d)})
	w.mu.Unlock()
	if d > 0 {
		// On its process's clock: a paused process's work is paused.
		t := c.clk.NewTimer(d)
		select {
		case <-t.C():
		case <-c.killed:
		}
		t.Stop()
	}
	w.workEnded(wk, "work returned")
}

func (w *world) workStarted(c *inc, uid types.UID) *work {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	c.terms++
	if c.crashed || c.returned {
		// A dead process starts nothing (a write it sent before dying
		// may still have won).
		w.hist.add(entry{kind: evWork, who: c.client, what: "OnStartedLeading in a dead process: no work"})
		c.stops-- // its OnStoppedLeading is not counted either
		return nil
	}
	wk := &work{c: c, term: c.terms, started: now, uid: uid}
	u := w.unit(2, uint64(c.s.i), uint64(c.n), uint64(c.terms))
	if u >= 0.3 {
		wk.stopDelay = time.Duration((u - 0.3) / 0.7 * float64(w.t.Margin()/2)).Truncate(time.Millisecond)
	}
	for other := range w.works {
		w.res.Checks++
		if c.blindWin || (other.uid != "" && other.uid != uid && !c.sawBefore(other.uid, now)) {
			// The Lease was deleted by hand under a working leader, and
			// this candidate had never seen it (no Lease at all, or not
			// the object that leader won its term on: created and
			// deleted again while this candidate's watch lagged): it
			// cannot know of that leader, and creates the Lease, as
			// every election does. Deleting a held Lease revokes it
			// without a margin. (A term won on the very object the
			// other's term was won on is not excused: the winning
			// write was conditioned on a version of it that this
			// candidate read, if only at this instant.)
			w.res.ExcusedBlind++
			w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("starts while %s's work still runs: excused, the Lease was deleted by hand and %s never saw it before creating it",
				other.c.client, c.client)})
			continue
		}
		if dl := other.c.lastWinSent.Add(w.t.RenewDeadline); other.c.pausedBetweenLocked(dl, now) {
			// The hole no lease closes (doc.go): the other process was
			// paused at or after its renew deadline, so it could not
			// cancel its work, or its work could not return, in time.
			w.res.ExcusedPaused++
			w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("starts while %s's work still runs: excused, %s was paused after its renew deadline (%s)",
				other.c.client, other.c.client, fmtDur(dl.Sub(w.start)))})
			continue
		}
		if !other.cancelledAt.IsZero() && now.Sub(other.cancelledAt) > w.t.Margin() {
			w.res.ExcusedOverdue++
			w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("starts while %s's work, cancelled %v ago (more than the safety margin %v), still runs: allowed",
				other.c.client, now.Sub(other.cancelledAt), w.t.Margin())})
			continue
		}
		state := "not cancelled"
		if !other.cancelledAt.IsZero() {
			state = fmt.Sprintf("cancelled %v ago", now.Sub(other.cancelledAt))
		}
		text, sig := w.hist.recent(c.client, 3)
		w.violateSigLocked(VOverlap, VOverlap+"["+sig+"]", c.client, fmt.Sprintf("%s (%q) started working while the work of %s (%q, since %s, %s) still runs; %s's last requests: %s",
			c.client, c.id, other.c.client, other.c.id, fmtDur(other.started.Sub(w.start)), state, c.client, text))
	}
	w.res.Checks++
	c.work = wk
	w.works[wk] = struct{}{}
	w.hist.add(entry{kind: evWork, who: c.client, what: fmt.Sprintf("WORK STARTS (term %d)", wk.term)})
	return wk
}

func (w *world) workEnded(wk *work, how string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wk.ended = true
	delete(w.works, wk)
	w.hist.add(entry{kind: evWork, who: wk.c.client, what: fmt.Sprintf("WORK ENDS (term %d): %s", wk.term, how)})
	w.hungWorkEndedLocked(wk)
	w.res.Checks++
	if len(w.works) == 0 && w.quietLocked() && w.aliveLocked() && !w.stopNow {
		w.violateLocked(VNoLeader, wk.c.client, fmt.Sprintf("the only work ended with no disturbance for %v and no fault active", time.Since(w.lastDisturb)))
	}
}

// newLeader is OnNewLeader: calls come one at a time (callback). Each
// takes a few virtual milliseconds, so that overlapping calls would show.
func (c *inc) newLeader(string) {
	if c.newLeaderCalls.Add(1) > 1 {
		c.w.violate(VCallback, c.client, "OnNewLeader called while another call of it still ran")
	}
	c.clk.Sleep(5 * time.Millisecond)
	c.newLeaderCalls.Add(-1)
}

// stopped is OnStoppedLeading: once per term, after the work returned
// (or after the safety margin, when the lease was lost).
func (c *inc) stopped() {
	w := c.w
	w.mu.Lock()
	hang := w.stoppedHang
	w.stoppedHang = 0
	defer func() {
		w.mu.Unlock()
		if hang > 0 {
			time.Sleep(hang)
		}
	}()
	c.stops++
	c.stoppedLast = true
	w.res.Checks++
	if c.stops > c.terms {
		w.violateLocked(VCallback, c.client, fmt.Sprintf("OnStoppedLeading called %d times for %d terms", c.stops, c.terms))
	}
	if wk := c.work; wk != nil && !wk.ended && !c.crashed {
		if wk.cancelledAt.IsZero() || time.Since(wk.cancelledAt) < w.t.Margin() {
			w.violateLocked(VCallback, c.client, fmt.Sprintf("OnStoppedLeading called while OnStartedLeading of term %d still runs, %v after its ctx was cancelled (safety margin %v)",
				wk.term, time.Since(wk.cancelledAt), w.t.Margin()))
		}
		// A term lost (not stepping down: Run not cancelled, no yield
		// asked for) gives its work the safety margin, no more.
		w.res.Checks++
		if late := time.Since(wk.cancelledAt) - w.t.Margin() - c.pausedWithinLocked(wk.cancelledAt, time.Now()); !c.cancelled && !wk.mayStepDown && !wk.cancelledAt.IsZero() && late > graceSlack {
			w.violateLocked(VCallback, c.client, fmt.Sprintf("the work of lost term %d still runs and OnStoppedLeading was called %v after the safety margin %v ran out",
				wk.term, late, w.t.Margin()))
		}
		// The work outlived its term: Check must fail until it returns.
		w.res.Checks++
		if err := c.e.Check(0); err == nil {
			w.violateLocked(VCheck, c.client, fmt.Sprintf("Check passed at OnStoppedLeading while the work of term %d, cancelled %v ago, still runs",
				wk.term, time.Since(wk.cancelledAt)))
		}
	}
	w.hist.add(entry{kind: evWork, who: c.client, what: "OnStoppedLeading"})
}

// graceSlack is how far past the safety margin a lost term's
// OnStoppedLeading may come: virtual time is exact, so only the same
// instant's goroutine order.
const graceSlack = time.Millisecond

// leaderLocked returns the incarnation whose work runs and is not
// cancelled, if any.
func (w *world) leaderLocked() *inc {
	for wk := range w.works {
		if wk.cancelledAt.IsZero() {
			return wk.c
		}
	}
	return nil
}

// op runs one entry of the plan.
func (w *world) op(f Fault) {
	w.mu.Lock()
	if w.stopNow {
		w.mu.Unlock()
		return
	}
	if f.OnTakeover {
		g := f
		g.OnTakeover = false
		w.triggers = append(w.triggers, func() {
			w.pushLocked(time.Now().Add(g.Delay), func() { w.op(g) })
		})
		w.hist.add(entry{kind: evOp, who: "sim", what: "armed: " + f.String()})
		w.mu.Unlock()
		return
	}
	w.res.FaultsRun[f.Kind]++
	w.hist.add(entry{kind: evOp, who: "sim", what: f.String()})
	if w.opts.onOp != nil {
		w.opts.onOp(w, f)
	}
	quiet := w.quietLocked()
	w.disturbLocked()
	target := func() *inc {
		if f.Target >= 0 {
			c := w.slots[f.Target].cur
			if c == nil || c.cancelled || c.returned {
				return nil
			}
			return c
		}
		return w.leaderLocked()
	}
	switch f.Kind {
	case KindCancel, KindCrash:
		c := target()
		if c != nil && f.Kind == KindCancel && w.deferLocked(c, f) {
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		if c == nil {
			w.hist.add(entry{kind: evOp, who: "sim", what: "  (no such candidate running)"})
			return
		}
		w.stop(c, f.Kind == KindCrash, string(f.Kind))
		s := c.s
		w.push(time.Now().Add(f.Dur), func() { w.startSlot(s) })
		return
	case KindYield:
		c := target()
		if c != nil && w.deferLocked(c, f) {
			w.mu.Unlock()
			return
		}
		if c != nil && c.work != nil {
			c.work.mayStepDown = true
		}
		to := ""
		if f.To >= 0 && f.To != f.Target && (c == nil || f.To != c.s.i) {
			if sc := w.slots[f.To].cur; sc != nil {
				to = sc.id
			} else {
				to = slotName(f.To)
			}
		}
		w.mu.Unlock()
		if c == nil {
			w.hist.add(entry{kind: evOp, who: "sim", what: "  (no such candidate running)"})
			return
		}
		w.yield(c, to, quiet)
		return
	case KindHangWork:
		c := target()
		if c != nil && c.work != nil && !c.work.ended {
			c.work.hang = f.Dur
		}
		w.addFaultLocked(f)
		w.mu.Unlock()
		return
	case KindRefuse, KindLatency, KindStall, KindWatchLag, KindLoseAnswer:
		w.addFaultLocked(f)
		w.mu.Unlock()
		return
	case KindPause:
		if c := target(); c == nil || c.crashed {
			w.hist.add(entry{kind: evOp, who: "sim", what: "  (no such candidate running)"})
		} else {
			w.pauseLocked(c, f)
		}
		w.mu.Unlock()
		return
	case KindWatchOutage, KindPartition, KindWatchDrop:
		w.addFaultLocked(f)
		if f.Kind != KindPartition {
			w.closeWatchesLocked(f.Target)
		}
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	ctx := context.Background()
	switch f.Kind {
	case KindAnnotate:
		w.mu.Lock()
		for wk := range w.works {
			wk.mayStepDown = true // the holder hands over
		}
		w.mu.Unlock()
		to := "*"
		if f.To >= 0 {
			w.mu.Lock()
			to = slotName(f.To)
			if c := w.slots[f.To].cur; c != nil {
				to = c.id
			}
			w.mu.Unlock()
		}
		for range 3 {
			l, err := w.admin.Get(ctx, leaseName, metav1.GetOptions{})
			if err != nil {
				break
			}
			if l.Annotations == nil {
				l.Annotations = map[string]string{}
			}
			l.Annotations[leasehold.PreferredHolderAnnotation] = to
			if _, err := w.admin.Update(ctx, l, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
				break
			}
		}
	case KindDelete, KindRecreate:
		err := w.admin.Delete(ctx, leaseName, metav1.DeleteOptions{})
		w.hist.add(entry{kind: evRequest, who: "sim", what: "delete", err: err})
		if f.Kind == KindRecreate {
			// In a coordinated world, by the controller's clock: it
			// judges the intruder's claim by its own.
			now := metav1.NewMicroTime(time.Now().Add(w.p.CtrlSkew))
			got, err := w.admin.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: leaseName, Namespace: namespace},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(intruder),
					LeaseDurationSeconds: ptr.To(int32(w.t.LeaseDuration / time.Second)),
					AcquireTime:          &now, RenewTime: &now,
					LeaseTransitions: ptr.To[int32](0),
				},
			}, metav1.CreateOptions{})
			w.recordRequest("sim", "create (intruder)", got, err)
		}
	case KindCloseWatches:
		w.srv.CloseWatches()
		if w.cands != nil {
			w.cands.closeWatches(false)
		}
	case KindExpireWatches:
		w.srv.ExpireWatches()
		if w.cands != nil {
			w.cands.closeWatches(true)
		}
	case KindCompact:
		w.srv.Compact()
		if w.cands != nil {
			w.cands.forget()
		}
	}
}

// addFaultLocked makes f active until it heals Dur later.
func (w *world) addFaultLocked(f Fault) {
	a := &activeFault{f: f, healed: make(chan struct{})}
	w.active = append(w.active, a)
	w.pushLocked(time.Now().Add(f.Dur), func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.active = slices.DeleteFunc(w.active, func(x *activeFault) bool { return x == a })
		close(a.healed)
		w.hist.add(entry{kind: evOp, who: "sim", what: "healed: " + f.String()})
		if f.Kind == KindPartition {
			// The partitioned client's watches broke meanwhile.
			w.closeWatchesLocked(f.Target)
		}
		w.disturbLocked()
	})
}

// closeWatchesLocked ends the open watches of the incarnations in slot
// target (-1: all).
func (w *world) closeWatchesLocked(target int) {
	for _, s := range w.slots {
		if target >= 0 && s.i != target {
			continue
		}
		for _, c := range w.incs {
			if c.s == s {
				for f := range c.watches {
					f.Stop()
				}
			}
		}
	}
}

// yield calls c's Yield in its own goroutine and checks that it is
// answered within YieldBound, and that a named successor takes over.
func (w *world) yield(c *inc, to string, quiet bool) {
	w.yields.Add(1)
	called := time.Now()
	var answered atomic.Bool
	w.hist.add(entry{kind: evRun, who: c.client, what: fmt.Sprintf("Yield(%q) called", to)})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.afterRunTimeLocked(c, called, w.t.YieldBound(), func() {
		w.res.Checks++
		if !answered.Load() {
			sig, why := VYield, ""
			if c.cancelled && !c.cancelledAt.Before(called) {
				sig = VYield + "[Run cancelled during the yield]"
				why = fmt.Sprintf("; Run's ctx was cancelled at %s, during the yield", fmtDur(c.cancelledAt.Sub(w.start)))
			}
			w.violateSigLocked(VYield, sig, c.client, fmt.Sprintf("Yield(%q) called at %s not answered within %v%s", to, fmtDur(called.Sub(w.start)), w.t.YieldBound(), why))
		}
	})
	go func() {
		defer w.yields.Done()
		err := c.e.Yield(context.Background(), to)
		answered.Store(true)
		w.hist.add(entry{kind: evRun, who: c.client, what: fmt.Sprintf("Yield(%q) answered after %v", to, time.Since(called)), err: err})
		if err != nil || to == "" || !quiet || w.p.Coordinated {
			// In coordinated election the controller picks the
			// successor: the one named is a hint.
			return
		}
		// A yield to a named successor that runs and is healthy: it
		// takes the Lease within milliseconds of the release.
		w.mu.Lock()
		defer w.mu.Unlock()
		var succ *inc
		for _, s := range w.slots {
			if s.cur != nil && s.cur.id == to && !s.cur.cancelled && !s.cur.returned {
				succ = s.cur
			}
		}
		if succ == nil {
			return
		}
		released := time.Now()
		bound := 2 * w.t.RetryPeriod
		w.pushLocked(released.Add(bound), func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.active) > 0 || w.lastDisturb.After(released) || succ.cancelled || succ.returned || w.stopNow {
				return
			}
			w.res.Checks++
			if succ.work == nil || succ.work.started.Before(called) {
				w.violateLocked(VHandoff, succ.client, fmt.Sprintf("Yield to %q returned at %s but it has not started leading %v later, with no fault active",
					to, fmtDur(released.Sub(w.start)), bound))
			}
		})
	}()
}

// unit returns a number in [0, 1) drawn from the seed and parts: the
// same parts give the same number in every run of the seed.
func (w *world) unit(parts ...uint64) float64 {
	x := w.p.Seed
	for _, p := range parts {
		x = mix(x ^ mix(p+0x9e3779b97f4a7c15))
	}
	return float64(x>>11) / (1 << 53)
}

// mix is splitmix64's finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

var errConnRefused = errors.New("dial tcp 10.96.0.1:443: connect: connection refused")
