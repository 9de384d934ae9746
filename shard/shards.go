package shard

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// What the member loop sees of the group and does with its shards: the
// group watch's Leases folded in (onGroup, onLease, onAssignment), and
// each shard's run started, cancelled and ended.

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
	if h := leaserecord.Holder(lease); cur != nil && !cur.absent && h != "" && leaserecord.Holder(cur.lease) == h {
		mv.renewed = true
	}
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
