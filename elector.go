package leasehold

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Elector campaigns for one Lease and runs the leader's work while it holds
// it. Create one with New and start it with Run. Its methods are safe for
// concurrent use.
//
// The state machine:
//
//	follower ──(lease free, released to us, or expired by our clock)──▶ candidate
//	candidate ──(conditional write wins)──▶ leader (a term starts)
//	candidate ──(write conflicts: somebody else wrote)──▶ follower
//	leader ──(renew deadline passed, other holder seen, lease deleted)──▶ stopping (lost)
//	leader ──(Run's ctx cancelled, Yield, annotation, or the work returned)──▶ stopping (stepping down)
//	stopping ──(work returned, safety margin or StepDownTimeout ran out)──▶ Run returns, or follower if Rejoin or a yield
//
// Run's goroutine owns the state. Run reads campaign → term → rejoin; a
// run is follower and candidate (campaign), and a term is leader and
// stopping, ended by one of its small methods: lose, stepDown or giveUp.
type Elector struct {
	cfg   Config
	t     timings
	lock  *LeaseLock
	clock clock.WithTicker
	// boot reads the time since boot, suspend included; nil if unknown
	// (instant.go).
	boot func() time.Duration

	running atomic.Bool

	// coord is set by NewCoordinated: coordinated election (KEP-4355),
	// coordinated.go. nil for New's Elector; its methods are no-ops then.
	coord *coordination

	health apiHealth

	// specPreferenceDropped is set once a release that wrote
	// spec.preferredHolder got an answer without it: the API server drops
	// the field, and later releases name the successor in the annotation
	// only (decide.go, writesSpecPreference).
	specPreferenceDropped atomic.Bool

	mu     sync.Mutex
	status status
}

// status is what IsLeader, Leader and Check report. Guarded by Elector.mu.
type status struct {
	leading       bool
	lastRenewSent instant        // send time of the last successful write of our term
	holder        string         // last observed holder
	seenVersion   string         // versionOf the newest Lease seen
	term          *publishedTerm // the current term, while leading
	// workOverdue is set while the work of a lost term is still running
	// after the safety margin ran out.
	workOverdue      bool
	workOverdueSince time.Time
}

// New validates cfg, fills in its defaults, and returns an Elector. On a bad
// config it returns a nil Elector and one error, wrapping ErrInvalidConfig,
// that names every problem found.
func New(cfg Config) (*Elector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Elector{
		cfg:   cfg,
		lock:  cfg.Lock,
		clock: cfg.Clock,
		boot:  bootReader(cfg.Clock),
		t: timings{
			leaseDuration: cfg.LeaseDuration,
			renewDeadline: cfg.RenewDeadline,
			retryPeriod:   cfg.RetryPeriod,
		},
	}
	cfg.Metrics.LeaderChanged(cfg.Name, false)
	return e, nil
}

// RunOrDie builds an Elector from cfg and runs it until ctx is cancelled.
// If cfg is invalid or Run returns an error, it logs the error and exits the
// process with status 1, so a supervisor (the kubelet) restarts it.
func RunOrDie(ctx context.Context, cfg Config) {
	if err := Run(ctx, cfg); err != nil {
		klog.FromContext(ctx).Error(err, "Leader election ended")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
}

// IsLeader reports whether this process holds the lease now: it won the
// last term it campaigned for, it has not stepped down, and its last
// successful renewal was sent less than RenewDeadline ago.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.leading && leaderValid(e.status.lastRenewSent, e.now(), e.t.renewDeadline)
}

// Term returns the current term while this process leads (as IsLeader
// reports), and false otherwise.
func (e *Elector) Term() (Term, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.status.term == nil || !e.status.leading || !leaderValid(e.status.lastRenewSent, e.now(), e.t.renewDeadline) {
		return Term{}, false
	}
	return e.status.term.info, true
}

// Leader returns the holder identity last observed on the Lease, "" if none
// was seen yet or the Lease was released.
func (e *Elector) Leader() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.holder
}

