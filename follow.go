package leasehold

// Following the Lease: the observer that keeps one watch open on an
// elector's Lease (or polls it where RBAC forbids watch), the watch loop
// that reads a watch and resumes it, the SharedWatch that serves many
// electors of one process through one watch per namespace, and the
// mailbox through which all of them hand what they see to the elector.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

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
	// final is the deleted object's last state, as a DELETE event carries
	// it; nil for a GET that found nothing.
	final *coordinationv1.Lease
	// fresh is set for a read made after this process's last write had
	// been answered (a re-read after a lost race): a Lease it does not
	// find is gone, even if the view shows our own write.
	fresh bool
	// superseded are the Leases of the observations this one replaced in
	// the mailbox before anyone took them (oldest first, at most
	// maxSuperseded). A reader that was busy with a write learns what
	// happened meanwhile from them (run.heldBack).
	superseded []*coordinationv1.Lease
}

// maxSuperseded bounds observation.superseded.
const maxSuperseded = 4

// seen returns the Lease an observation shows: the Lease, or for a
// deletion the deleted object's last state (nil if unknown).
func (o observation) seen() *coordinationv1.Lease {
	if o.lease != nil {
		return o.lease
	}
	return o.final
}

// supersede returns obs carrying old's Lease and what old superseded.
func supersede(obs, old observation) observation {
	list := append(append([]*coordinationv1.Lease(nil), old.superseded...), obs.superseded...)
	if l := old.seen(); l != nil {
		list = append(list, l)
	}
	if len(list) > maxSuperseded {
		list = list[len(list)-maxSuperseded:]
	}
	obs.superseded = list
	return obs
}

// mailbox holds the newest observation not yet taken. Putting never
// blocks: a newer observation replaces an untaken older one, which it
// supersedes (and carries, see observation.superseded). So a reader that is busy (a term ending, a slow callback)
// never stalls the watch feeding it, and never reads a backlog. At most
// two goroutines put into one mailbox (an observer's GET and a shared
// watch); one takes.
type mailbox chan observation

func newMailbox() mailbox { return make(mailbox, 1) }

