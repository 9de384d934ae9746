package leasehold

import (
	"context"
	"fmt"
	"math"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/ptr"
)

// LeaseLock names the coordination.k8s.io/v1 Lease an elector campaigns
// for, and how to reach it. Its methods make every single request on the
// Lease (get, create, update) and build every write as a pure function of
// what it writes over (claim, released); when to send them is decided in
// decide.go, campaign.go and renew.go, and the watch is in follow.go.
type LeaseLock struct {
	// Namespace and Name of the Lease. Both required.
	Namespace, Name string

	// Identity is written as the Lease's holder while this process leads.
	// It must be unique per process: two processes sharing one identity
	// is detected and reported as ErrIdentityConflict. Required;
	// DefaultIdentity gives a safe value.
	Identity string

	// Client reaches the API server, typically clientset.CoordinationV1().
	// In tests, leaseholdtest.Server's Client enforces resourceVersion.
	Client coordinationv1client.LeasesGetter

	// Labels are set on the Lease while this process holds it, and
	// removed when it releases it. Optional.
	Labels map[string]string

	// EventRecorder, when set, receives a Normal event on the Lease when
	// this process becomes leader and when it stops leading. client-go's
	// record.EventRecorder fits. Optional.
	EventRecorder EventRecorder
}

// EventRecorder posts Kubernetes events. client-go's record.EventRecorder
// satisfies it.
type EventRecorder interface {
	Eventf(obj runtime.Object, eventType, reason, message string, args ...interface{})
}

func (l *LeaseLock) leases() coordinationv1client.LeaseInterface {
	return l.Client.Leases(l.Namespace)
}

// get reads the Lease. It returns (nil, nil) if the Lease does not exist.
func (l *LeaseLock) get(ctx context.Context) (*coordinationv1.Lease, error) {
	lease, err := l.leases().Get(ctx, l.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, l.explain("get", err)
	}
	return kept(lease), nil
}

// create writes a new Lease. It fails with an AlreadyExists error if any
// Lease of that name exists.
func (l *LeaseLock) create(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	created, err := l.leases().Create(ctx, lease, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("create lease %s/%s: namespace %q not found; create it or set Lock.Namespace: %w", l.Namespace, l.Name, l.Namespace, err)
		}
		return nil, l.explain("create", err)
	}
	return kept(created), nil
}

// update writes lease, conditioned on its resourceVersion: the API server
// answers 409 Conflict if anybody wrote the Lease since that version.
// lease is always a copy of what the server returned, so the write is
// unconditional only on a server that returns no resourceVersion at all
// (client-go's fake clientsets), which offers no optimistic concurrency
// to use.
func (l *LeaseLock) update(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	updated, err := l.leases().Update(ctx, lease, metav1.UpdateOptions{})
	if err != nil {
		return nil, l.explain("update", err)
	}
	return kept(updated), nil
}

// kept returns the Lease the elector keeps: lease without managedFields,
// the largest part of a Lease as the API server returns it, which the
// elector never reads. Leaving them out of our writes is safe: an update
// that omits managedFields keeps the server's. lease itself is never
// changed (client-go's fake clientsets hand out the object they store):
// the trim is a shallow copy, whose other fields the elector only reads.
func kept(lease *coordinationv1.Lease) *coordinationv1.Lease {
	if lease == nil || len(lease.ManagedFields) == 0 {
		return lease
	}
	trimmed := *lease
	trimmed.ManagedFields = nil
	return &trimmed
}

// explain wraps an error of a request with verb on the Lease. A 403 names
// the RBAC rule that is missing.
func (l *LeaseLock) explain(verb string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s lease %s/%s: RBAC forbids %q: grant get, create, update and watch on coordination.k8s.io leases in namespace %q (see examples/deploy/rbac.yaml): %w",
			verb, l.Namespace, l.Name, verb, l.Namespace, err)
	}
	return fmt.Errorf("%s lease %s/%s: %w", verb, l.Namespace, l.Name, err)
}

// recordEvent posts an event on the Lease if an EventRecorder is set.
func (l *LeaseLock) recordEvent(lease *coordinationv1.Lease, reason, message string) {
	if l.EventRecorder == nil {
		return
	}
	obj := lease
	if obj == nil {
		obj = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name}}
	}
	l.EventRecorder.Eventf(obj, corev1.EventTypeNormal, reason, "%s %s", l.Identity, message)
}

// claim returns a copy of base (nil: a new Lease) that names this process
// as holder. A new term sets acquireTime and increments leaseTransitions; a
// renewal only moves renewTime.
func (l *LeaseLock) claim(base *coordinationv1.Lease, now time.Time, leaseDuration time.Duration, newTerm bool) *coordinationv1.Lease {
	var lease *coordinationv1.Lease
	if base == nil {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name}}
		lease.Spec.LeaseTransitions = ptr.To[int32](0)
	} else {
		lease = base.DeepCopy()
		if newTerm {
			lease.Spec.LeaseTransitions = ptr.To(nextTransition(lease.Spec.LeaseTransitions))
		}
	}
	stamp := metav1.NewMicroTime(now)
	lease.Spec.HolderIdentity = ptr.To(l.Identity)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
	lease.Spec.RenewTime = &stamp
	if newTerm || lease.Spec.AcquireTime == nil {
		lease.Spec.AcquireTime = &stamp
	}
	if to, ok := preferredHolder(lease); ok && (newTerm || to == l.Identity) {
		// A new term clears the preference that led to it (or that it
		// overrode after deferring), so the next release goes to
		// anyone; a renewal clears one naming this leader itself.
		delete(lease.Annotations, PreferredHolderAnnotation)
		lease.Spec.PreferredHolder = nil
	}
	if len(l.Labels) > 0 {
		if lease.Labels == nil {
			lease.Labels = map[string]string{}
		}
		for k, v := range l.Labels {
			lease.Labels[k] = v
		}
	}
	return lease
}

// released returns a copy of lease with no holder and without our labels,
// naming successor ("" for anyone) as the preferred holder: in
// PreferredHolderAnnotation always, and in spec.preferredHolder as well
// when inSpec is set (see writesSpecPreference). It keeps leaseTransitions
// so the term count survives the release.
func (l *LeaseLock) released(lease *coordinationv1.Lease, now time.Time, successor string, inSpec bool) *coordinationv1.Lease {
	out := lease.DeepCopy()
	stamp := metav1.NewMicroTime(now)
	// An empty holder, not a missing one, as client-go writes it:
	// kube-apiserver v1.37's coordinated-election controller dereferences
	// the holder of a Lease that has LeaseCandidates without a nil check,
	// and a release without the field makes the API server exit.
	out.Spec.HolderIdentity = ptr.To("")
	out.Spec.RenewTime = &stamp
	out.Spec.PreferredHolder = nil
	if inSpec && successor != "" {
		out.Spec.PreferredHolder = ptr.To(successor)
	}
	if successor == "" {
		delete(out.Annotations, PreferredHolderAnnotation)
	} else {
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[PreferredHolderAnnotation] = successor
	}
	for k, v := range l.Labels {
		if out.Labels[k] == v {
			delete(out.Labels, k)
		}
	}
	return out
}

// nextTransition increments a leaseTransitions count, saturating at the
// int32 maximum instead of wrapping negative.
func nextTransition(cur *int32) int32 {
	if cur == nil || *cur < 0 {
		return 1
	}
	if *cur == math.MaxInt32 {
		return math.MaxInt32
	}
	return *cur + 1
}
