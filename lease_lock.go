package leasehold

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// LeaseLock names the coordination.k8s.io/v1 Lease an elector campaigns
// for, and how to reach it. All reads and writes of the Lease live in this
// file; the decisions about them live in decide.go and elector.go.
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
	return lease, nil
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
	return created, nil
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
	return updated, nil
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
// naming successor ("" for anyone) as the preferred holder. It keeps
// leaseTransitions so the term count survives the release.
func (l *LeaseLock) released(lease *coordinationv1.Lease, now time.Time, successor string) *coordinationv1.Lease {
	out := lease.DeepCopy()
	stamp := metav1.NewMicroTime(now)
	out.Spec.HolderIdentity = nil
	out.Spec.RenewTime = &stamp
	out.Spec.PreferredHolder = nil
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

// observation is one thing the observer learned about the Lease.
type observation struct {
	// lease is the Lease as seen; nil if it does not exist.
	lease *coordinationv1.Lease
	// deleted is set for a watched deletion, and unset when a GET found
	// no Lease, whose moment is unknown.
	deleted bool
	// deletedRV is the resourceVersion of a watched deletion ("" on a
	// server that returns none).
	deletedRV string
}

// mailbox holds the newest observation not yet taken. Putting never
// blocks: a newer observation replaces an untaken older one, which it
// supersedes. So a reader that is busy (a term ending, a slow callback)
// never stalls the watch feeding it, and never reads a backlog. One
// goroutine puts into a mailbox; any may take.
type mailbox chan observation

func newMailbox() mailbox { return make(mailbox, 1) }

// put stores obs, dropping an older observation not yet taken.
func (m mailbox) put(obs observation) {
	for {
		select {
		case m <- obs:
			return
		default:
		}
		select {
		case <-m:
		default:
		}
	}
}

// observer follows one Lease and sends what it sees to the elector: a GET,
// then a watch with a field selector on metadata.name that resumes from the
// last resourceVersion it saw when it closes. On 410 Gone (an error from
// Watch, or, as a real API server sends it, an ERROR event in the stream)
// it re-reads through a watch without a resourceVersion, whose first event
// is the current state (so the Role needs no 'list'). It falls back to a GET every
// retry period if RBAC forbids watch (one warning). Transient errors are
// retried with capped exponential backoff and logged once per streak.
type observer struct {
	lock        *LeaseLock
	clock       clock.WithTicker
	retryPeriod time.Duration
	timeout     time.Duration
	log         logr.Logger
	out         mailbox
	polling     bool         // RBAC forbids watch
	shared      *SharedWatch // optional: follow the lease through a shared watch
	health      *apiHealth
}

func (o *observer) streak(msg string) *errorStreak {
	s := newErrorStreak(o.clock, o.log, msg)
	s.health = o.health
	return s
}

func (o *observer) run(ctx context.Context) {
	if o.shared != nil {
		if o.followShared(ctx) {
			return
		}
		o.polling = true
	}
	backoff := newBackoff(o.clock, o.retryPeriod/4, 4*o.retryPeriod)
	failures := o.streak("Cannot read the lease; retrying with backoff")
	for ctx.Err() == nil {
		lease, err := o.read(ctx)
		if err != nil {
			failures.failed(err)
			backoff.wait(ctx)
			continue
		}
		failures.succeeded()
		backoff.reset()
		if !o.send(ctx, observation{lease: lease}) {
			return
		}
		if o.polling {
			sleep(ctx, o.clock, o.retryPeriod)
			continue
		}
		rv := ""
		if lease != nil {
			rv = lease.ResourceVersion
		}
		started := o.clock.Now()
		o.watchFrom(ctx, rv)
		if o.clock.Since(started) < o.retryPeriod {
			// The watch keeps failing fast: do not spin.
			backoff.wait(ctx)
		}
	}
}

// followShared follows the lease through a SharedWatch: one GET for the
// current state, then the shared watch's events for this lease. It returns
// true when ctx ends, false if the shared watch is forbidden.
func (o *observer) followShared(ctx context.Context) bool {
	sub := o.shared.subscribe(ctx, o.lock.Name)
	defer o.shared.unsubscribe(sub)
	backoff := newBackoff(o.clock, o.retryPeriod/4, 4*o.retryPeriod)
	failures := o.streak("Cannot read the lease; retrying with backoff")
	for {
		lease, err := o.read(ctx)
		if err == nil {
			failures.succeeded()
			if !o.send(ctx, observation{lease: lease}) {
				return true
			}
			break
		}
		failures.failed(err)
		if !backoff.wait(ctx) {
			return true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-sub.lost:
			o.log.Info("Shared watch lost; falling back to polling every retry period", "retryPeriod", o.retryPeriod)
			return false
		case obs := <-sub.latest:
			o.out.put(obs)
		}
	}
}

func (o *observer) read(ctx context.Context) (*coordinationv1.Lease, error) {
	rctx, cancel := withClockTimeout(ctx, o.clock, o.timeout)
	defer cancel()
	return o.lock.get(rctx)
}

// watchFrom watches the Lease from resourceVersion rv, re-opening the watch
// from the last version seen when it closes, until it must re-read: on 410
// Gone, on an error event, or when watch is forbidden.
func (o *observer) watchFrom(ctx context.Context, rv string) {
	backoff := newBackoff(o.clock, o.retryPeriod/4, 4*o.retryPeriod)
	failures := o.streak("Cannot watch the lease; retrying with backoff")
	selector := fields.OneTermEqualSelector("metadata.name", o.lock.Name).String()
	for ctx.Err() == nil {
		w, err := o.lock.leases().Watch(ctx, metav1.ListOptions{
			FieldSelector:       selector,
			ResourceVersion:     rv,
			AllowWatchBookmarks: true,
		})
		switch {
		case err == nil:
		case apierrors.IsForbidden(err) || apierrors.IsMethodNotSupported(err):
			o.log.Info("Watch on the lease is not allowed; falling back to polling every retry period. Grant the 'watch' verb on leases for millisecond handoff and less API load",
				"retryPeriod", o.retryPeriod, "err", err)
			o.polling = true
			return
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			if rv == "" {
				return
			}
			// Our version was compacted away: watch from the current
			// state, which the server sends first as an ADDED event.
			// This needs no 'list' permission.
			o.log.V(2).Info("Lease watch history expired (410 Gone); re-reading through the watch", "resourceVersion", rv)
			rv = ""
			continue
		default:
			failures.failed(err)
			if !backoff.wait(ctx) {
				return
			}
			continue
		}
		failures.succeeded()
		backoff.reset()
		var ok bool
		rv, ok = o.drain(ctx, w, rv)
		if !ok {
			return
		}
	}
}

// drain forwards the watch's events for our Lease until it closes. It
// returns the resourceVersion to resume from and whether to resume.
func (o *observer) drain(ctx context.Context, w watch.Interface, rv string) (string, bool) {
	return followWatch(ctx, o.log, w, rv, func(name string, obs observation) bool {
		return name != o.lock.Name || o.send(ctx, obs)
	})
}

// followWatch reads a watch of Leases until it closes, handing each Lease
// event to deliver (which returns false to stop). It returns the
// resourceVersion to resume from, and false if the watch must not be
// resumed (ctx ended or deliver stopped). After an ERROR event, such as
// the 410 Gone a real API server sends when our version left its history,
// it resumes from "": the current state, sent first as ADDED events.
func followWatch(ctx context.Context, log logr.Logger, w watch.Interface, rv string, deliver func(name string, obs observation) bool) (string, bool) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return rv, false
		case ev, open := <-w.ResultChan():
			if !open {
				return rv, true
			}
			switch ev.Type {
			case watch.Error:
				log.V(2).Info("Lease watch ended with an error; re-reading through a watch from the current state",
					"resourceVersion", rv, "err", apierrors.FromObject(ev.Object).Error())
				return "", true
			case watch.Bookmark:
				if m, err := metaOf(ev.Object); err == nil {
					rv = m.GetResourceVersion()
				}
			case watch.Added, watch.Modified, watch.Deleted:
				lease, ok := ev.Object.(*coordinationv1.Lease)
				if !ok {
					continue
				}
				rv = lease.ResourceVersion
				obs := observation{lease: lease}
				if ev.Type == watch.Deleted {
					obs = observation{deleted: true, deletedRV: lease.ResourceVersion}
				}
				if !deliver(lease.Name, obs) {
					return rv, false
				}
			}
		}
	}
}

// send hands obs to the elector without blocking. It returns false once
// ctx has ended.
func (o *observer) send(ctx context.Context, obs observation) bool {
	if ctx.Err() != nil {
		return false
	}
	o.out.put(obs)
	return true
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	return m, nil
}
