package shard

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold"
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
