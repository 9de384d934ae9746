package shard

import (
	"context"
	"fmt"
	"runtime/debug"
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
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/internal/retry"
)

// Member is one process's membership of a shard group. Create it with New
// and start it with Run. Its methods are safe for concurrent use.
type Member struct {
	cfg       Config
	t         timings
	leaseName string

	running atomic.Bool
	elector atomic.Pointer[leasehold.Elector] // of the current Run

	mu      sync.Mutex
	owned   map[int]bool
	metrics *memberMetrics // nil without Config.Metrics
}

// New validates cfg, fills in its defaults and returns a Member. A bad
// config gives a nil Member and one error, wrapping
// leasehold.ErrInvalidConfig, that names every problem and its fix.
func New(cfg Config) (*Member, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Member{
		cfg:       cfg,
		t:         timings{leaseDuration: cfg.LeaseDuration, renewDeadline: cfg.RenewDeadline, retryPeriod: cfg.RetryPeriod},
		leaseName: MemberLeaseName(cfg.Group, cfg.Identity),
		owned:     map[int]bool{},
		metrics:   newMemberMetrics(cfg),
	}, nil
}

// Owned returns, in ascending order, the shards whose work runs here now:
// started, and not cancelled yet.
func (m *Member) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, 0, len(m.owned))
	for i := range m.owned {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// Check is a health check for a liveness probe, as leasehold's
// Elector.Check for the membership election: it fails when this member's
// renewals have stalled past RenewDeadline plus maxTolerableExpiredLease,
// when a lapsed term's shard work outlived the safety margin, or when the
// API server has been unreachable (or RBAC has forbidden renewals) for
// longer than LeaseDuration plus maxTolerableExpiredLease. It returns nil
// before Run starts.
func (m *Member) Check(maxTolerableExpiredLease time.Duration) error {
	if e := m.elector.Load(); e != nil {
		return e.Check(maxTolerableExpiredLease)
	}
	return nil
}

func (m *Member) setOwned(i int, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owned[i] != on {
		m.metrics.owned(i, on)
	}
	if on {
		m.owned[i] = true
	} else {
		delete(m.owned, i)
	}
}

// Run joins the group and runs this member's shards until ctx is
// cancelled. It returns nil then, after every shard's work has returned
// (and, with ReleaseOnCancel, after handing the shards over and releasing
// its member Lease). A lapsed membership does not end Run: its shards are
// cancelled at the renew deadline and the member joins again. Run returns
// an error, after stopping every shard, wrapping:
//   - leasehold.ErrIdentityConflict if another live process uses this
//     identity;
//   - ErrNoCompareAndSwap if the Lease API lacks resourceVersions;
//   - ErrShardCountMismatch if the group has another number of shards;
//   - ErrBadAssignment if the assignment Lease cannot be read;
//   - ErrRefused if the API server refuses a request of the group for
//     good (RBAC, an invalid request, a missing namespace).
//
// Transient API failures never end Run. Neither does the deletion of the
// assignment Lease: every shard stops, and the member goes on with the
// assignment created again (see the package documentation).
//
// A second Run while one is active returns leasehold.ErrAlreadyRunning.
func (m *Member) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return leasehold.ErrAlreadyRunning
	}
	defer m.running.Store(false)
	log := klog.FromContext(ctx).WithValues("shardGroup", m.cfg.Namespace+"/"+m.cfg.Group, "identity", m.cfg.Identity)
	ctx = klog.NewContext(ctx, log)
	return newLoop(m, log).run(ctx)
}

// loop is the state of one Run, owned by Run's goroutine except where
// noted.
type loop struct {
	m      *Member
	cfg    Config
	clock  clock.WithTicker
	log    logr.Logger
	leases coordinationv1client.LeaseInterface

	s        state
	asgLease *coordinationv1.Lease // the newest assignment Lease seen, nil while there is none
	// asgRV is the newest resourceVersion at which the assignment Lease
	// was seen, or seen gone: older news of it is ignored.
	asgRV string
	fatal error

	elector  *leasehold.Elector
	cur      *termRun // the running term, nil if none
	shardRun map[int]*shardRun

	ioBusy  bool
	retryAt time.Time // no request before this, after a failure
	bo      *retry.Backoff
	fails   *retry.Streak

	groupMsgs  chan groupMsg
	ioDone     chan ioResult
	termStarts chan *termRun
	shardDone  chan shardExit
	exited     chan struct{} // closed when the loop returns
}

