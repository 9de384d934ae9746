package leasehold

import (
	"context"
	"errors"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/internal/retry"
)

// The candidate: the campaign loop, which decides from the view of the
// Lease (decideCampaign) when to write, and the conditional write that
// wins a term (acquire), with what it does after a lost race (reread) or
// a won create (heldBack), and the sit-out after a yield.

// campaign is the follower and candidate states. It returns true once this
// process wrote itself as holder, false with a nil error when ctx ended
// first, and an error wrapping ErrIdentityConflict if it found another
// process using its identity.
func (r *run) campaign(ctx context.Context) (bool, error) {
	e := r.e
	r.log.Info("Campaigning for the lease")
	timer := e.clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	bo := retry.NewBackoff(e.clock, e.t.retryPeriod/4, e.t.retryPeriod)
	var notBefore time.Time // after a failed write, no new write before this
	failures := newStreak(e.clock, r.log, "Cannot acquire the lease; retrying with backoff", &e.health)

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
				failures.Succeeded()
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
					notBefore = e.clock.Now().Add(bo.Delay())
				}
				continue
			case errors.Is(err, ErrIdentityConflict):
				return false, err
			default:
				failures.Failed(err)
				notBefore = e.clock.Now().Add(bo.Delay())
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
			case l == nil || leaserecord.Holder(l) == "" || l.ResourceVersion == "" || leaserecord.Holder(l) == r.e.lock.Identity && r.isOurs(l),
				!leaserecord.NewerVersion(ours.ResourceVersion, l.ResourceVersion),
				decidedOn.lease != nil && decidedOn.lease.ResourceVersion != "" && !leaserecord.NewerVersion(l.ResourceVersion, decidedOn.lease.ResourceVersion):
				continue
			}
			if until := now.Add(leaserecord.ClaimDuration(l, r.e.t.leaseDuration)); until.After(r.holdUntil) {
				r.holdUntil, r.holdSaid = until, true
				r.log.Info("Created the Lease, but the watch showed another holder's Lease created and deleted while the create was in flight; keeping the Lease without starting the work until that claim runs out",
					"holder", leaserecord.Holder(l), "until", until.Sub(now).Round(time.Millisecond))
			}
		}
	}
	return r.observe(obs)
}

// sitOut makes this process write nothing before s.until while the Lease
// stays at its current version, and says so.
func (r *run) sitOut(s sitOut) {
	r.sitOutUntil, r.sitOutVersion = s.until, versionOf(r.view.lease)
	r.log.Info("Sitting out so that another candidate takes the Lease; any write by another ends it",
		"successor", printable(s.successor), "why", s.why, "until", s.until.Sub(r.e.clock.Now()).Round(time.Millisecond))
}

// sittingOut reports whether a yield's sit-out still holds at now.
func (r *run) sittingOut(now time.Time) bool {
	return now.Before(r.sitOutUntil) && !r.view.gone && versionOf(r.view.lease) == r.sitOutVersion
}

// takeoverCause says, for the log, why the Lease was free to take.
func takeoverCause(v leaseView, self string) string {
	switch holder := leaserecord.Holder(v.lease); {
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
	holding := !r.holdUntil.IsZero() && act == actAcquire && leaserecord.Holder(base) == e.lock.Identity && r.view.ours()
	desired := e.lock.claim(base, now, e.t.leaseDuration, !holding)
	r.remember(now)
	// The write is not cut short by ctx: if it lands, we must know.
	rctx, cancel := retry.WithTimeout(context.WithoutCancel(ctx), e.clock, e.t.requestTimeout())
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
		case leaserecord.Holder(v.lease) == "":
			e.cfg.Metrics.Takeover(e.cfg.Name, e.clock.Since(v.observedAt))
		case leaserecord.Holder(v.lease) != e.lock.Identity || r.foreignSelf:
			e.cfg.Metrics.Takeover(e.cfg.Name, e.clock.Since(v.observedAt.Add(leaserecord.ClaimDuration(v.lease, e.t.leaseDuration))))
		}
		r.wrote(got)
		r.acquiredAt = sent
		e.cfg.Metrics.Transition(e.cfg.Name)
		r.log.Info("Acquired the lease", "leaseTransitions", leaserecord.Transitions(got), "via", act.String(), "because", cause)
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
	rctx, cancel := retry.WithTimeout(context.WithoutCancel(ctx), e.clock, timeout)
	defer cancel()
	lease, err := e.lock.get(rctx)
	if err != nil {
		return err
	}
	e.cfg.Metrics.SlowPath(e.cfg.Name)
	return r.observe(observation{lease: lease, fresh: true})
}
