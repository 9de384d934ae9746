package leaseholdtest

import (
	"sync"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// watchBuffer is how many events a watcher holds for a slow reader before
// the server drops it, as kube-apiserver drops watchers that fall behind.
const watchBuffer = 100

// watcher is one open watch. Events are sent under the server's lock, so
// they are delivered in resourceVersion order.
type watcher struct {
	server    *Server
	namespace string
	selector  fields.Selector
	ch        chan watch.Event
	done      chan struct{}
	once      sync.Once
}

// newWatcher makes a watcher with room for a replay of n events and then
// watchBuffer more.
func newWatcher(s *Server, namespace string, sel fields.Selector, n int) *watcher {
	return &watcher{server: s, namespace: namespace, selector: sel,
		ch: make(chan watch.Event, n+watchBuffer), done: make(chan struct{})}
}

// ResultChan returns the event channel. It is closed when the watch ends.
func (w *watcher) ResultChan() <-chan watch.Event { return w.ch }

// Stop ends the watch.
func (w *watcher) Stop() {
	w.server.mu.Lock()
	defer w.server.mu.Unlock()
	w.closeLocked()
}

func (w *watcher) closeLocked() {
	w.once.Do(func() {
		delete(w.server.watchers, w)
		close(w.done)
		close(w.ch)
	})
}

func (w *watcher) sendLocked(ev event) {
	select {
	case <-w.done:
		return
	default:
	}
	if ev.lease.Namespace != w.namespace || !matches(w.selector, ev.lease) {
		return
	}
	select {
	case w.ch <- watch.Event{Type: ev.typ, Object: ev.lease.DeepCopy()}:
	default:
		w.closeLocked() // too slow: drop it
	}
}

// Unread returns how many watch events the server has sent that their
// readers have not taken yet, over every open watch.
func (s *Server) Unread() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for w := range s.watchers {
		n += len(w.ch)
	}
	return n
}