// termRun is one membership term: the elector's work function blocks
// until the loop closes done.
type termRun struct {
	ctx        context.Context
	done       chan struct{}
	leaveUntil time.Time // while leaving: give up handing over after this
	epochTried bool
}

type shardRun struct {
	cancel    context.CancelFunc
	cancelled bool
}

type shardExit struct {
	shard    int
	run      *shardRun
	panicked any
	stack    []byte
}

// ioKind names the request an ioResult answers.
type ioKind int

const (
	ioEpoch   ioKind = iota // GET of our own member Lease at a term's start
	ioWrite                 // create or update of the assignment Lease
	ioFence                 // update of another member's Lease
	ioCollect               // delete of a dead member's Lease
)

type ioResult struct {
	kind ioKind
	// name is the Lease the request was about; base is the version it
	// was conditioned on; create is set for the create of the
	// assignment.
	name, base string
	create     bool
	// lease is the answer, or after a conflict the current Lease read
	// again (nil if it does not exist).
	lease    *coordinationv1.Lease
	conflict bool
	err      error
	term     *termRun // ioEpoch: the term it was read for
}

func newLoop(m *Member, log logr.Logger) *loop {
	cfg := m.cfg
	l := &loop{
		m:      m,
		cfg:    cfg,
		clock:  cfg.Clock,
		log:    log,
		leases: cfg.Client.Leases(cfg.Namespace),
		s: state{
			self: cfg.Identity, group: cfg.Group, shards: cfg.Shards, leaseDuration: cfg.LeaseDuration,
			members: map[string]*memberView{}, running: map[int]bool{}, cancelled: map[int]bool{}, holdOff: map[int]time.Time{},
			collected: map[string]string{},
		},
		shardRun:   map[int]*shardRun{},
		bo:         retry.NewBackoff(cfg.Clock, cfg.RetryPeriod/4, cfg.RetryPeriod),
		groupMsgs:  make(chan groupMsg, 64),
		ioDone:     make(chan ioResult, 1),
		termStarts: make(chan *termRun),
		shardDone:  make(chan shardExit, cfg.Shards),
		exited:     make(chan struct{}),
	}
	l.fails = &retry.Streak{Log: log, Clock: cfg.Clock, Msg: "Request for the shard group failed; retrying with backoff"}
	return l
}

func (l *loop) run(ctx context.Context) error {
	defer close(l.exited)
	cfg := l.cfg

	// The group watch outlives ctx: a leaving member follows the
	// assignment until its shards are handed over.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		(&groupWatch{
			leases: l.leases, group: cfg.Group, clock: l.clock, timeout: l.m.t.requestTimeout(),
			retryPeriod: cfg.RetryPeriod, log: l.log, out: l.groupMsgs,
		}).run(wctx)
	}()
	defer func() { stopWatch(); <-watchDone }()

	// Join only once the group has been read: a Lease API without
	// compare-and-swap, or a group of another size, is refused before
	// anything is written.
	for !l.s.synced && l.fatal == nil {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-l.groupMsgs:
			l.onGroup(msg)
		}
	}
	if l.fatal != nil {
		return l.fatal
	}

	elector, err := leasehold.New(leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: cfg.Namespace, Name: l.m.leaseName, Identity: cfg.Identity, Client: cfg.Client,
			Labels: map[string]string{LabelGroup: cfg.Group},
		},
		LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
		ReleaseOnCancel: cfg.ReleaseOnCancel,
		Rejoin:          true,
		Clock:           l.clock,
		Name:            cfg.Namespace + "/" + l.m.leaseName,
		Callbacks:       leasehold.Callbacks{OnStartedLeading: l.termWork},
	})
	if err != nil {
		return err // validated by New already
	}
	l.elector = elector
	l.m.elector.Store(elector)
	ectx, stopElector := context.WithCancel(ctx)
	defer stopElector()
	electorDone := make(chan error, 1)
	go func() { electorDone <- elector.Run(ectx) }()

	var electorErr error
	electorRunning := true
	timer := l.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if l.fatal != nil {
			stopElector()
		}
		now := l.clock.Now()
		wake := l.step(ctx, now)
		if !electorRunning && l.cur == nil && len(l.shardRun) == 0 && !l.ioBusy {
			break
		}
		var termDone <-chan struct{}
		if l.cur != nil && l.s.term.live {
			termDone = l.cur.ctx.Done()
		}
		timer.Stop()
		var timerC <-chan time.Time
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(now), 0))
			timerC = timer.C()
		}
		select {
		case msg := <-l.groupMsgs:
			l.onGroup(msg)
		case res := <-l.ioDone:
			l.onIO(res)
		case tr := <-l.termStarts:
			l.onTermStart(tr)
		case <-termDone:
			l.onTermEnd(ctx)
		case ex := <-l.shardDone:
			l.onShardExit(ex)
		case err := <-electorDone:
			electorRunning, electorErr = false, err
		case <-timerC:
		}
		l.drain()
	}

	switch {
	case l.fatal != nil:
		return l.fatal
	case electorErr != nil:
		return fmt.Errorf("shard: membership of %s/%s: %w", cfg.Namespace, cfg.Group, electorErr)
	}
	if cfg.ReleaseOnCancel {
		l.deleteOwnLease()
	}
	return nil
}

