// Package watchloop reads a watch of Kubernetes objects the one way the
// election (the root package), shard and the kubectl plugin need: every
// ADDED, MODIFIED and DELETED object handed on in order, the
// resourceVersion to resume from kept up to date by objects and
// BOOKMARKs, and how the watch ended, so that each caller resumes,
// re-reads or stops by its own rule.
package watchloop

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// End says how a watch ended.
type End int

const (
	// Closed: the server closed the watch; resume from the version Read
	// returned.
	Closed End = iota
	// Failed: an ERROR event ended it (as a real API server sends 410
	// Gone when the version left its history); read the current state
	// again. Read returns the event's status as an error.
	Failed
	// Stopped: ctx ended, or deliver asked to stop.
	Stopped
)

// Read reads w until it ends, and stops it. Each ADDED, MODIFIED or
// DELETED object of type T goes to deliver, with its event type; deliver
// returns false to stop. Objects of another type are skipped. rv, the
// version to resume from, moves with every delivered object and every
// BOOKMARK that carries a version.
func Read[T metav1.Object](ctx context.Context, w watch.Interface, rv string, deliver func(watch.EventType, T) bool) (string, End, error) {
	return ReadWith(ctx, w, rv, deliver, Extra{})
}

// Extra is another event a reader serves between watch events, such as a
// renewal timer: whenever the channel C returns (called afresh each time,
// so a timer that is reset works) is ready, F runs; F returns false to
// stop the read.
type Extra struct {
	C func() <-chan time.Time
	F func() bool
}

// ReadWith is Read that also serves extra.
func ReadWith[T metav1.Object](ctx context.Context, w watch.Interface, rv string, deliver func(watch.EventType, T) bool, extra Extra) (string, End, error) {
	defer w.Stop()
	for {
		var tick <-chan time.Time
		if extra.C != nil {
			tick = extra.C()
		}
		select {
		case <-ctx.Done():
			return rv, Stopped, nil
		case <-tick:
			if !extra.F() {
				return rv, Stopped, nil
			}
		case ev, open := <-w.ResultChan():
			if !open {
				return rv, Closed, nil
			}
			switch ev.Type {
			case watch.Error:
				return rv, Failed, apierrors.FromObject(ev.Object)
			case watch.Bookmark:
				if m, ok := ev.Object.(metav1.Object); ok && m.GetResourceVersion() != "" {
					rv = m.GetResourceVersion()
				}
			case watch.Added, watch.Modified, watch.Deleted:
				obj, ok := ev.Object.(T)
				if !ok {
					continue
				}
				if v := obj.GetResourceVersion(); v != "" {
					rv = v
				}
				if !deliver(ev.Type, obj) {
					return rv, Stopped, nil
				}
			}
		}
	}
}
