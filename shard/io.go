package shard

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/internal/retry"
)

// The member loop's requests: each write and read of the group's Leases
// (its own member Lease, the assignment, the epoch fence, collecting
// departed members) runs off the loop and comes back as an ioResult, which
// the loop folds in (onIO, onIOError) with backoff on failure.

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