// drain folds in the shard exits and group events already queued, so
// that one decision (and one write) covers a burst of them: a member
// stopping many shards acknowledges them together.
func (l *loop) drain() {
	for i := 0; i < 4*l.cfg.Shards+64; i++ {
		select {
		case ex := <-l.shardDone:
			l.onShardExit(ex)
		case msg := <-l.groupMsgs:
			l.onGroup(msg)
		default:
			return
		}
	}
}

// termWork is the elector's OnStartedLeading: one membership term. It
// returns when the loop has stopped every shard of the term (and, when
// leaving, handed them over).
func (l *loop) termWork(ctx context.Context) {
	tr := &termRun{ctx: ctx, done: make(chan struct{})}
	select {
	case l.termStarts <- tr:
	case <-l.exited:
		return
	}
	<-tr.done
}

func (l *loop) onTermStart(tr *termRun) {
	l.cur = tr
	l.s.term = term{running: true, live: tr.ctx.Err() == nil}
	l.log.Info("Joined the shard group: membership term started", "memberLease", l.m.leaseName)
}

// onTermEnd: the term's context was cancelled, at the renew deadline, on
// another holder, or because Run's ctx was cancelled. Every shard's
// context derives from it, so all are cancelled already.
func (l *loop) onTermEnd(ctx context.Context) {
	l.s.term.live = false
	for i, r := range l.shardRun {
		l.cancelShard(i, r)
	}
	if ctx.Err() != nil && l.cfg.ReleaseOnCancel && l.fatal == nil {
		l.s.term.leaving = true
		l.cur.leaveUntil = l.clock.Now().Add(l.cfg.RenewDeadline)
		l.log.Info("Leaving the shard group: handing shards over as their work returns", "shards", len(l.shardRun))
		return
	}
	l.log.Info("Membership term ended; every shard cancelled", "shards", len(l.shardRun))
}

// maybeFinishTerm lets the elector's work function return, once no shard runs
// and, when leaving, the assignment names this member as owner of nothing
// (or handing over cannot finish).
func (l *loop) maybeFinishTerm(now time.Time) {
	tr := l.cur
	if tr == nil || l.s.term.live || len(l.shardRun) > 0 {
		return
	}
	if l.s.term.leaving && l.fatal == nil && l.elector.IsLeader() && now.Before(tr.leaveUntil) && l.ownsInAssignment() {
		return
	}
	if l.s.term.leaving && l.ownsInAssignment() {
		l.log.Info("Could not hand every shard over; the others take them once this member's Lease expires")
	}
	close(tr.done)
	l.cur = nil
	l.s.term = term{}
}

// ownsInAssignment: the assignment still names this member as an owner.
// (Targets left on a member that is gone are moved by the others.)
func (l *loop) ownsInAssignment() bool {
	a := l.s.asg
	return a != nil && slices.Contains(a.owner, l.cfg.Identity)
}

