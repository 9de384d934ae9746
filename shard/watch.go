package shard

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/retry"
	"github.com/leasehold/leasehold/internal/watchloop"
)

// groupMsg is one thing the group watch learned.
type groupMsg struct {
	// list is set for the result of a list: every Lease of the group as
	// of resourceVersion rv.
	list  bool
	items []coordinationv1.Lease
	rv    string
	// typ and lease are set for a watch event.
	typ   watch.EventType
	lease *coordinationv1.Lease
	// err is set when the group cannot be followed at all: the server
	// refuses to list it for good. The watch has stopped.
	err error
}

// groupWatch follows every Lease of the group with one list, then one
// watch with the group's label selector, resumed from the last
// resourceVersion when it closes, and re-listed after 410 Gone or an error
// event. Where the server refuses the watch (RBAC without 'watch', a
// server that does not serve it), it lists the group every retry period
// instead. It makes no other requests.
//
// Every request is bounded by timeout (a watch's by timeout until the
// server answers). Transient failures are retried with capped backoff and
// logged once per streak; a permanent refusal of the list ends the watch
// with an error to the member; a watch that ends as soon as it opened is
// reopened only after a backoff, so that no failure makes it spin.
type groupWatch struct {
	leases      coordinationv1client.LeaseInterface
	group       string
	clock       clock.WithTicker
	timeout     time.Duration
	retryPeriod time.Duration
	log         logr.Logger
	out         chan<- groupMsg

	polling bool // the server refuses the watch: list every retry period
}

func (w *groupWatch) run(ctx context.Context) {
	selector := labels.SelectorFromSet(labels.Set{LabelGroup: w.group}).String()
	bo := retry.NewBackoff(w.clock, w.retryPeriod/4, 4*w.retryPeriod)
	fails := &retry.Streak{Log: w.log, Clock: w.clock, Msg: "Cannot list the group's Leases; retrying with backoff"}
	for ctx.Err() == nil {
		rctx, cancel := retry.WithTimeout(ctx, w.clock, w.timeout)
		list, err := w.leases.List(rctx, metav1.ListOptions{LabelSelector: selector})
		cancel()
		if err != nil {
			if retry.Permanent(err) || apierrors.IsNotFound(err) {
				w.send(ctx, groupMsg{err: fmt.Errorf("%w: list the Leases of group %s (label %s): %w%s", ErrRefused, w.group, selector, err, rbacHint(err))})
				return
			}
			fails.Failed(err)
			if !retry.Sleep(ctx, w.clock, bo.Delay()) {
				return
			}
			continue
		}
		fails.Succeeded()
		if !w.send(ctx, groupMsg{list: true, items: list.Items, rv: list.ResourceVersion}) {
			return
		}
		if list.ResourceVersion == "" {
			return // the member ends: no compare-and-swap
		}
		if w.polling {
			bo.Reset()
			if !retry.Sleep(ctx, w.clock, w.retryPeriod) {
				return
			}
			continue
		}
		started := w.clock.Now()
		w.watchFrom(ctx, selector, list.ResourceVersion)
		if w.clock.Since(started) >= w.retryPeriod {
			bo.Reset()
		} else if !w.polling && !retry.Sleep(ctx, w.clock, bo.Delay()) {
			return // lists keep failing fast: do not spin
		}
	}
}

// rbacHint names the RBAC rule a 403 lacks.
func rbacHint(err error) string {
	if apierrors.IsForbidden(err) {
		return ": grant get, list, watch, create, update and delete on coordination.k8s.io leases in the group's namespace"
	}
	return ""
}

// watchFrom watches from rv until it must re-list. A permanent refusal of
// the watch switches to polling.
func (w *groupWatch) watchFrom(ctx context.Context, selector, rv string) {
	bo := retry.NewBackoff(w.clock, w.retryPeriod/4, 4*w.retryPeriod)
	fails := &retry.Streak{Log: w.log, Clock: w.clock, Msg: "Cannot watch the group's Leases; retrying with backoff"}
	for ctx.Err() == nil {
		wi, err := w.open(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
		switch {
		case err == nil:
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			w.log.V(2).Info("Group watch history expired (410 Gone); listing again", "resourceVersion", rv)
			return
		case retry.Permanent(err) || apierrors.IsNotFound(err):
			w.log.Info("The API server refuses to watch the group's Leases; listing them every retry period instead. Grant 'watch' on leases for faster handoffs",
				"retryPeriod", w.retryPeriod, "err", err.Error())
			w.polling = true
			return
		default:
			fails.Failed(err)
			if !retry.Sleep(ctx, w.clock, bo.Delay()) {
				return
			}
			continue
		}
		fails.Succeeded()
		opened := w.clock.Now()
		var resume bool
		rv, resume = w.drain(ctx, wi, rv)
		if !resume {
			return
		}
		if w.clock.Since(opened) >= w.retryPeriod {
			bo.Reset()
		} else if !retry.Sleep(ctx, w.clock, bo.Delay()) {
			return // watches keep ending at once: do not spin
		}
	}
}

// open starts a watch; the request fails if the server has not answered
// within the request timeout. The watch itself lasts until ctx ends.
func (w *groupWatch) open(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	wctx, cancel := context.WithCancelCause(ctx)
	t := w.clock.NewTimer(w.timeout)
	answered := make(chan struct{})
	go func() {
		defer t.Stop()
		select {
		case <-t.C():
			cancel(context.DeadlineExceeded)
		case <-answered:
		}
	}()
	wi, err := w.leases.Watch(wctx, opts)
	close(answered)
	if err != nil {
		cancel(err)
		return nil, err
	}
	if wctx.Err() != nil {
		wi.Stop()
		cancel(nil)
		return nil, fmt.Errorf("watch the group's Leases: no answer within %v: %w", w.timeout, context.Cause(wctx))
	}
	return &stopWatch{Interface: wi, cancel: func() { cancel(context.Canceled) }}, nil
}

// stopWatch releases the watch's context when it is stopped.
type stopWatch struct {
	watch.Interface
	cancel func()
}

func (s *stopWatch) Stop() {
	s.Interface.Stop()
	s.cancel()
}

// drain forwards events until the watch closes; it returns the version
// to resume from, and false if the caller must list again (or stop).
func (w *groupWatch) drain(ctx context.Context, wi watch.Interface, rv string) (string, bool) {
	rv, end, err := watchloop.Read(ctx, wi, rv, func(typ watch.EventType, l *coordinationv1.Lease) bool {
		return w.send(ctx, groupMsg{typ: typ, lease: l})
	})
	if end == watchloop.Failed {
		w.log.V(2).Info("Group watch ended with an error; listing again", "err", err.Error())
	}
	return rv, end == watchloop.Closed
}

func (w *groupWatch) send(ctx context.Context, m groupMsg) bool {
	select {
	case w.out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}