// Run campaigns for the lease and, while it leads, runs
// Callbacks.OnStartedLeading. It returns:
//   - nil when ctx is cancelled (after stepping down cleanly if leading);
//   - an error wrapping ErrLeaderLost when a term ended by losing the lease;
//   - an error wrapping ErrWorkReturned or ErrWorkPanicked when the work
//     ended on its own while leading;
//   - an error wrapping ErrIdentityConflict when another live process uses
//     this identity;
//   - an error wrapping ErrStepDownTimeout when the work did not return
//     within StepDownTimeout of a step-down (exit the process then);
//
// A term that ended with a Yield (Elector.Yield or the annotation) is
// always followed by a new campaign: a yield moves leadership, not the
// process. With Config.Rejoin, a term that ends with an error (other than
// an identity conflict or a step-down timeout) is followed by a new
// campaign too. A second Run while one is active returns
// ErrAlreadyRunning.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer e.running.Store(false)

	log := klog.FromContext(ctx).WithName("leasehold").WithValues("lease", e.cfg.Name, "identity", e.lock.Identity)
	ctx = klog.NewContext(ctx, log)
	ctx, stopCandidate := e.coord.start(ctx) // coordinated election (coordinated.go); no-op when nil
	defer stopCandidate()
	r := e.startRun(ctx, log)
	defer r.close()

	for {
		log.Info("Campaigning for the lease")
		acquired, err := r.campaign(ctx)
		if err != nil || !acquired {
			return err
		}
		if ctx.Err() != nil {
			// Won the lease just as we were told to stop: no work ran.
			if e.cfg.ReleaseOnCancel {
				_ = r.release(ctx, r.acquiredAt, "", time.Time{})
			}
			return nil
		}
		err = r.lead(ctx)
		if errors.Is(err, errYielded) {
			// A yield moves leadership, not the process: follow again,
			// whatever Rejoin says (the term sat us out, see sitOut).
			if ctx.Err() != nil {
				return nil
			}
			log.Info("Yielded the lease; following again")
			continue
		}
		if err == nil || !e.cfg.Rejoin || errors.Is(err, ErrIdentityConflict) || errors.Is(err, ErrStepDownTimeout) {
			return err
		}
		if r.overdueWork != nil {
			log.Info("Waiting for the previous term's work to return before campaigning again")
			select {
			case <-r.overdueWork:
				r.overdueWork = nil
			case <-ctx.Done():
				return err
			}
		}
		log.Info("Term ended; campaigning again", "reason", err.Error())
		if !sleep(ctx, e.clock, e.t.retryPeriod) {
			return nil
		}
	}
}

// run is the state of one Run call, owned by Run's goroutine.
type run struct {
	e   *Elector
	log logr.Logger

	view leaseView
	// seen is set once the first observation arrived.
	seen bool
	// foreignSelf is set when the Lease names our identity but we did not
	// write it: another process, or a previous incarnation of this one.
	foreignSelf bool
	// stamps are the renewTimes of our recent writes. A Lease naming us
	// with one of them is ours even if the write's answer was lost.
	stamps [8]time.Time
	next   int
	// sitOutUntil and sitOutVersion are set by a yield: while the Lease
	// is still at sitOutVersion (nobody wrote since the release, or since
	// our last renewal if the release failed), this process writes nothing
	// before sitOutUntil, so that the successor, or another candidate,
	// takes it. Any newer version ends the sit-out.
	sitOutUntil   time.Time
	sitOutVersion string
	// quickReturns counts terms in a row whose work returned on its own
	// within a RetryPeriod of starting.
	quickReturns int
	// lastHolder is the holder of the newest Lease seen, for the log.
	lastHolder string
	// versionless is set once a Lease without a resourceVersion was seen
	// (and said so in the log): the server cannot order or guard writes.
	versionless bool
	// recent are the versions (versionOf) of the last versionless Leases
	// seen. Without resourceVersions a watch may still deliver a version
	// this process has seen replaced (client-go's fakes send the state at
	// the watch's start as an ADDED event); one found here is stale. An
	// election never writes a version twice: each write has a new
	// renewTime, and each term a new leaseTransitions. Only a hand edit
	// undone with nothing in between (an annotation added, then removed)
	// brings one back, and that undo is then missed: a cost paid on
	// fakes only, which cannot order writes at all.
	recent     [8]string
	nextRecent int
	// acquiredAt is the send time of the write that won the current term.
	acquiredAt instant
	// holdUntil, if set, is when the work of a term this process wins may
	// start: a holder whose Lease was deleted may work until then. Either
	// the deletion was seen (markGone: that holder's claim), or the watch
	// showed another holder's Lease created and deleted while our create
	// was in flight (heldBack). A Lease won before then is kept by
	// renewals that start no term; holdSaid is set once that was logged.
	holdUntil time.Time
	holdSaid  bool
	// overdueWork, if set, closes when the work of a lost term that
	// outlived the safety margin finally returns. No new term starts
	// before that: one process never runs two works.
	overdueWork <-chan struct{}

	observations mailbox
	notifier     *leaderNotifier
	stopObserver context.CancelFunc
	observerDone chan struct{}
}

func (e *Elector) startRun(ctx context.Context, log logr.Logger) *run {
	r := &run{
		e:            e,
		log:          log,
		observations: newMailbox(),
		notifier:     newLeaderNotifier(log, e.cfg.Callbacks.OnNewLeader),
		observerDone: make(chan struct{}),
	}
	// The observer outlives Run's ctx: a leader that is stepping down
	// keeps watching until its work has returned.
	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stopObserver = cancel
	o := &observer{
		lock:        e.lock,
		clock:       e.clock,
		retryPeriod: e.t.retryPeriod,
		timeout:     e.t.requestTimeout(),
		log:         log,
		out:         r.observations,
		shared:      e.cfg.SharedWatch,
		health:      &e.health,
	}
	go func() {
		defer close(r.observerDone)
		o.run(octx)
	}()
	return r
}