// step applies the current decision: stops and starts shards and sends
// the next request. It returns when to look again if nothing happens.
func (l *loop) step(ctx context.Context, now time.Time) time.Time {
	if l.fatal != nil {
		for i, r := range l.shardRun {
			l.cancelShard(i, r)
		}
		l.s.term.live = false
	}
	if l.cur != nil && l.s.term.live && l.cur.ctx.Err() != nil {
		l.onTermEnd(ctx)
	}
	d := l.s.decide(now)
	l.m.metrics.membersSeen(&l.s, now)
	for _, i := range d.stop {
		l.cancelShard(i, l.shardRun[i])
	}
	for _, i := range d.start {
		l.startShard(i)
	}
	wake := d.wake
	if l.cur != nil && l.s.term.live && l.s.term.epoch == "" && !l.cur.epochTried && l.fatal == nil {
		// The epoch is needed before any claim.
		if l.request(now, &wake, func() { l.cur.epochTried = true; l.readEpoch(l.cur) }) {
			return wake
		}
	}
	if l.fatal == nil {
		switch {
		case d.fence != "":
			l.request(now, &wake, func() { l.fence(d.fence) })
		case d.next != nil:
			l.request(now, &wake, func() { l.write(d.next, d.create) })
		case d.collect != "":
			l.request(now, &wake, func() { l.collect(d.collect) })
		}
	}
	l.maybeFinishTerm(now)
	if l.cur != nil && l.s.term.leaving {
		// IsLeader turns false at the renew deadline, with no event.
		wake = earliest(wake, now.Add(l.cfg.RetryPeriod/4))
	}
	return wake
}

// request starts one request in its own goroutine unless one is in
// flight or a failure's backoff has not passed (then it wakes at its
// end). It reports whether it started.
func (l *loop) request(now time.Time, wake *time.Time, do func()) bool {
	if l.ioBusy {
		return false
	}
	if now.Before(l.retryAt) {
		*wake = earliest(*wake, l.retryAt)
		return false
	}
	l.ioBusy = true
	do()
	return true
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (l *loop) reqCtx() (context.Context, context.CancelFunc) {
	return retry.WithTimeout(context.Background(), l.clock, l.m.t.requestTimeout())
}

func (l *loop) readEpoch(tr *termRun) {
	go func() {
		ctx, cancel := l.reqCtx()
		defer cancel()
		lease, err := l.leases.Get(ctx, l.m.leaseName, metav1.GetOptions{})
		l.ioDone <- ioResult{kind: ioEpoch, name: l.m.leaseName, lease: lease, err: err, term: tr}
	}()
}

// write sends the assignment next: an update conditioned on the version
// seen, or a create. On a lost race it reads the Lease again.
func (l *loop) write(next *assignment, create bool) {
	var desired *coordinationv1.Lease
	if create {
		desired = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: l.cfg.Namespace, Name: l.cfg.Group}}
	} else {
		desired = l.asgLease.DeepCopy()
	}
	if desired.Labels == nil {
		desired.Labels = map[string]string{}
	}
	desired.Labels[LabelGroup] = l.cfg.Group
	if desired.Annotations == nil {
		desired.Annotations = map[string]string{}
	}
	desired.Annotations[AnnotationAssignment] = next.encode()
	l.log.V(4).Info("Writing the assignment", "create", create, "basedOn", desired.ResourceVersion)
	go func() {
		ctx, cancel := l.reqCtx()
		defer cancel()
		var got *coordinationv1.Lease
		var err error
		if create {
			got, err = l.leases.Create(ctx, desired, metav1.CreateOptions{})
		} else {
			got, err = l.leases.Update(ctx, desired, metav1.UpdateOptions{})
		}
		res := l.answer(ioWrite, l.cfg.Group, got, err)
		res.base, res.create = desired.ResourceVersion, create
		l.ioDone <- res
	}()
}

