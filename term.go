package leasehold

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/internal/retry"
)

// Term is one leadership term of this process on a Lease: from the write
// that won it to the moment the work's context is cancelled.
//
// Transitions is the term's fencing token. It strictly increases from one
// term to the next on a Lease, whichever leasehold process wins, so a
// store that remembers the highest token it has seen can refuse writes
// from a deposed leader. The token is not enough on its own when:
//   - the Lease is deleted and re-created: its count starts again, and
//     only UID tells the two objects apart, so fence on (UID, Transitions);
//   - client-go electors share the Lease (a mixed fleet during a
//     migration): they increment leaseTransitions only when the holder
//     changes, so a client-go replica re-acquiring its own lease reuses
//     the number.
type Term struct {
	// Lease is the Lease's "namespace/name".
	Lease string
	// Holder is this process's identity, as written in the Lease.
	Holder string
	// Transitions is spec.leaseTransitions as set by the write that won
	// the term: the fencing token.
	Transitions int32
	// AcquiredAt is the send time of that write, on the elector's clock.
	AcquiredAt time.Time
	// UID is the Lease object's UID. It changes when the Lease is deleted
	// and re-created, which restarts Transitions.
	UID types.UID
	// ResourceVersion is the Lease's resourceVersion as written by the
	// winning write ("" on a server that returns none).
	ResourceVersion string
}

// String renders the term for logs, as "ns/name#transitions@holder".
func (t Term) String() string {
	return fmt.Sprintf("%s#%d@%s", t.Lease, t.Transitions, t.Holder)
}

type termKey struct{}

// TermFromContext returns the term carried by the ctx that
// OnStartedLeading receives, and false for any other ctx.
func TermFromContext(ctx context.Context) (Term, bool) {
	t, ok := ctx.Value(termKey{}).(Term)
	return t, ok
}

// term is one leadership term in progress: the work and its cancel, the
// send time of the last successful write, the renew and deadline timers,
// and how the term is ending. Run's goroutine owns it. It ends in one of
// three ways, each a method: lose (the lease is gone: cancel, wait at most
// the safety margin, never release), stepDown (the work returned while the
// lease was ours: release if asked, or always when it ended on its own),
// and giveUp (stepping down took longer than StepDownTimeout: stop
// renewing without releasing).
type term struct {
	r     *run
	e     *Elector
	log   logr.Logger
	info  Term
	clock clock.WithTicker

	work       <-chan workResult
	cancelWork context.CancelFunc
	// lastSent is the send time of the last successful write of the term.
	lastSent instant
	// lastErr is the error of the last failed renewal since the last
	// success, the cause reported if the deadline passes.
	lastErr error
	// stepping is set once the term is ending on purpose (Run's ctx
	// cancelled, or a yield) and the work is being waited for.
	stepping      bool
	steppingSince time.Time
	// yield is set while handing the Lease over to a successor;
	// yieldAnswered once its caller was told the outcome.
	yield         *yieldRequest
	yieldAnswered bool

	renewAt, deadline clock.Timer
	failures          *retry.Streak
	// atRisk is set while renewals are answered with less than half of
	// RenewDeadline to spare (noteHeadroom).
	atRisk bool
}

// lead is the leader and stopping states. It starts the work, renews from
// the cached Lease every RetryPeriod, and ends the term when the lease is
// lost, the work returns, Run's ctx is cancelled or a yield is asked for.
// It returns how the term ended; it writes none of Run's state.
func (r *run) lead(ctx context.Context) ending {
	e := r.e
	if ctx.Err() != nil {
		// Won the lease just as we were told to stop: no work runs.
		if e.cfg.ReleaseOnCancel {
			_ = r.release(ctx, r.acquiredAt, "", time.Time{})
		}
		return ending{}
	}
	if !leaderValid(r.acquiredAt, e.now(), e.t.renewDeadline) {
		// Paused between the winning write and here: the term may
		// already be another's. Start nothing.
		r.log.Info("Won the lease but the renew deadline passed before the work could start; not starting it")
		return ending{err: r.deadlinePassed(nil)}
	}
	t := &term{
		r: r, e: e, clock: e.clock,
		lastSent: r.acquiredAt,
		info: Term{
			Lease:       e.lock.Namespace + "/" + e.lock.Name,
			Holder:      e.lock.Identity,
			Transitions: leaserecord.Transitions(r.view.lease),
			AcquiredAt:  r.acquiredAt.at,
			UID:         r.view.lease.UID,
			// The view is the winning write's answer.
			ResourceVersion: r.view.lease.ResourceVersion,
		},
	}
	t.log = r.log.WithValues("leaseTransitions", t.info.Transitions)
	return t.run(ctx)
}