func (r *run) close() {
	r.stopObserver()
	<-r.observerDone
	r.notifier.close()
}

// campaign is the follower and candidate states. It returns true once this
// process wrote itself as holder, false with a nil error when ctx ended
// first, and an error wrapping ErrIdentityConflict if it found another
// process using its identity.
func (r *run) campaign(ctx context.Context) (bool, error) {
	e := r.e
	timer := e.clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	retry := newBackoff(e.clock, e.t.retryPeriod/4, e.t.retryPeriod)
	var notBefore time.Time // after a failed write, no new write before this
	failures := newErrorStreak(e.clock, r.log, "Cannot acquire the lease; retrying with backoff")
	failures.health = &e.health

	for {
		if ctx.Err() != nil {
			return false, nil
		}
		// Fold in an observation already waiting before deciding: the
		// decision must not act on a view the mailbox already replaced.
		select {
		case obs := <-r.observations:
			if err := r.observe(obs); err != nil {
				return false, err
			}
		default:
		}
		now := e.clock.Now()
		act, at := actWait, now.Add(time.Hour)
		if r.seen {
			act, at = decideCampaign(r.view, e.lock.Identity, r.foreignSelf, now, e.t.leaseDuration)
			act, at = e.coord.decide(r, now, act, at) // coordinated election (coordinated.go); no-op when nil
			if act != actWait && now.Before(notBefore) {
				act, at = actWait, notBefore
			}
			if act != actWait && r.sittingOut(now) && !namesUs(r.view.lease, e.lock.Identity) {
				// Sitting out after a yield, unless a release now
				// names this process as the successor.
				act, at = actWait, r.sitOutUntil
			}
		}
		if act != actWait {
			before := r.view
			won, err := r.acquire(ctx, act)
			switch {
			case won:
				failures.succeeded()
				if err := r.heldBack(act, before); err != nil {
					return false, err
				}
				if now := e.clock.Now(); now.Before(r.holdUntil) {
					if !r.holdSaid {
						r.holdSaid = true
						r.log.Info("Won the Lease, but the holder of a deleted Lease may still work; keeping the Lease without starting the work until its claim runs out",
							"until", r.holdUntil.Sub(now).Round(time.Millisecond))
					}
					notBefore = now.Add(min(r.holdUntil.Sub(now), e.t.retryPeriod))
					continue
				}
				r.holdUntil, r.holdSaid = time.Time{}, false
				return true, nil
			case err == nil:
				// Lost a race: somebody else wrote; the view is fresh.
				// If it shows nothing new, the next write would be the
				// same one: back off, so that no path loops.
				if sameView(before, r.view) {
					notBefore = e.clock.Now().Add(retry.delay())
				}
				continue
			case errors.Is(err, ErrIdentityConflict):
				return false, err
			default:
				failures.failed(err)
				notBefore = e.clock.Now().Add(retry.delay())
				continue
			}
		}
		timer.Reset(at.Sub(now))
		select {
		case <-ctx.Done():
			return false, nil
		case obs := <-r.observations:
			if err := r.observe(obs); err != nil {
				return false, err
			}
		case <-timer.C():
		}
	}
}

// heldBack looks, after a winning write, at what the watch delivered while
// the write was in flight. A create lands on a Lease that does not exist,
// so another candidate may have created the Lease, and an operator deleted
// it, between this process's decision and its write: a holder that may
// still be working. If the watch showed one (a held Lease newer than the
// view the decision was made on and older than our create), the work
// waits until that holder's claim has run out, counted from now, and the
// Lease is kept meanwhile (holdUntil). An update cannot land over an
// unseen holder: it is conditioned on the version decided on.
func (r *run) heldBack(act campaignAction, decidedOn leaseView) error {
	var obs observation
	select {
	case obs = <-r.observations:
	default:
		return nil
	}
	ours := r.view.lease
	if act == actCreate && ours.ResourceVersion != "" {
		now := r.e.clock.Now()
		for _, l := range append(obs.superseded, obs.seen()) {
			switch {
			case l == nil || holderOf(l) == "" || l.ResourceVersion == "" || holderOf(l) == r.e.lock.Identity && r.isOurs(l),
				!newerVersion(ours.ResourceVersion, l.ResourceVersion),
				decidedOn.lease != nil && decidedOn.lease.ResourceVersion != "" && !newerVersion(l.ResourceVersion, decidedOn.lease.ResourceVersion):
				continue
			}
			if until := now.Add(claimDuration(l, r.e.t.leaseDuration)); until.After(r.holdUntil) {
				r.holdUntil, r.holdSaid = until, true
				r.log.Info("Created the Lease, but the watch showed another holder's Lease created and deleted while the create was in flight; keeping the Lease without starting the work until that claim runs out",
					"holder", holderOf(l), "until", until.Sub(now).Round(time.Millisecond))
			}
		}
	}
	return r.observe(obs)
}

