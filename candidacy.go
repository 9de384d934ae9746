package leasehold

// The candidacy of coordinated election (see coordinated.go): this
// process's LeaseCandidate object, registered, renewed, followed for the
// controller's pings and withdrawn at the end.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	coordinationv1beta1 "k8s.io/api/coordination/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	coordinationv1beta1client "k8s.io/client-go/kubernetes/typed/coordination/v1beta1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/retry"
	"github.com/leasehold/leasehold/internal/watchloop"
)

// errCandidateAPIMissing is register's error when the server does not serve
// LeaseCandidates.
var errCandidateAPIMissing = errors.New("the LeaseCandidate API is not served")

// candidacy keeps one process's LeaseCandidate for one Run: it registers
// it, follows it with a watch, answers the controller's pings, renews it
// every candidateRenewEvery, and deletes it at the end. Its goroutine owns
// it.
type candidacy struct {
	cc     CandidateConfig
	lock   *LeaseLock
	clock  clock.WithTicker
	t      timings
	log    logr.Logger
	client coordinationv1beta1client.LeaseCandidateInterface

	// obj is the LeaseCandidate as last written or seen; nil when it must
	// be registered (again).
	obj *coordinationv1beta1.LeaseCandidate
	// renewAt is when the next periodic renewal is due.
	renewAt time.Time
}

// request bounds one request by the elector's request timeout. It is not
// cut short by ctx: a write that lands must be known.
func (k *candidacy) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return retry.WithTimeout(context.WithoutCancel(ctx), k.clock, k.t.requestTimeout())
}

// register creates the LeaseCandidate, or updates the one a previous
// incarnation of this identity left behind.
func (k *candidacy) register(ctx context.Context) error {
	rctx, cancel := k.request(ctx)
	defer cancel()
	now := k.clock.Now()
	desired := &coordinationv1beta1.LeaseCandidate{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.lock.Namespace, Name: k.lock.Identity},
		Spec: coordinationv1beta1.LeaseCandidateSpec{
			LeaseName:        k.lock.Name,
			BinaryVersion:    k.cc.BinaryVersion,
			EmulationVersion: k.cc.EmulationVersion,
			Strategy:         k.cc.Strategy,
			RenewTime:        &metav1.MicroTime{Time: now},
		},
	}
	got, err := k.client.Create(rctx, desired, metav1.CreateOptions{})
	switch {
	case err == nil:
		k.wrote(got)
		return nil
	case candidateAPIMissing(err):
		return errCandidateAPIMissing
	case !apierrors.IsAlreadyExists(err):
		return k.explain("create", err)
	}
	cur, err := k.client.Get(rctx, k.lock.Identity, metav1.GetOptions{})
	if err != nil {
		return k.explain("get", err)
	}
	if cur.Spec.LeaseName != k.lock.Name {
		return fmt.Errorf("LeaseCandidate %s/%s exists for Lease %q, not %q: in coordinated election the identity names the candidate, so it must be unique per process and Lease in the namespace",
			k.lock.Namespace, k.lock.Identity, cur.Spec.LeaseName, k.lock.Name)
	}
	cur.Spec.BinaryVersion, cur.Spec.EmulationVersion, cur.Spec.Strategy = desired.Spec.BinaryVersion, desired.Spec.EmulationVersion, desired.Spec.Strategy
	cur.Spec.RenewTime = &metav1.MicroTime{Time: answerTime(cur, now)}
	got, err = k.client.Update(rctx, cur, metav1.UpdateOptions{})
	if err != nil {
		return k.explain("update", err)
	}
	k.wrote(got)
	return nil
}

// wrote records a successful write of the LeaseCandidate.
func (k *candidacy) wrote(obj *coordinationv1beta1.LeaseCandidate) {
	k.obj = obj
	k.renewAt = k.clock.Now().Add(candidateRenewEvery)
}

// answerTime is the renewTime that answers a ping at now: never before the
// ping, which the controller stamped with its own clock, so that a clock
// running behind the controller's still counts as an answer.
func answerTime(obj *coordinationv1beta1.LeaseCandidate, now time.Time) time.Time {
	if p := obj.Spec.PingTime; p != nil && p.Time.After(now) {
		return p.Time
	}
	return now
}

// pinged reports whether the controller asks for an answer: a pingTime
// after the renewTime.
func pinged(obj *coordinationv1beta1.LeaseCandidate) bool {
	s := obj.Spec
	return s.PingTime != nil && (s.RenewTime == nil || s.PingTime.After(s.RenewTime.Time))
}

// renew writes a new renewTime, answering a ping if there is one. On a
// conflict it re-reads once and retries; a LeaseCandidate found deleted is
// registered again.
func (k *candidacy) renew(ctx context.Context) error {
	rctx, cancel := k.request(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		obj := k.obj.DeepCopy()
		obj.Spec.RenewTime = &metav1.MicroTime{Time: answerTime(obj, k.clock.Now())}
		got, err := k.client.Update(rctx, obj, metav1.UpdateOptions{})
		switch {
		case err == nil:
			k.wrote(got)
			return nil
		case apierrors.IsNotFound(err):
			k.obj = nil
			return fmt.Errorf("LeaseCandidate %s/%s was deleted; registering again", k.lock.Namespace, k.lock.Identity)
		case !apierrors.IsConflict(err) || attempt == 2:
			return k.explain("update", err)
		}
		cur, err := k.client.Get(rctx, k.lock.Identity, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				k.obj = nil
			}
			return k.explain("get", err)
		}
		k.obj = cur
	}
}