func (t *term) run(ctx context.Context) ending {
	e, r := t.e, t.r
	yields, ended := make(chan *yieldRequest), make(chan struct{})
	defer close(ended)
	e.setLeading(true, t.lastSent, &publishedTerm{info: t.info, yields: yields, ended: ended})
	e.lock.recordEvent(r.view.lease, "LeaderElection", "became leader")

	workCtx, cancelWork := context.WithCancel(context.WithValue(ctx, termKey{}, t.info))
	defer cancelWork()
	t.cancelWork = cancelWork
	t.work = startWork(workCtx, e.cfg.Callbacks.OnStartedLeading)

	now := t.clock.Now()
	t.renewAt = t.clock.NewTimer(t.lastSent.at.Add(e.t.retryPeriod).Sub(now))
	defer t.renewAt.Stop()
	t.deadline = t.clock.NewTimer(t.lastSent.at.Add(e.t.renewDeadline).Sub(now))
	defer t.deadline.Stop()
	t.failures = newStreak(t.clock, t.log, "Cannot renew the lease; retrying until the renew deadline", &e.health)

	// When Run's ctx is cancelled, on the clock: StepDownTimeout counts
	// from then, even if a renewal in flight kept this loop from seeing
	// the cancellation at once.
	var cancelledAt atomic.Pointer[time.Time]
	defer context.AfterFunc(ctx, func() { now := t.clock.Now(); cancelledAt.Store(&now) })()

	cancelled := ctx.Done()
	renewC := t.renewAt.C()
	var giveUp, report <-chan time.Time
	for {
		// Before anything else, and especially after this process was
		// paused: if the deadline passed by our clock, the term is over,
		// whichever timer or event the select would pick first.
		if !t.valid() {
			return t.lose(r.deadlinePassed(t.lastErr))
		}
		if !t.stepping {
			if to, ok := preferredSuccessor(r.view.lease, e.lock.Identity); ok {
				t.log.Info("The Lease asks for a handoff; yielding", "to", printable(to))
				t.beginStepDown(&yieldRequest{to: to})
			}
		}
		if t.stepping && giveUp == nil {
			giveUp, report = t.stepDownTimers()
		}
		if t.stepping && !t.clock.Now().Before(t.steppingSince.Add(e.cfg.StepDownTimeout)) {
			// Checked before the select, which may pick a renewal that
			// is due at the same instant: Run never overruns the bound.
			return t.giveUp()
		}
		select {
		case <-cancelled:
			cancelled = nil
			if t.stepping {
				// Already stepping down for a yield: carry it on (its
				// caller is answered, the successor named).
				continue
			}
			select {
			case res := <-t.work:
				// The work saw the cancellation first and has returned:
				// nothing to wait for.
				t.log.Info("Context cancelled; OnStartedLeading has returned, stepping down")
				return t.stepDown(ctx, res, true)
			default:
			}
			t.log.Info("Context cancelled; waiting for OnStartedLeading to return before stepping down",
				"stepDownTimeout", e.cfg.StepDownTimeout)
			t.beginStepDown(nil)
			if at := cancelledAt.Load(); at != nil && at.Before(t.steppingSince) {
				t.steppingSince = *at
			}

		case req := <-yields:
			if t.stepping {
				req.done <- fmt.Errorf("%w: already stepping down", ErrNotLeading)
				continue
			}
			t.log.Info("Yielding the lease", "to", printable(req.to))
			t.beginStepDown(req)

		case res := <-t.work:
			// The work may have returned because ctx was cancelled before
			// this loop saw the cancellation: that is a step-down too.
			return t.stepDown(ctx, res, t.stepping || ctx.Err() != nil)

		case <-report:
			waited := t.clock.Since(t.steppingSince)
			t.log.Info("Still waiting for OnStartedLeading to return; renewing meanwhile",
				"waited", waited.Round(time.Second), "stepDownTimeout", e.cfg.StepDownTimeout)
			report = t.clock.After(stepDownReportEvery)

		case <-giveUp:
			return t.giveUp()

		case <-t.deadline.C():
			if t.valid() {
				continue // a stale fire from before the last renewal
			}
			return t.lose(r.deadlinePassed(t.lastErr))

		case <-renewC:
			renewC = t.renewAt.C()
			if !t.valid() {
				continue // overdue after a pause: the check above ends the term
			}
			var err error
			if renewC, err = t.renew(ctx); err != nil {
				return t.lose(err)
			}

		case obs := <-r.observations:
			if err := r.observe(obs); err != nil {
				return t.lose(fmt.Errorf("%w: %w", ErrLeaderLost, err))
			}
			if err := r.stillOurs(); err != nil {
				return t.lose(err)
			}
		}
	}
}