// sitOut makes this process write nothing before until while the Lease
// stays at its current version, and says so.
func (r *run) sitOut(successor string, until time.Time, why string) {
	r.sitOutUntil, r.sitOutVersion = until, versionOf(r.view.lease)
	r.log.Info("Sitting out so that another candidate takes the Lease; any write by another ends it",
		"successor", printable(successor), "why", why, "until", until.Sub(r.e.clock.Now()).Round(time.Millisecond))
}

// sittingOut reports whether a yield's sit-out still holds at now.
func (r *run) sittingOut(now time.Time) bool {
	return now.Before(r.sitOutUntil) && !r.view.gone && versionOf(r.view.lease) == r.sitOutVersion
}

// takeoverCause says, for the log, why the Lease was free to take.
func takeoverCause(v leaseView, self string) string {
	switch holder := holderOf(v.lease); {
	case v.lease == nil:
		return "no Lease existed"
	case v.gone:
		return "the Lease was deleted (last holder " + printable(holder) + ")"
	case holder == "":
		return "the Lease was released"
	case holder == self && v.ours():
		return "it was ours"
	default:
		return "the claim of " + holder + " expired (no renewal seen for its lease duration)"
	}
}

// sameView reports whether two views show the same Lease state.
func sameView(a, b leaseView) bool {
	return versionOf(a.lease) == versionOf(b.lease) && a.gone == b.gone && a.goneFinal == b.goneFinal && a.goneOurs == b.goneOurs
}

// acquire makes one conditional write naming this process as holder. It
// returns true if it won. A lost race (conflict, already exists, gone) is
// not an error: it re-reads the Lease so the next decision is fresh.
func (r *run) acquire(ctx context.Context, act campaignAction) (bool, error) {
	e := r.e
	sent := e.now()
	now := sent.at
	cause := takeoverCause(r.view, e.lock.Identity)
	base := r.view.lease
	if act == actCreate {
		base = nil
	}
	// While holding back the work (heldBack), a write on our own Lease
	// keeps it without starting a term.
	holding := !r.holdUntil.IsZero() && act == actAcquire && holderOf(base) == e.lock.Identity && r.view.ours()
	desired := e.lock.claim(base, now, e.t.leaseDuration, !holding)
	r.remember(now)
	// The write is not cut short by ctx: if it lands, we must know.
	rctx, cancel := withClockTimeout(context.WithoutCancel(ctx), e.clock, e.t.requestTimeout())
	defer cancel()
	var got *coordinationv1.Lease
	var err error
	if act == actCreate {
		got, err = e.lock.create(rctx, desired)
	} else {
		got, err = e.lock.update(rctx, desired)
	}
	e.health.write(e.clock.Now(), err, act == actCreate)
	switch {
	case err == nil && holding:
		r.wrote(got)
		r.acquiredAt = sent
		r.log.V(2).Info("Renewed the Lease while the work is held back", "resourceVersion", got.ResourceVersion)
		return true, nil
	case err == nil:
		switch v := r.view; {
		case v.lease == nil || v.gone:
		case holderOf(v.lease) == "":
			e.cfg.Metrics.Takeover(e.cfg.Name, e.clock.Since(v.observedAt))
		case holderOf(v.lease) != e.lock.Identity || r.foreignSelf:
			e.cfg.Metrics.Takeover(e.cfg.Name, e.clock.Since(v.observedAt.Add(claimDuration(v.lease, e.t.leaseDuration))))
		}
		r.wrote(got)
		r.acquiredAt = sent
		e.cfg.Metrics.Transition(e.cfg.Name)
		r.log.Info("Acquired the lease", "leaseTransitions", transitionsOf(got), "via", act.String(), "because", cause)
		return true, nil
	case act == actCreate && apierrors.IsNotFound(err):
		return false, err // the namespace is missing: retry with backoff
	case apierrors.IsNotFound(err):
		// Deleted since we saw it: gone, with whoever wrote last unknown.
		r.markGone(nil, false)
		return false, nil
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		r.log.V(2).Info("Lost a race for the lease; re-reading", "via", act.String(), "err", err.Error())
		return false, r.reread(ctx, e.t.requestTimeout())
	default:
		return false, err
	}
}

