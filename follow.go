package leasehold

// Following the Lease: the observer that keeps one watch open on an
// elector's Lease (or polls it where RBAC forbids watch, or follows it
// through a SharedWatch, shared_watch.go), and the watch loop that reads a
// watch and resumes it. What they see goes to the elector through its
// mailbox (mailbox.go).

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/retry"
	"github.com/leasehold/leasehold/internal/watchloop"
)

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

func (o *observer) streak(msg string) *retry.Streak {
	return newStreak(o.clock, o.log, msg, o.health)
}

func (o *observer) run(ctx context.Context) {
	if o.shared != nil {
		if o.followShared(ctx) {
			return
		}
		o.polling = true
	}
	backoff := retry.NewBackoff(o.clock, o.retryPeriod/4, 4*o.retryPeriod)
	failures := o.streak("Cannot read the lease; retrying with backoff")
	for ctx.Err() == nil {
		lease, err := o.read(ctx)
		if err != nil {
			failures.Failed(err)
			backoff.Wait(ctx)
			continue
		}
		failures.Succeeded()
		backoff.Reset()
		if !o.send(ctx, observation{lease: lease}) {
			return
		}
		if o.polling {
			retry.Sleep(ctx, o.clock, o.retryPeriod)
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
			backoff.Wait(ctx)
		}
	}
}

// followShared follows the lease through a SharedWatch: one GET for the
// current state, then the shared watch's events for this lease. It returns
// true when ctx ends, false if the shared watch is forbidden.
func (o *observer) followShared(ctx context.Context) bool {
	// Subscribed before the GET, so nothing written after it is missed.
	// The shared watch puts this lease's events straight into our
	// mailbox, which keeps the newer of what it holds and what is put.
	sub := o.shared.subscribe(ctx, o.lock.Name, o.out)
	defer o.shared.unsubscribe(sub)
	backoff := retry.NewBackoff(o.clock, o.retryPeriod/4, 4*o.retryPeriod)
	failures := o.streak("Cannot read the lease; retrying with backoff")
	for {
		lease, err := o.read(ctx)
		if err == nil {
			failures.Succeeded()
			if !o.send(ctx, observation{lease: lease}) {
				return true
			}
			break
		}
		failures.Failed(err)
		if !backoff.Wait(ctx) {
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
		}
	}
}

func (o *observer) read(ctx context.Context) (*coordinationv1.Lease, error) {
	rctx, cancel := retry.WithTimeout(ctx, o.clock, o.timeout)
	defer cancel()
	return o.lock.get(rctx)
}

// watchFrom watches the Lease from resourceVersion rv, re-opening the watch
// from the last version seen when it closes, until it must re-read: on 410
// Gone, on an error event, or when watch is forbidden.
func (o *observer) watchFrom(ctx context.Context, rv string) {
	backoff := retry.NewBackoff(o.clock, o.retryPeriod/4, 4*o.retryPeriod)
	failures := o.streak("Cannot watch the lease; retrying with backoff")
	selector := fields.OneTermEqualSelector("metadata.name", o.lock.Name).String()
	quick := 0 // watches in a row that ended within a retry period
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
			failures.Failed(err)
			if !backoff.Wait(ctx) {
				return
			}
			continue
		}
		failures.Succeeded()
		opened, from := o.clock.Now(), rv
		var ok bool
		rv, ok = o.drain(ctx, w, rv)
		if !ok {
			return
		}
		if rv != from || o.clock.Since(opened) >= o.retryPeriod {
			// It delivered something, or lasted: a healthy watch.
			backoff.Reset()
			quick = 0
		} else if quick++; quick > 1 && !backoff.Wait(ctx) {
			// Watches the server keeps ending at once, empty: the first
			// is reopened at once (a server restart, a closed
			// connection), the next ones with backoff, never in a loop.
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
	rv, end, err := watchloop.Read(ctx, w, rv, func(typ watch.EventType, lease *coordinationv1.Lease) bool {
		lease = kept(lease)
		obs := observation{lease: lease}
		if typ == watch.Deleted {
			obs = observation{deleted: true, deletedRV: lease.ResourceVersion, final: lease}
		}
		return deliver(lease.Name, obs)
	})
	switch end {
	case watchloop.Failed:
		log.V(2).Info("Lease watch ended with an error; re-reading through a watch from the current state",
			"resourceVersion", rv, "err", err.Error())
		return "", true
	case watchloop.Closed:
		return rv, true
	}
	return rv, false
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
