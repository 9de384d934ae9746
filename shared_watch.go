package leasehold

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/retry"
)

// SharedWatch: many electors of one process, each on its own Lease in one
// namespace, served by a single watch on that namespace's Leases.

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
	backoff := retry.NewBackoff(w.clock, 250*time.Millisecond, 8*time.Second)
	failures := newStreak(w.clock, log, "Cannot watch leases; retrying with backoff", nil)
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
			failures.Failed(err)
			backoff.Wait(ctx)
			continue
		}
		failures.Succeeded()
		backoff.Reset()
		rv, _ = followWatch(ctx, log, wi, rv, func(name string, obs observation) bool {
			w.dispatch(name, obs)
			return true
		})
	}
}