// reread GETs the Lease after a lost race and folds it into the view. A
// leader's re-read is bounded by what is left of its renew deadline
// (timeout), so that the term's loop, which waits for it, still ends the
// term on time.
func (r *run) reread(ctx context.Context, timeout time.Duration) error {
	e := r.e
	rctx, cancel := withClockTimeout(context.WithoutCancel(ctx), e.clock, timeout)
	defer cancel()
	lease, err := e.lock.get(rctx)
	if err != nil {
		return err
	}
	e.cfg.Metrics.SlowPath(e.cfg.Name)
	return r.observe(observation{lease: lease, fresh: true})
}

// deadlinePassed is the error that ends a term at the renew deadline,
// with the last renewal's error, if any, as the cause.
func (r *run) deadlinePassed(lastErr error) error {
	if lastErr != nil {
		return fmt.Errorf("%w: no successful renewal within renewDeadline %v; last error: %w", ErrLeaderLost, r.e.t.renewDeadline, lastErr)
	}
	return fmt.Errorf("%w: no successful renewal within renewDeadline %v", ErrLeaderLost, r.e.t.renewDeadline)
}

// renew writes a new renewTime from the cached Lease, conditioned on our
// last write's resourceVersion: one Update, no GET on the happy path. It
// returns the send time on success, and an error wrapping ErrLeaderLost if
// the Lease is no longer ours. A renewal still unanswered after
// RetryPeriod is hedged (hedgedRenewal): both are conditioned on the same
// version, so at most one lands. by, if set, is the end of a step-down in
// progress: no hedge is sent after it, so the renewal ends within one
// request of it.
func (r *run) renew(ctx context.Context, lastSent instant, by time.Time) (instant, error) {
	e := r.e
	for attempt := 1; ; attempt++ {
		res := r.hedgedRenewal(ctx, lastSent, by)
		sent, got, err := res.sent, res.got, res.err
		switch {
		case err == nil:
			r.wrote(got)
			r.log.V(4).Info("Renewed the lease", "resourceVersion", got.ResourceVersion)
			return sent, nil
		case apierrors.IsNotFound(err):
			// Our renewal, conditioned on our own last write and sent
			// within the deadline, found nothing: that write was deleted,
			// and nobody can have held the Lease since.
			r.markGone(nil, true)
			return sent, fmt.Errorf("%w: the lease was deleted", ErrLeaderLost)
		case !apierrors.IsConflict(err):
			return sent, err
		}
		// Conflict: somebody wrote. Re-read and decide.
		left := e.t.renewDeadline - elapsed(lastSent, e.now())
		if left <= 0 {
			return sent, fmt.Errorf("renew conflicted at the renew deadline: %w", err)
		}
		if err := r.reread(ctx, min(e.t.requestTimeout(), left)); err != nil {
			if errors.Is(err, ErrIdentityConflict) {
				return sent, err
			}
			return sent, fmt.Errorf("renew conflicted and the re-read failed: %w", err)
		}
		if err := r.stillOurs(); err != nil {
			return sent, err
		}
		// Still ours (a write whose answer we lost, or a label edit):
		// retry once at once from the fresh copy.
		if attempt == 2 {
			return sent, fmt.Errorf("renew conflicted twice on a lease that is still ours")
		}
	}
}

// renewal is the outcome of one renewal request.
type renewal struct {
	sent instant
	got  *coordinationv1.Lease
	err  error
}

// hedgedRenewal sends a renewal and, if it is still unanswered after
// RetryPeriod, a second one from the same version: a request stuck on one
// connection or one slow API server instance then no longer costs the
// term, while a stall of the whole server (etcd's disk) delays both
// alike. It returns the first success or deletion, else a conflict if
// either conflicted (our own write may have landed: the caller re-reads),
// else the last error. Each request is bounded by what is left of the
// renew deadline, so this returns by lastSent + RenewDeadline; and no
// hedge is sent after by, if set.
func (r *run) hedgedRenewal(ctx context.Context, lastSent instant, by time.Time) renewal {
	e := r.e
	results := make(chan renewal, 2) // buffered: a late answer never blocks
	r.sendRenewal(ctx, lastSent, results)
	inFlight, hedged := 1, false
	hedge := e.clock.NewTimer(e.t.retryPeriod)
	defer hedge.Stop()
	var out renewal
	for inFlight > 0 {
		select {
		case res := <-results:
			inFlight--
			e.health.write(e.clock.Now(), res.err, false)
			e.cfg.Metrics.Renew(e.cfg.Name, e.clock.Since(res.sent.at), res.err)
			if res.err == nil || apierrors.IsNotFound(res.err) {
				return res
			}
			if out.err == nil || !apierrors.IsConflict(out.err) {
				out = res
			}
		case <-hedge.C():
			if !hedged && elapsed(lastSent, e.now()) < e.t.renewDeadline && (by.IsZero() || e.clock.Now().Before(by)) {
				hedged = true
				r.log.V(2).Info("Renewal unanswered after RetryPeriod; sending a second one from the same version", "retryPeriod", e.t.retryPeriod)
				r.sendRenewal(ctx, lastSent, results)
				inFlight++
			}
		}
	}
	return out
}

