package leasehold

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// How a term ends, each way a method of the term: lose (the Lease is
// gone: cancel, wait at most the safety margin, never release), giveUp
// (the work outlived StepDownTimeout: stop renewing without releasing)
// and stepDown (the work returned while the Lease was ours: release), and
// what every ending does (answerYield, stopped). Each returns an ending to
// Run, which acts on it (again).

// ending is how a term ended, as Run needs to know it.
type ending struct {
	// err is what Run reports: nil after a clean step-down on cancel,
	// errYielded (wrapped) after a yield.
	err error
	// overdue, if set, closes when the work of a term that outlived it
	// finally returns. No new term starts before that: one process never
	// runs two works.
	overdue <-chan struct{}
	// sitOut, if set, is the sit-out a yield asks of this process (see
	// run.sitOut).
	sitOut *sitOut
}

// sitOut is a yield's request that this process write nothing before
// until while the Lease stays at the version it has now, so that
// successor, or another candidate, takes it.
type sitOut struct {
	successor string
	until     time.Time
	why       string
}

// lose ends a term whose lease is lost: the work's ctx is cancelled at
// once, the work gets at most the safety margin to return, and the lease is
// never released (it may already be another's).
func (t *term) lose(cause error) ending {
	e := t.e
	t.cancelWork()
	e.setLeading(false, instant{}, nil)
	t.log.Info("Lost the lease; cancelled the work", "reason", cause.Error(), "safetyMargin", e.t.safetyMargin())

	// The work gets the safety margin, and no more than what is left of
	// StepDownTimeout if the term was already stepping down: Run returns
	// within StepDownTimeout of its ctx's cancellation whichever way the
	// term ends (a renewal in flight at the bound may add one request).
	wait, stepDownEnds := e.t.safetyMargin(), false
	if t.stepping {
		if left := t.steppingSince.Add(e.cfg.StepDownTimeout).Sub(t.clock.Now()); left < wait {
			wait, stepDownEnds = max(left, 0), true
		}
	}
	var err error
	var overdue <-chan struct{}
	grace := t.clock.NewTimer(wait)
	defer grace.Stop()
	select {
	case <-t.work:
	case <-grace.C():
		overdue = e.workOutlived(t.work)
		if stepDownEnds {
			e.termMetrics().StepDownTimeout(e.cfg.Name)
			err = fmt.Errorf("%w: OnStartedLeading still running %v after its context was cancelled", ErrStepDownTimeout, e.cfg.StepDownTimeout)
			t.log.Error(err, "OnStartedLeading did not return within StepDownTimeout; exit the process now. Check fails until it returns")
		} else {
			e.termMetrics().WorkOutlived(e.cfg.Name)
			err = fmt.Errorf("%w: still running %v after its context was cancelled", ErrWorkOutlivedLease, e.t.safetyMargin())
			t.log.Error(err, "OnStartedLeading did not return within the safety margin; another leader may start now. Check fails until it returns")
		}
	}
	t.stopped()
	t.answerYield(cause)
	switch {
	case err != nil:
		return ending{err: fmt.Errorf("%w; %w", cause, err), overdue: overdue}
	case t.stepping && t.yield == nil:
		return ending{overdue: overdue}
	default:
		return ending{err: cause, overdue: overdue}
	}
}

// giveUp ends a step-down whose work did not return within
// StepDownTimeout. The work may still run, so the lease is not released:
// nobody may start before it expires. The elector stops renewing, and Run
// returns ErrStepDownTimeout so that the process exits, taking the work
// with it, before the lease expires.
func (t *term) giveUp() ending {
	e := t.e
	err := fmt.Errorf("%w: OnStartedLeading still running %v after its context was cancelled; stopped renewing without releasing, so the lease expires %v after the last renewal",
		ErrStepDownTimeout, e.cfg.StepDownTimeout, e.t.leaseDuration)
	t.log.Error(err, "Giving up the lease; exit the process now so the work stops before another leader starts")
	e.termMetrics().StepDownTimeout(e.cfg.Name)
	e.setLeading(false, instant{}, nil)
	overdue := e.workOutlived(t.work)
	t.stopped()
	t.answerYield(err)
	return ending{err: err, overdue: overdue}
}