// serve keeps the LeaseCandidate until ctx ends: registered, followed by a
// watch, pings answered at once, renewed every candidateRenewEvery.
func (k *candidacy) serve(ctx context.Context) {
	bo := retry.NewBackoff(k.clock, k.t.retryPeriod/4, 4*k.t.retryPeriod)
	failures := newStreak(k.clock, k.log, "Cannot keep the LeaseCandidate; retrying with backoff", nil)
	selector := fields.OneTermEqualSelector("metadata.name", k.lock.Identity).String()
	rv := ""
	for ctx.Err() == nil {
		var err error
		switch {
		case k.obj == nil:
			if err = k.register(ctx); err == nil {
				k.log.V(1).Info("Registered the LeaseCandidate again")
				rv = k.obj.ResourceVersion
			}
		case pinged(k.obj) || !k.clock.Now().Before(k.renewAt):
			err = k.renew(ctx)
		}
		if err == nil {
			var w watch.Interface
			w, err = k.client.Watch(ctx, metav1.ListOptions{FieldSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
			switch {
			case err == nil:
				failures.Succeeded()
				opened := k.clock.Now()
				rv, err = k.follow(ctx, w, rv)
				if k.clock.Since(opened) >= k.t.retryPeriod {
					bo.Reset()
				} else if err == nil && ctx.Err() == nil && !bo.Wait(ctx) {
					// A watch the server ends at once: do not spin.
					return
				}
			case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
				rv, err = "", nil
			}
		}
		if err != nil && ctx.Err() == nil {
			failures.Failed(err)
			if !bo.Wait(ctx) {
				return
			}
		}
	}
}

// follow reads a watch of the LeaseCandidate until it closes, answering
// pings and renewing when due. It returns the resourceVersion to resume
// from, and an error when a write failed (the caller retries it) or the
// LeaseCandidate was deleted.
func (k *candidacy) follow(ctx context.Context, w watch.Interface, rv string) (string, error) {
	timer := k.clock.NewTimer(k.renewAt.Sub(k.clock.Now()))
	defer timer.Stop()
	var failed error
	renew := func() bool {
		if failed = k.renew(ctx); failed != nil {
			return false
		}
		timer.Reset(k.renewAt.Sub(k.clock.Now()))
		return true
	}
	rv, end, _ := watchloop.ReadWith(ctx, w, rv, func(typ watch.EventType, obj *coordinationv1beta1.LeaseCandidate) bool {
		if obj.Name != k.lock.Identity {
			return true
		}
		if typ == watch.Deleted {
			k.obj = nil
			failed = fmt.Errorf("LeaseCandidate %s/%s was deleted; registering again", k.lock.Namespace, k.lock.Identity)
			return false
		}
		k.obj = obj
		if pinged(obj) {
			k.log.V(2).Info("Answering the election controller's ping", "pingTime", obj.Spec.PingTime.Time)
			return renew()
		}
		return true
	}, watchloop.Extra{C: timer.C, F: renew})
	switch {
	case failed != nil:
		if k.obj == nil {
			return "", failed
		}
		return rv, failed
	case end == watchloop.Failed:
		return "", nil
	}
	return rv, nil
}

// withdraw deletes the LeaseCandidate, so that the controller stops
// considering this process.
func (k *candidacy) withdraw(ctx context.Context) {
	if k.obj == nil {
		return
	}
	rctx, cancel := k.request(ctx)
	defer cancel()
	opts := metav1.DeleteOptions{}
	if k.obj.UID != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &k.obj.UID}
	}
	err := k.client.Delete(rctx, k.lock.Identity, opts)
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err):
		k.log.V(1).Info("Withdrew the LeaseCandidate")
	default:
		k.log.Error(err, "Cannot delete the LeaseCandidate; the election controller drops it 30 minutes after its last renewal")
	}
	k.obj = nil
}

// explain wraps an error of a request with verb on the LeaseCandidate. A
// 403 names the RBAC rule that is missing.
func (k *candidacy) explain(verb string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s LeaseCandidate %s/%s: RBAC forbids %q: grant create, get, update, watch and delete on coordination.k8s.io leasecandidates in namespace %q: %w",
			verb, k.lock.Namespace, k.lock.Identity, verb, k.lock.Namespace, err)
	}
	return fmt.Errorf("%s LeaseCandidate %s/%s: %w", verb, k.lock.Namespace, k.lock.Identity, err)
}

// candidateAPIMissing reports whether err is the 404 of a server that does
// not serve the resource at all: no details, unlike the 404 of a missing
// object or namespace.
func candidateAPIMissing(err error) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d == nil || (d.Name == "" && d.Kind == "")
}

// holderKeepingLeases writes a released Lease's holderIdentity as "" rather
// than leaving it out, as client-go does. kube-apiserver v1.37's election
// controller dereferences the holder of a Lease that has candidates without
// a nil check, and a Lease released without the field makes it panic and
// the API server exit.
type holderKeepingLeases struct {
	coordinationv1client.LeasesGetter
}

// Leases implements coordinationv1client.LeasesGetter.
func (g holderKeepingLeases) Leases(namespace string) coordinationv1client.LeaseInterface {
	return holderKeepingLease{g.LeasesGetter.Leases(namespace)}
}

type holderKeepingLease struct {
	coordinationv1client.LeaseInterface
}

// Update implements coordinationv1client.LeaseInterface.
func (l holderKeepingLease) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	if lease.Spec.HolderIdentity == nil {
		lease = lease.DeepCopy()
		lease.Spec.HolderIdentity = ptr.To("")
	}
	return l.LeaseInterface.Update(ctx, lease, opts)
}