// sendRenewal sends one renewal from the cached Lease, bounded by the
// request timeout and what is left of the renew deadline, and puts its
// outcome on results.
func (r *run) sendRenewal(ctx context.Context, lastSent instant, results chan<- renewal) {
	e := r.e
	sent := e.now()
	desired := e.lock.claim(r.view.lease, sent.at, e.t.leaseDuration, false)
	r.remember(sent.at)
	// A hung request must fail before the deadline, with time to retry.
	timeout := min(e.t.requestTimeout(), e.t.renewDeadline-elapsed(lastSent, sent))
	go func() {
		rctx, cancel := withClockTimeout(context.WithoutCancel(ctx), e.clock, timeout)
		defer cancel()
		got, err := e.lock.update(rctx, desired)
		results <- renewal{sent: sent, got: got, err: err}
	}()
}

// stillOurs returns an error wrapping ErrLeaderLost unless the view shows
// the Lease as written by this process's current term.
func (r *run) stillOurs() error {
	v := r.view
	switch {
	case v.gone:
		return fmt.Errorf("%w: the lease was deleted", ErrLeaderLost)
	case holderOf(v.lease) != r.e.lock.Identity:
		return fmt.Errorf("%w: the lease is now held by %q", ErrLeaderLost, holderOf(v.lease))
	case !v.ours():
		return fmt.Errorf("%w: the lease was written by another process", ErrLeaderLost)
	}
	return nil
}

// release clears the holder with an update conditioned on our last write,
// so it can never blank another holder's lease, naming successor ("" for
// anyone) as the preferred holder. It retries transient errors while our
// claim is still valid and, if by is set (a step-down's StepDownTimeout),
// until by, and returns nil once the Lease is released.
func (r *run) release(ctx context.Context, lastSent instant, successor string, by time.Time) error {
	e := r.e
	if !r.view.ours() {
		return fmt.Errorf("%w: the lease changed since our last write", ErrLeaderLost)
	}
	retry := newBackoff(e.clock, e.t.retryPeriod/4, e.t.retryPeriod)
	for {
		sent := e.now()
		now := sent.at
		remaining := e.t.renewDeadline - elapsed(lastSent, sent)
		if remaining <= 0 {
			r.log.Info("Did not release the lease: renew deadline passed; it expires on its own")
			return fmt.Errorf("%w: renew deadline passed before the release", ErrLeaderLost)
		}
		if !by.IsZero() {
			if left := by.Sub(now); left <= 0 {
				r.log.Info("Did not release the lease: StepDownTimeout ran out; it expires on its own",
					"expiresIn", (e.t.leaseDuration - elapsed(lastSent, sent)).Round(time.Millisecond))
				return fmt.Errorf("%w: StepDownTimeout ran out before the release", ErrLeaderLost)
			} else if left < remaining {
				remaining = left
			}
		}
		rctx, cancel := withClockTimeout(context.WithoutCancel(ctx), e.clock, min(e.t.requestTimeout(), remaining))
		inSpec := writesSpecPreference(r.view.lease, successor, e.specPreferenceDropped.Load())
		got, err := e.lock.update(rctx, e.lock.released(r.view.lease, now, successor, inSpec))
		cancel()
		e.health.write(e.clock.Now(), err, false)
		switch {
		case err == nil:
			if inSpec && specPreferenceDropped(got, successor) && !e.specPreferenceDropped.Swap(true) {
				r.log.Info("The API server drops spec.preferredHolder (CoordinatedLeaderElection gate off); later releases name the successor in the annotation only",
					"annotation", PreferredHolderAnnotation)
			}
			r.view.lease, r.view.ownVersion, r.view.observedAt = got, "", now
			r.setSeen(got)
			r.log.Info("Released the lease", "successor", printable(successor))
			return nil
		case apierrors.IsNotFound(err):
			// Conditioned on our own last write: that write was deleted.
			r.markGone(nil, true)
			return fmt.Errorf("%w: %w", ErrLeaderLost, err)
		case apierrors.IsConflict(err):
			r.log.Info("Did not release the lease: it changed since our last write", "err", err.Error())
			return fmt.Errorf("%w: %w", ErrLeaderLost, err)
		case refusal(err, false):
			// Sending it again cannot succeed: end the release now. The
			// Lease keeps naming us until it expires.
			err = refusedError("the API server refused the release", err)
			e.health.refusedRelease(e.clock.Now(), err)
			r.log.Error(err, "Did not release the lease: refused for good, not retrying; it expires on its own",
				"expiresIn", (e.t.leaseDuration - elapsed(lastSent, e.now())).Round(time.Millisecond))
			return err
		}
		r.log.V(2).Info("Release failed; retrying", "err", err.Error())
		// The wait ends early at the bound, whose check above then ends
		// the release. It is measured on the clock alone, as remaining's
		// end is reached by the clock at the latest: never a zero wait.
		wctx, cancel := withClockTimeout(context.WithoutCancel(ctx), e.clock, remaining-e.clock.Since(now))
		retry.wait(wctx)
		cancel()
	}
}