// stepDown ends a term whose work returned while the lease was still ours.
// Nothing guarded by the lease runs any more, so releasing is safe: it
// releases if ReleaseOnCancel is set or a yield asked for it, and always
// when the work ended on its own, so the lease is never left held with no
// one working.
func (t *term) stepDown(ctx context.Context, res workResult, stepping bool) ending {
	var err error
	if !stepping {
		err = res.err()
		if res.panicked != nil {
			t.log.Error(err, "OnStartedLeading panicked; ending the term", "stack", string(res.stack))
		} else {
			t.log.Info("OnStartedLeading returned while leading; ending the term")
			t.r.noteQuickReturn(t.clock.Since(t.info.AcquiredAt) < t.e.t.retryPeriod)
		}
	}
	var released error = errNotReleased
	if !(t.e.cfg.ReleaseOnCancel || !stepping || t.yield != nil) {
		e := t.e
		t.log.Info("Stepped down without releasing the lease (ReleaseOnCancel is off); the next leader takes it when it expires",
			"expiresIn", (e.t.leaseDuration - elapsed(t.lastSent, e.now())).Round(time.Millisecond))
	}
	if t.e.cfg.ReleaseOnCancel || !stepping || t.yield != nil {
		successor := ""
		if t.yield != nil {
			successor = t.yield.to
		}
		released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
		if t.yield != nil && apierrors.IsConflict(released) {
			// A concurrent write moved the version: often the very
			// annotation that asked for this handoff, which leaves the
			// Lease ours. Re-read once; if it is still ours, release from
			// the fresh copy, so the successor gets it in milliseconds.
			left := leaderTimeLeft(t.lastSent, t.e.now(), t.e.t.renewDeadline, t.stepDownBy())
			// (With no time left, the Lease expires on its own.)
			if left > 0 && t.r.reread(ctx, min(t.e.t.requestTimeout(), left)) == nil && t.r.stillOurs() == nil {
				if to, ok := preferredSuccessor(t.r.view.lease, t.e.lock.Identity); ok {
					successor = to // the newest request wins
				}
				released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
			}
		}
	}
	t.e.setLeading(false, instant{}, nil)
	t.stopped()
	if t.yield != nil {
		t.answerYield(released)
		e := t.e
		switch {
		case released == nil:
			// Sit out the successor's chance: the others defer to a
			// named successor for one claim duration.
			return ending{err: errYielded, sitOut: &sitOut{t.yield.to, e.clock.Now().Add(e.t.leaseDuration), "released"}}
		case t.r.view.ours():
			// The release failed and the Lease still names us: sit out
			// until it has expired for the others and the successor had
			// one lease duration to take it.
			return ending{err: fmt.Errorf("%w: the release failed: %w", errYielded, released),
				sitOut: &sitOut{t.yield.to, t.lastSent.at.Add(2 * e.t.leaseDuration), "the release failed; the Lease expires on its own"}}
		}
		return ending{err: fmt.Errorf("%w: the release failed: %w", errYielded, released)}
	}
	return ending{err: err}
}

// answerYield tells a Yield caller, if any, and TermMetrics how the
// handoff ended, once.
func (t *term) answerYield(err error) {
	if t.yield == nil || t.yieldAnswered {
		return
	}
	t.yieldAnswered = true
	outcome := YieldCompleted
	switch {
	case err == nil:
	case errors.Is(err, ErrLeaseRefused), errors.Is(err, ErrForbidden):
		outcome = YieldRefused
	default:
		outcome = YieldFailed
	}
	t.e.termMetrics().Yield(t.e.cfg.Name, outcome)
	if t.yield.done != nil {
		t.yield.done <- err // buffered: never blocks
	}
}

// stopped runs the end-of-term hooks: OnStoppedLeading, event, metric.
func (t *term) stopped() {
	e := t.e
	e.lock.recordEvent(t.r.view.lease, "LeaderElection", "stopped leading")
	if f := e.cfg.Callbacks.OnStoppedLeading; f != nil {
		callSafely(t.log, "OnStoppedLeading", f)
	}
	t.log.Info("Stopped leading")
}

// errNotReleased is what stepDown records when it did not try to release.
var errNotReleased = errors.New("not released")

// printable renders a successor for logs: "" is anyone.
func printable(successor string) string {
	if successor == "" {
		return "(anyone)"
	}
	return successor
}

// noteQuickReturn counts terms in a row whose work returned on its own
// right after it started, and warns on the second: the usual cause is a
// controller built once and run again in every term.
func (r *run) noteQuickReturn(quick bool) {
	if !quick {
		r.quickReturns = 0
		return
	}
	r.quickReturns++
	if r.quickReturns == 2 && r.e.cfg.Rejoin {
		r.log.Info("WARNING: OnStartedLeading returned right after it started, in two terms in a row. With Rejoin it is called once per term: build the controller inside it, since a controller whose Run has returned usually does nothing when run again")
	}
}