// fence clears the holder of another member's Lease, conditioned on the
// version whose claim ran out: a renewal in flight then fails, and that
// member's membership ends (see the package documentation).
func (l *loop) fence(name string) {
	mv := l.s.members[name]
	desired := mv.lease.DeepCopy()
	holder := leaserecord.Holder(desired)
	desired.Spec.HolderIdentity = nil
	l.log.Info("Member's Lease expired by this member's clock; fencing it before taking its shards over",
		"member", holder, "memberLease", name, "resourceVersion", mv.rv)
	go func() {
		ctx, cancel := l.reqCtx()
		defer cancel()
		got, err := l.leases.Update(ctx, desired, metav1.UpdateOptions{})
		res := l.answer(ioFence, name, got, err)
		res.base = desired.ResourceVersion
		l.ioDone <- res
	}()
}

// collect deletes a dead member's Lease, conditioned on the version seen.
func (l *loop) collect(name string) {
	rv := l.s.members[name].rv
	l.s.collected[name] = rv
	l.log.V(2).Info("Deleting the Lease of a member gone for good", "memberLease", name, "resourceVersion", rv)
	go func() {
		ctx, cancel := l.reqCtx()
		defer cancel()
		err := l.leases.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr.To(rv)}})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			err = nil // it changed or went: the watch tells
		}
		l.ioDone <- ioResult{kind: ioCollect, name: name, err: err}
	}()
}

// answer turns the outcome of a write into an ioResult; after a lost race
// it reads the Lease again (one GET, only on a conflict).
func (l *loop) answer(kind ioKind, name string, got *coordinationv1.Lease, err error) ioResult {
	if err == nil || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
		return ioResult{kind: kind, name: name, lease: got, err: err}
	}
	ctx, cancel := l.reqCtx()
	defer cancel()
	fresh, gerr := l.leases.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(gerr):
		return ioResult{kind: kind, name: name, conflict: true}
	case gerr != nil:
		return ioResult{kind: kind, name: name, err: fmt.Errorf("lost a race, and reading again failed: %w", gerr)}
	}
	return ioResult{kind: kind, name: name, lease: fresh, conflict: true}
}

// onIO folds in the outcome of a request. Errors are classified: a 404
// is news (the Lease is gone) and is never retried as such; a permanent
// refusal ends Run with ErrRefused (deleting a dead member's Lease is
// best effort: given up); anything else is transient and retried, after a
// backoff, by the next decision. A lost race that brings nothing newer is
// retried after a backoff too, so that no answer makes the loop spin.
func (l *loop) onIO(res ioResult) {
	l.ioBusy = false
	now := l.clock.Now()
	if res.err != nil {
		l.onIOError(res, now)
		return
	}
	l.fails.Succeeded()
	if res.lease != nil && res.lease.ResourceVersion == "" {
		l.setFatal(fmt.Errorf("%w: lease %s/%s came back without one; client-go's fake clientset does this: test with leaseholdtest.NewServer() instead",
			ErrNoCompareAndSwap, l.cfg.Namespace, res.lease.Name))
		return
	}
	if res.conflict && !l.newer(res) {
		l.retryAt = now.Add(l.bo.Delay())
		l.log.V(2).Info("Lost a race, and reading again brought nothing newer; retrying with backoff", "request", res.kind.String(), "lease", res.name)
		return
	}
	l.bo.Reset()
	switch res.kind {
	case ioEpoch:
		l.onEpoch(res)
	case ioWrite:
		if res.conflict {
			l.log.V(2).Info("Lost a race for the assignment; read it again")
		}
		if res.lease == nil {
			l.assignmentGone(now, "it was not there when this member wrote it")
			return
		}
		l.onLease(res.lease)
	case ioFence:
		if res.lease == nil {
			l.memberGone(res.name, now)
			return
		}
		l.onLease(res.lease)
	}
}

// newer reports whether a lost race's fresh read brings news: the Lease
// is gone, or newer than the version this member wrote from.
func (l *loop) newer(res ioResult) bool {
	return res.lease == nil || res.base == "" || leaserecord.NewerVersion(res.lease.ResourceVersion, res.base)
}