// observe folds one observation into the view. Stale observations (older
// than what we have) are ignored. It returns an error wrapping
// ErrIdentityConflict if another process renewed the Lease under our
// identity.
func (r *run) observe(obs observation) error {
	now := r.e.clock.Now()
	v := &r.view
	r.seen = true
	if obs.lease == nil {
		switch {
		case v.lease == nil:
		case v.gone && obs.deleted && obs.final != nil && recordOf(obs.final) != recordOf(v.lease):
			// Another version was deleted since the deletion we knew of:
			// a Lease re-created and deleted again, its creation lost to
			// the newest-wins mailbox. Its holder's claim runs from now.
			r.markGone(obs.final, false)
		case v.gone:
		case obs.deleted && (obs.deletedRV == "" || v.lease.ResourceVersion == "" || newerVersion(obs.deletedRV, v.lease.ResourceVersion)):
			// A watched deletion, newer than what we have (or from a
			// server without resourceVersions, whose watch is ordered).
			r.markGone(obs.final, false)
		case !obs.deleted && (obs.fresh || !v.ours()):
			// A GET found nothing. A poll may have been sent before our
			// own last write landed (the renew loop checks that for
			// itself); a re-read after a lost race may not.
			r.markGone(nil, false)
		}
		return nil
	}
	if v.lease != nil && (!newerLease(obs.lease, v.lease) || r.seenBefore(obs.lease)) {
		return nil
	}
	r.noteVersionless(obs.lease)
	prev := v.lease
	v.lease, v.gone, v.observedAt = obs.lease, false, now
	holder := holderOf(obs.lease)
	r.setSeen(obs.lease)

	self := r.e.lock.Identity
	switch {
	case holder != self:
		r.foreignSelf = false
	case r.isOurs(obs.lease):
		v.ownVersion = versionOf(obs.lease)
		r.foreignSelf = false
	case prev != nil && holderOf(prev) == self:
		return fmt.Errorf("%w: identity %q: another live process renewed the lease under this identity; give each process a unique Lock.Identity",
			ErrIdentityConflict, self)
	default:
		r.foreignSelf = true
		if !r.e.coord.assigned(obs.lease) { // coordinated election (coordinated.go): a term assigned to us
			r.log.Info("The lease names this identity but was not written by this process; treating it as held by another process until it expires",
				"holder", holder)
		}
	}
	return nil
}

// markGone records that the Lease was deleted (the deletion rule, see
// decideCampaign). final is the deleted object's last state if known (a
// DELETE event carries it): if it is the version already in the view, its
// claim still runs from when that version was first seen; otherwise the
// claim of whoever wrote last runs from now, when this process learned of
// the deletion. ours says the deleted version was this process's own write.
func (r *run) markGone(final *coordinationv1.Lease, ours bool) {
	now := r.e.clock.Now()
	v := &r.view
	switch {
	case final != nil && v.lease != nil && recordOf(final) == recordOf(v.lease):
		// The version in the view was deleted: if it is our own write,
		// nobody held the Lease after it.
		v.goneFinal, ours = true, ours || v.ours()
	case final != nil:
		v.lease, v.observedAt, v.goneFinal = final, now, true
	default:
		v.observedAt, v.goneFinal = now, false
	}
	v.gone, v.goneOurs = true, ours
	r.e.mu.Lock()
	r.e.status.holder = ""
	r.e.mu.Unlock()
	r.lastHolder = ""
	r.notifier.holderSeen("")
	if act, at := decideCampaign(*v, r.e.lock.Identity, r.foreignSelf, now, r.e.t.leaseDuration); act == actWait {
		r.log.Info("The Lease was deleted; waiting out the last holder's claim before creating it",
			"lastHolder", printable(holderOf(v.lease)), "until", at.Sub(now).Round(time.Millisecond))
		// That holder may work until its claim runs out, whatever the
		// Lease's later versions say (a process that never saw it may
		// create the Lease and release it): no work starts here before.
		if at.After(r.holdUntil) {
			r.holdUntil = at
		}
	} else {
		r.log.Info("The Lease was deleted", "lastHolder", printable(holderOf(v.lease)), "ours", ours)
	}
}

