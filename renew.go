package leasehold

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/internal/retry"
)

// The leader's writes: renewals from the cached Lease, each conditioned on
// our last write and bounded by the renew deadline, hedged when one is
// slow; and the release, conditioned the same way.

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
		// Conflict: somebody wrote. Re-read and decide, within the
		// deadline and a step-down's bound.
		left := leaderTimeLeft(lastSent, e.now(), e.t.renewDeadline, by)
		if left <= 0 {
			return sent, fmt.Errorf("renew conflicted at the renew deadline or the end of the step-down: %w", err)
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
		// retry once at once from the fresh copy, unless the deadline
		// passed meanwhile (a pause as the re-read was answered): a
		// renewal sent then could land on a term that is over.
		if attempt == 2 {
			return sent, fmt.Errorf("renew conflicted twice on a lease that is still ours")
		}
		if leaderTimeLeft(lastSent, e.now(), e.t.renewDeadline, by) <= 0 {
			return sent, fmt.Errorf("renew conflicted, and the renew deadline or the end of the step-down passed during the re-read: %w", err)
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
	timeout := min(e.t.requestTimeout(), deadlineLeft(lastSent, sent, e.t.renewDeadline))
	go func() {
		rctx, cancel := retry.WithTimeout(context.WithoutCancel(ctx), e.clock, timeout)
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
	case leaserecord.Holder(v.lease) != r.e.lock.Identity:
		return fmt.Errorf("%w: the lease is now held by %q", ErrLeaderLost, leaserecord.Holder(v.lease))
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
	e.coord.awaitWithdrawal(by) // coordinated election (coordinated.go); no-op when nil
	bo := retry.NewBackoff(e.clock, e.t.retryPeriod/4, e.t.retryPeriod)
	for {
		sent := e.now()
		now := sent.at
		remaining := deadlineLeft(lastSent, sent, e.t.renewDeadline)
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
		rctx, cancel := retry.WithTimeout(context.WithoutCancel(ctx), e.clock, min(e.t.requestTimeout(), remaining))
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
		wctx, cancel := retry.WithTimeout(context.WithoutCancel(ctx), e.clock, remaining-e.clock.Since(now))
		bo.Wait(wctx)
		cancel()
	}
}