func (l *loop) onIOError(res ioResult, now time.Time) {
	err := res.err
	switch {
	case apierrors.IsNotFound(err) && res.kind == ioWrite && !res.create:
		l.assignmentGone(now, "an update of it found it gone (404)")
		return
	case apierrors.IsNotFound(err) && res.kind == ioFence:
		l.memberGone(res.name, now)
		return
	case apierrors.IsNotFound(err) && res.kind == ioEpoch:
		// The elector's next renewal finds it gone too, and ends the term.
		l.log.Info("This member's Lease is gone; claiming nothing in this term", "memberLease", res.name)
		return
	case res.kind == ioCollect && apierrors.IsForbidden(err):
		l.s.noCollect = true
		l.log.Info("RBAC forbids deleting Leases: the Leases of members gone for good stay; grant 'delete' on leases to remove them", "err", err.Error())
		return
	case res.kind == ioCollect && retry.Permanent(err):
		l.log.Info("Could not delete the Lease of a member gone for good; it stays", "memberLease", res.name, "err", err.Error())
		return
	case retry.Permanent(err) || (apierrors.IsNotFound(err) && res.create):
		l.setFatal(fmt.Errorf("%w: %s %s/%s: %w%s", ErrRefused, res.kind, l.cfg.Namespace, res.name, err, rbacHint(err)))
		return
	}
	l.retryAt = now.Add(l.bo.Delay())
	if res.kind == ioEpoch && res.term != nil {
		res.term.epochTried = false
	}
	l.fails.Failed(err, "request", res.kind.String(), "lease", res.name)
}

// memberGone: an update of a member Lease found it deleted. It is absent
// from now on, as of a version no older than the one seen.
func (l *loop) memberGone(name string, now time.Time) {
	if mv := l.s.members[name]; mv != nil && !mv.absent {
		l.s.members[name] = &memberView{lease: mv.lease, absent: true, rv: mv.rv, observedAt: now}
	}
}

// assignmentGone: the assignment Lease this member knew is deleted or
// replaced, or the first list found none. Every shard stops (none is
// allowed without an assignment); see state.createAfter for what happens
// next.
func (l *loop) assignmentGone(now time.Time, why string) {
	knew := l.s.asg != nil
	l.s.assignmentGone(now)
	l.asgLease = nil
	if knew {
		l.log.Info("The assignment Lease is gone; every shard stopped", "why", why, "createAfter", l.s.createAfter, "quarantineUntil", l.s.quarantine, "formerShards", len(l.s.former))
	} else if !l.s.createAfter.IsZero() {
		l.log.Info("No assignment Lease, while other members may run shards; waiting before creating it", "createAfter", l.s.createAfter)
	}
}

func (l *loop) onEpoch(res ioResult) {
	if res.term != l.cur || l.cur == nil {
		return // a term that has ended
	}
	if res.lease != nil {
		l.onLease(res.lease)
	}
	if leaserecord.Holder(res.lease) != l.cfg.Identity {
		l.log.Info("This member's Lease is not held by it any more; claiming nothing in this term", "holder", leaserecord.Holder(res.lease))
		return
	}
	l.s.term.epoch = res.lease.ResourceVersion
	l.log.V(2).Info("Membership term epoch read", "epoch", l.s.term.epoch)
}

func (k ioKind) String() string {
	switch k {
	case ioEpoch:
		return "read own member Lease"
	case ioWrite:
		return "write assignment"
	case ioCollect:
		return "delete a dead member's Lease"
	default:
		return "fence member Lease"
	}
}

func (l *loop) setFatal(err error) {
	if l.fatal == nil {
		l.fatal = err
		l.log.Error(err, "Leaving the shard group: every shard is stopped")
	}
}