// stepDownReportEvery is how often a step-down that waits for the work
// says so in the log.
const stepDownReportEvery = 5 * time.Second

// valid reports whether the term still leads by this process's clock.
func (t *term) valid() bool {
	return leaderValid(t.lastSent, t.e.now(), t.e.t.renewDeadline)
}

// beginStepDown cancels the work; the term keeps renewing until the work
// returns. y, if set, is the yield being carried out.
func (t *term) beginStepDown(y *yieldRequest) {
	t.stepping, t.steppingSince, t.yield = true, t.clock.Now(), y
	if y != nil {
		t.e.termMetrics().Yield(t.e.cfg.Name, YieldRequested)
	}
	t.cancelWork()
}

// stepDownBy is when a step-down in progress must end (StepDownTimeout
// after it began), and zero when the term is not stepping down.
func (t *term) stepDownBy() time.Time {
	if !t.stepping {
		return time.Time{}
	}
	return t.steppingSince.Add(t.e.cfg.StepDownTimeout)
}

// stepDownTimers returns the channels that bound and report a step-down.
func (t *term) stepDownTimers() (giveUp, report <-chan time.Time) {
	return t.clock.After(t.stepDownBy().Sub(t.clock.Now())), t.clock.After(stepDownReportEvery)
}

// renew makes one renewal attempt and re-arms the timers. It returns the
// channel to wait on for the next attempt, and an error only when the
// lease is lost.
func (t *term) renew(ctx context.Context) (<-chan time.Time, error) {
	e := t.e
	attempt := t.clock.Now()
	sent, err := t.r.renew(ctx, t.lastSent, t.stepDownBy())
	now := t.clock.Now()
	switch {
	case err == nil:
		t.failures.Succeeded()
		t.lastErr = nil
		t.noteHeadroom(deadlineLeft(t.lastSent, e.now(), e.t.renewDeadline))
		t.lastSent = sent
		e.setRenewed(sent)
		t.deadline.Reset(sent.at.Add(e.t.renewDeadline).Sub(now))
		t.renewAt.Reset(sent.at.Add(e.t.retryPeriod).Sub(now))
		return t.renewAt.C(), nil
	case errors.Is(err, ErrLeaderLost), errors.Is(err, ErrIdentityConflict):
		return nil, err
	}
	t.failures.Failed(err)
	t.lastErr = err
	// Retry one RetryPeriod after the failed attempt was sent: at once if
	// it hung that long, so a stalled server gets every chance before the
	// deadline.
	next := attempt.Add(e.t.retryPeriod)
	if dl := t.lastSent.at.Add(e.t.renewDeadline); dl.Before(next) {
		next = dl
	}
	if d := next.Sub(now); d > 0 {
		t.renewAt.Reset(d)
		return t.renewAt.C(), nil
	}
	return fired, nil
}

// noteHeadroom reports a successful renewal's headroom (how much of
// RenewDeadline was left when its answer came) to TermMetrics, and logs
// once when it falls below half of RenewDeadline (the term is at risk if
// the API server stays that slow) and once when it is back above.
func (t *term) noteHeadroom(headroom time.Duration) {
	e := t.e
	e.termMetrics().RenewHeadroom(e.cfg.Name, headroom)
	switch risky := headroom < e.t.renewDeadline/2; {
	case risky && !t.atRisk:
		t.log.Info("The term is at risk: this renewal's answer came with little of the renew deadline left; a slower API server would end the term",
			"headroom", headroom.Round(time.Millisecond), "renewDeadline", e.t.renewDeadline)
	case !risky && t.atRisk:
		t.log.Info("Renewals are answered in time again", "headroom", headroom.Round(time.Millisecond))
	}
	t.atRisk = headroom < e.t.renewDeadline/2
}

// fired is a channel that is always ready, for "act now" in a select.
var fired = func() chan time.Time { c := make(chan time.Time); close(c); return c }()
