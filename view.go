package leasehold

import (
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// What this process knows of the Lease: observations (watch events, reads,
// the answers to our writes) folded into the run's leaseView, newest
// first, with the deletion rule (markGone) and the stamps that recognise
// our own writes (isOurs). Leases without a resourceVersion, as client-go's
// fake clientsets return them, are ordered here too (seenBefore).

// observe folds one observation into the view. Stale observations (older
// than what we have) are ignored. It returns an error wrapping
// ErrIdentityConflict if another process renewed the Lease under our
// identity.
func (r *run) observe(obs observation) error {
	now := r.e.clock.Now()
	v := &r.view
	r.seen = true
	if obs.lease == nil {
		// A watched deletion newer than what we have (or from a server
		// without resourceVersions, whose watch is ordered); a lagging
		// watch may deliver an older one, which is stale.
		newer := v.lease == nil || obs.deletedRV == "" || v.lease.ResourceVersion == "" || leaserecord.NewerVersion(obs.deletedRV, v.lease.ResourceVersion)
		switch {
		case v.lease == nil:
		case v.gone && obs.deleted && newer && obs.final != nil && recordOf(obs.final) != recordOf(v.lease):
			// Another version was deleted since the deletion we knew of:
			// a Lease re-created and deleted again, its creation lost to
			// the newest-wins mailbox. Its holder's claim runs from now.
			r.markGone(obs.final, false)
		case v.gone:
		case obs.deleted && newer:
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
	r.e.coord.noteSuperseded(r, obs.superseded, now) // coordinated election (coordinated.go); no-op when nil
	if prev := v.lease; prev != nil && !v.gone && prev.UID != "" && obs.lease.UID != "" && prev.UID != obs.lease.UID {
		// Another object: the one in the view was deleted, unseen (a
		// watch resumed after an outage, its deletion superseded in the
		// mailbox, or a relist). Its holder may still work: the deletion
		// rule applies, its claim counted from now.
		if h := leaserecord.Holder(prev); h != "" && h != r.e.lock.Identity {
			r.markGone(nil, false)
		}
	}
	r.noteVersionless(obs.lease)
	prev := v.lease
	v.lease, v.gone, v.observedAt = obs.lease, false, now
	holder := leaserecord.Holder(obs.lease)
	r.setSeen(obs.lease)

	self := r.e.lock.Identity
	switch {
	case holder != self:
		r.foreignSelf = false
	case r.isOurs(obs.lease):
		v.ownVersion = versionOf(obs.lease)
		if rt := obs.lease.Spec.RenewTime; rt != nil {
			r.ownStamp = rt.Time.Truncate(time.Microsecond) // ours, though its answer was lost
		}
		r.foreignSelf = false
	case r.e.coord.assigned(obs.lease):
		// Coordinated election (coordinated.go): the election
		// controller's write naming us (acquireTime unset), held by
		// nobody until taken up. It may follow our own term, even on a
		// re-created object, and the controller may write it again (to
		// mark a better candidate): no process wrote it under our
		// identity, so it is no conflict.
		r.foreignSelf = true
	case prev != nil && leaserecord.Holder(prev) == self && !r.foreignSelf && prev.UID == obs.lease.UID:
		// The version after our own names us, but we do not recognise
		// it: as likely our own write whose answer was lost, its stamp
		// since pushed out of the recent ones by failed writes, as
		// another process. It is another's until it expires; a second
		// such version shows a live process using our identity.
		r.foreignSelf = true
		r.log.Info("The lease names this identity with a renewal this process does not recognise (perhaps its own write whose answer was lost); treating it as held by another process until it expires",
			"holder", holder)
	case prev != nil && leaserecord.Holder(prev) == self:
		return fmt.Errorf("%w: identity %q: another live process renewed the lease under this identity; give each process a unique Lock.Identity",
			ErrIdentityConflict, self)
	default:
		r.foreignSelf = true
		r.log.Info("The lease names this identity but was not written by this process; treating it as held by another process until it expires",
			"holder", holder)
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
	r.e.setHolder("", "")
	r.lastHolder = ""
	r.notifier.holderSeen("")
	if act, at := decideCampaign(*v, r.e.lock.Identity, r.foreignSelf, now, r.e.t.leaseDuration); act == actWait {
		r.log.Info("The Lease was deleted; waiting out the last holder's claim before creating it",
			"lastHolder", printable(leaserecord.Holder(v.lease)), "until", at.Sub(now).Round(time.Millisecond))
		// That holder may work until its claim runs out, whatever the
		// Lease's later versions say (a process that never saw it may
		// create the Lease and release it): no work starts here before.
		if at.After(r.holdUntil) {
			r.holdUntil = at
		}
	} else {
		r.log.Info("The Lease was deleted", "lastHolder", printable(leaserecord.Holder(v.lease)), "ours", ours)
	}
}

// wrote records the answer to one of our successful writes.
func (r *run) wrote(lease *coordinationv1.Lease) {
	r.noteVersionless(lease)
	if lease.Spec.RenewTime != nil {
		r.ownStamp = lease.Spec.RenewTime.Time.Truncate(time.Microsecond)
	}
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
	if !r.ownStamp.IsZero() && t.Equal(r.ownStamp) {
		return true
	}
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
	holder := leaserecord.Holder(lease)
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
	r.e.setHolder(holder, versionOf(lease))
	r.notifier.holderSeen(holder)
}