// onGroup folds what the group watch saw into the state.
func (l *loop) onGroup(msg groupMsg) {
	now := l.clock.Now()
	if msg.err != nil {
		l.setFatal(msg.err)
		return
	}
	if msg.list {
		if msg.rv == "" {
			l.setFatal(fmt.Errorf("%w: the list of Leases in %s came back without one; client-go's fake clientset does this: test with leaseholdtest.NewServer() instead",
				ErrNoCompareAndSwap, l.cfg.Namespace))
			return
		}
		seen := map[string]bool{}
		for i := range msg.items {
			seen[msg.items[i].Name] = true
			l.onLease(&msg.items[i])
		}
		// A member Lease not in the list is absent as of it, and its
		// absence counts from now, its first sighting; an absence seen
		// before counts from then, unless the assignment holds claims of
		// that member newer than it: the member came back and went again
		// unseen (while the watch was down), and this absence is new.
		for name, mv := range l.s.members {
			if !seen[name] && (!mv.absent || !epochNotAfter(l.s.claimEpoch(name), mv.rv)) {
				l.s.members[name] = &memberView{lease: mv.lease, absent: true, rv: msg.rv, observedAt: now}
			}
		}
		// Owners never seen at all are absent since this list: recorded,
		// so that later lists do not restart their absence.
		if l.s.asg != nil {
			for _, id := range l.s.asg.referenced() {
				if name := l.s.leaseName(id); id != l.cfg.Identity && !seen[name] && l.s.members[name] == nil {
					l.s.members[name] = &memberView{absent: true, rv: msg.rv, observedAt: now}
				}
			}
		}
		if !seen[l.cfg.Group] {
			if l.s.asg != nil || !l.s.asgMissing {
				l.assignmentGone(now, "a list of the group does not have it")
			}
			if leaserecord.NewerVersion(msg.rv, l.asgRV) {
				l.asgRV = msg.rv
			}
		}
		l.s.synced, l.s.syncRV, l.s.syncAt = true, msg.rv, now
		return
	}
	if msg.typ == watch.Deleted {
		name := msg.lease.Name
		if name == l.cfg.Group {
			if rv := msg.lease.ResourceVersion; rv == "" || leaserecord.NewerVersion(rv, l.asgRV) {
				if l.s.asg != nil {
					l.assignmentGone(now, "deleted")
				}
				if rv != "" {
					l.asgRV = rv
				}
			}
			return
		}
		if !l.isMemberLease(name) {
			return
		}
		if cur := l.s.members[name]; cur != nil && !leaserecord.NewerVersion(msg.lease.ResourceVersion, cur.rv) {
			return
		}
		l.s.members[name] = &memberView{lease: msg.lease, absent: true, rv: msg.lease.ResourceVersion, observedAt: now}
		return
	}
	l.onLease(msg.lease)
}

func (l *loop) isMemberLease(name string) bool {
	return strings.HasPrefix(name, l.cfg.Group+"-")
}

// onLease folds one version of a Lease of the group into the state.
func (l *loop) onLease(lease *coordinationv1.Lease) {
	now := l.clock.Now()
	if lease.ResourceVersion == "" {
		l.setFatal(fmt.Errorf("%w: lease %s/%s came back without one; client-go's fake clientset does this: test with leaseholdtest.NewServer() instead",
			ErrNoCompareAndSwap, l.cfg.Namespace, lease.Name))
		return
	}
	if lease.Name == l.cfg.Group {
		l.onAssignment(lease)
		return
	}
	if !l.isMemberLease(lease.Name) {
		return
	}
	cur := l.s.members[lease.Name]
	if cur != nil && !leaserecord.NewerVersion(lease.ResourceVersion, cur.rv) {
		return
	}
	mv := &memberView{lease: lease, rv: lease.ResourceVersion, observedAt: now}
	if lease.Labels[LabelGroup] != l.cfg.Group {
		// Unlabelled: released by its member, or not in the group.
		mv.absent = true
	}
	l.s.members[lease.Name] = mv
}

func (l *loop) onAssignment(lease *coordinationv1.Lease) {
	if l.asgRV != "" && !leaserecord.NewerVersion(lease.ResourceVersion, l.asgRV) {
		return // older news
	}
	if l.asgLease != nil && lease.UID != "" && l.asgLease.UID != "" && lease.UID != l.asgLease.UID {
		// Deleted and created again, the deletion unseen (the watch was
		// down, or the list was polled).
		l.assignmentGone(l.clock.Now(), "replaced by another Lease of the same name")
	}
	a, err := decodeLease(lease)
	switch {
	case err != nil:
		l.setFatal(fmt.Errorf("%w: %s/%s: %w", ErrBadAssignment, l.cfg.Namespace, l.cfg.Group, err))
		return
	case a == nil:
		l.setFatal(fmt.Errorf("%w: %s/%s has no %s annotation: is another program using a Lease of this name?", ErrBadAssignment, l.cfg.Namespace, l.cfg.Group, AnnotationAssignment))
		return
	case a.shards != l.cfg.Shards:
		l.setFatal(fmt.Errorf("%w: %s/%s has %d shards, this member was configured with Shards %d: every member must use the same Shards for the group's lifetime",
			ErrShardCountMismatch, l.cfg.Namespace, l.cfg.Group, a.shards, l.cfg.Shards))
		return
	}
	l.asgLease, l.asgRV = lease, lease.ResourceVersion
	l.m.metrics.assignment(&l.s, a, l.clock.Now())
	l.s.asg = a
	l.s.asgMissing = false
}