// wrote records the answer to one of our successful writes.
func (r *run) wrote(lease *coordinationv1.Lease) {
	r.noteVersionless(lease)
	r.view = leaseView{lease: lease, observedAt: r.e.clock.Now(), ownVersion: versionOf(lease)}
	r.seen, r.foreignSelf = true, false
	r.setSeen(lease)
}

// noteVersionless logs, once per Run, that the server returns Leases
// without a resourceVersion, as client-go's fake clientsets do.
func (r *run) noteVersionless(lease *coordinationv1.Lease) {
	if r.versionless || lease.ResourceVersion != "" {
		return
	}
	r.versionless = true
	r.log.V(1).Info("The server returns Leases without resourceVersion (a fake clientset?): writes are unconditional and concurrent writers cannot be detected. Test races with leaseholdtest.Server")
}

// remember keeps the renewTime of a write we are about to send.
func (r *run) remember(t time.Time) {
	r.stamps[r.next] = t.Truncate(time.Microsecond)
	r.next = (r.next + 1) % len(r.stamps)
}

// isOurs reports whether lease carries the renewTime of one of our recent
// writes: its answer may have been lost to a timeout, but it landed.
func (r *run) isOurs(lease *coordinationv1.Lease) bool {
	if r.view.ownVersion != "" && versionOf(lease) == r.view.ownVersion {
		return true
	}
	if lease.Spec.RenewTime == nil {
		return false
	}
	t := lease.Spec.RenewTime.Time.Truncate(time.Microsecond)
	for _, s := range r.stamps {
		if !s.IsZero() && s.Equal(t) {
			return true
		}
	}
	return false
}

// seenBefore reports whether lease is a versionless Lease this process has
// already seen (and since seen replaced): a stale delivery.
func (r *run) seenBefore(lease *coordinationv1.Lease) bool {
	if lease.ResourceVersion != "" {
		return false
	}
	version := versionOf(lease)
	for _, v := range r.recent {
		if v != "" && v == version {
			return true
		}
	}
	return false
}

// setSeen publishes the newest Lease this process has seen: its holder
// for Leader and OnNewLeader, its version for tests that wait until every
// candidate has caught up with the server.
func (r *run) setSeen(lease *coordinationv1.Lease) {
	if lease.ResourceVersion == "" {
		r.recent[r.nextRecent] = versionOf(lease)
		r.nextRecent = (r.nextRecent + 1) % len(r.recent)
	}
	holder := holderOf(lease)
	if holder != r.lastHolder {
		switch self := r.e.lock.Identity; {
		case holder != "" && holder != self:
			r.log.Info("Following the leader", "holder", holder)
		case holder == "" && r.lastHolder != "" && r.lastHolder != self:
			to, _ := preferredHolder(lease)
			r.log.Info("Lease released", "by", r.lastHolder, "successor", printable(to))
		}
		r.lastHolder = holder
	}
	r.e.mu.Lock()
	r.e.status.holder = holder
	r.e.status.seenVersion = versionOf(lease)
	r.e.mu.Unlock()
	r.notifier.holderSeen(holder)
}

// seenVersion returns the version of the newest Lease this process has
// seen, "" if none.
func (e *Elector) seenVersion() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.seenVersion
}

// setLeading updates the status IsLeader, Term and Yield read. A zero
// lastSent keeps the previous value.
func (e *Elector) setLeading(leading bool, lastSent instant, term *publishedTerm) {
	e.mu.Lock()
	changed := e.status.leading != leading
	e.status.leading = leading
	e.status.term = term
	if !lastSent.IsZero() {
		e.status.lastRenewSent = lastSent
	}
	e.mu.Unlock()
	if changed {
		e.cfg.Metrics.LeaderChanged(e.cfg.Name, leading)
	}
}

// publishedTerm is what a term in progress shows the Elector's methods.
type publishedTerm struct {
	info   Term
	yields chan<- *yieldRequest // Yield's requests to the term
	ended  <-chan struct{}      // closed when the term ends
}

// setRenewed records the send time of a successful renewal.
func (e *Elector) setRenewed(sent instant) {
	e.mu.Lock()
	e.status.lastRenewSent = sent
	e.mu.Unlock()
}

// workOutlived marks the work of a lost term as overdue until it returns,
// so Check fails meanwhile. The returned channel closes when it returns.
func (e *Elector) workOutlived(work <-chan workResult) <-chan struct{} {
	e.mu.Lock()
	e.status.workOverdue = true
	e.status.workOverdueSince = e.clock.Now()
	e.mu.Unlock()
	returned := make(chan struct{})
	go func() {
		<-work
		e.mu.Lock()
		e.status.workOverdue = false
		e.mu.Unlock()
		close(returned)
	}()
	return returned
}

// Run builds an Elector from cfg and runs it: RunOrDie that returns the
// error instead of exiting (New's error for a bad config, else Run's).
func Run(ctx context.Context, cfg Config) error {
	e, err := New(cfg)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}