// put stores obs, replacing an observation not yet taken unless that one
// is of a newer Lease (a GET's answer can arrive after a watch event).
func (m mailbox) put(obs observation) {
	for {
		select {
		case m <- obs:
			return
		default:
		}
		select {
		case old := <-m:
			if old.lease != nil && obs.lease != nil && old.lease.ResourceVersion != "" && obs.lease.ResourceVersion != "" &&
				newerVersion(old.lease.ResourceVersion, obs.lease.ResourceVersion) {
				obs = supersede(old, obs) // keep the newer; without versions, the last put wins
			} else {
				obs = supersede(obs, old)
			}
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
	// Subscribed before the GET, so nothing written after it is missed.
	// The shared watch puts this lease's events straight into our
	// mailbox, which keeps the newer of what it holds and what is put.
	sub := o.shared.subscribe(ctx, o.lock.Name, o.out)
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
			failures.failed(err)
			if !backoff.wait(ctx) {
				return
			}
			continue
		}
		failures.succeeded()
		opened, from := o.clock.Now(), rv
		var ok bool
		rv, ok = o.drain(ctx, w, rv)
		if !ok {
			return
		}
		if rv != from || o.clock.Since(opened) >= o.retryPeriod {
			// It delivered something, or lasted: a healthy watch.
			backoff.reset()
			quick = 0
		} else if quick++; quick > 1 && !backoff.wait(ctx) {
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
				lease = kept(lease)
				rv = lease.ResourceVersion
				obs := observation{lease: lease}
				if ev.Type == watch.Deleted {
					obs = observation{deleted: true, deletedRV: lease.ResourceVersion, final: lease}
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

// SharedWatch lets many electors in one process, each on its own Lease in
// one namespace, share a single watch on that namespace's Leases instead of
// opening one each: 1,000 elections cost one long-running request. Set it
// as Config.SharedWatch on each elector.
//
// It needs 'watch' on all Leases of the namespace (no resourceNames). If
// the watch is forbidden, each elector falls back to polling its own Lease.
type SharedWatch struct {
	client    coordinationv1client.LeasesGetter
	namespace string
	clock     clock.WithTicker

	mu        sync.Mutex
	subs      map[string]map[*subscription]struct{}
	started   bool
	forbidden bool
	stop      context.CancelFunc
	done      chan struct{}
}

// NewSharedWatch returns a SharedWatch on the Leases of namespace. It
// starts watching when the first elector subscribes and stops when the
// last one leaves.
func NewSharedWatch(client coordinationv1client.LeasesGetter, namespace string) *SharedWatch {
	return &SharedWatch{client: client, namespace: namespace, clock: clock.RealClock{}, subs: map[string]map[*subscription]struct{}{}}
}

// subscription delivers one Lease's observations to one elector. Only the
// newest matters, so a slow elector gets the latest, never a backlog.
type subscription struct {
	name   string
	latest mailbox
	lost   chan struct{} // closed if the shared watch is forbidden
}

func (w *SharedWatch) subscribe(ctx context.Context, name string, out mailbox) *subscription {
	w.mu.Lock()
	defer w.mu.Unlock()
	sub := &subscription{name: name, latest: out, lost: make(chan struct{})}
	if w.forbidden {
		close(sub.lost)
		return sub
	}
	if w.subs[name] == nil {
		w.subs[name] = map[*subscription]struct{}{}
	}
	w.subs[name][sub] = struct{}{}
	if !w.started {
		w.started = true
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w.stop, w.done = cancel, make(chan struct{})
		go func() {
			defer close(w.done)
			w.run(wctx, klog.FromContext(ctx).WithValues("sharedWatchNamespace", w.namespace))
		}()
	}
	return sub
}

func (w *SharedWatch) unsubscribe(sub *subscription) {
	w.mu.Lock()
	delete(w.subs[sub.name], sub)
	if len(w.subs[sub.name]) == 0 {
		delete(w.subs, sub.name)
	}
	var done chan struct{}
	if len(w.subs) == 0 && w.started {
		w.stop()
		w.started = false
		done = w.done
	}
	w.mu.Unlock()
	if done != nil {
		<-done
	}
}

// dispatch hands an observation of Lease name to its subscribers.
func (w *SharedWatch) dispatch(name string, obs observation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for sub := range w.subs[name] {
		sub.latest.put(obs)
	}
}

// run keeps one watch open on the namespace's Leases: from the current
// state at first and after 410 Gone, resumed from the last
// resourceVersion when the watch closes.
func (w *SharedWatch) run(ctx context.Context, log logr.Logger) {
	backoff := newBackoff(w.clock, 250*time.Millisecond, 8*time.Second)
	failures := newErrorStreak(w.clock, log, "Cannot watch leases; retrying with backoff")
	rv := ""
	for ctx.Err() == nil {
		wi, err := w.client.Leases(w.namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		switch {
		case err == nil:
		case apierrors.IsForbidden(err):
			log.Info("Shared lease watch is forbidden; each elector polls its own lease instead. Grant 'watch' on leases in the namespace", "err", err.Error())
			w.mu.Lock()
			w.forbidden = true
			for _, subs := range w.subs {
				for sub := range subs {
					close(sub.lost)
				}
			}
			w.subs = map[string]map[*subscription]struct{}{}
			w.mu.Unlock()
			return
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			rv = ""
			continue
		default:
			failures.failed(err)
			backoff.wait(ctx)
			continue
		}
		failures.succeeded()
		backoff.reset()
		rv, _ = followWatch(ctx, log, wi, rv, func(name string, obs observation) bool {
			w.dispatch(name, obs)
			return true
		})
	}
}