// startShard starts shard i's work in its own goroutine, with a context
// derived from the term's, so the term's end cancels it at once.
func (l *loop) startShard(i int) {
	if l.cur == nil || l.cur.ctx.Err() != nil || !l.elector.IsLeader() {
		return // the term is ending; its end is handled on its own
	}
	ctx, cancel := context.WithCancel(l.cur.ctx)
	r := &shardRun{cancel: cancel}
	l.shardRun[i] = r
	l.s.running[i] = true
	delete(l.s.holdOff, i)
	l.m.setOwned(i, true)
	l.m.metrics.started(i, l.clock.Now())
	l.log.V(2).Info("Starting shard", "shard", i)
	start, stop := l.cfg.OnShardStarted, l.cfg.OnShardStopped
	log := l.log.WithValues("shard", i)
	go func() {
		ex := shardExit{shard: i, run: r}
		func() {
			defer func() {
				if p := recover(); p != nil {
					ex.panicked, ex.stack = p, debug.Stack()
				}
			}()
			start(klog.NewContext(ctx, log), i)
		}()
		cancel()
		if stop != nil {
			func() {
				defer func() {
					if p := recover(); p != nil {
						log.Error(fmt.Errorf("%v", p), "OnShardStopped panicked; recovered", "stack", string(debug.Stack()))
					}
				}()
				stop(i)
			}()
		}
		l.shardDone <- ex
	}()
}

func (l *loop) cancelShard(i int, r *shardRun) {
	if r == nil || r.cancelled {
		return
	}
	r.cancelled = true
	l.s.cancelled[i] = true
	r.cancel()
	l.m.setOwned(i, false)
	l.log.V(2).Info("Stopping shard", "shard", i)
}

func (l *loop) onShardExit(ex shardExit) {
	i := ex.shard
	if l.shardRun[i] != ex.run {
		return
	}
	delete(l.shardRun, i)
	delete(l.s.running, i)
	delete(l.s.cancelled, i)
	l.m.setOwned(i, false)
	switch {
	case ex.panicked != nil:
		l.log.Error(fmt.Errorf("%v", ex.panicked), "OnShardStarted panicked; recovered, restarting the shard after RetryPeriod", "shard", i, "stack", string(ex.stack))
	case !ex.run.cancelled && l.cur != nil && l.cur.ctx.Err() == nil:
		l.log.Info("OnShardStarted returned while the shard is still this member's; restarting it after RetryPeriod", "shard", i)
	default:
		l.log.V(2).Info("Shard stopped", "shard", i)
		return
	}
	l.s.holdOff[i] = l.clock.Now().Add(l.cfg.RetryPeriod)
}

// deleteOwnLease removes this member's released Lease when Run ends after
// handing over, so that members with one-off identities leave nothing
// behind. Best effort: it needs 'delete', and keeps a Lease that is held.
func (l *loop) deleteOwnLease() {
	ctx, cancel := l.reqCtx()
	defer cancel()
	lease, err := l.leases.Get(ctx, l.m.leaseName, metav1.GetOptions{})
	if err != nil || leaserecord.Holder(lease) != "" || lease.ResourceVersion == "" {
		return
	}
	err = l.leases.Delete(ctx, l.m.leaseName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr.To(lease.ResourceVersion)}})
	if err != nil && !apierrors.IsNotFound(err) {
		l.log.V(2).Info("Could not delete this member's released Lease; it stays, unlabelled and unused", "err", err.Error())
	}
}
