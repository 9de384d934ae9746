package leasehold

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/go-logr/logr"
)

// Callbacks are the user's hooks into an election. The contract they get is
// stated in the package documentation, under "Callback contract".
type Callbacks struct {
	// OnStartedLeading runs the leader's work, in its own goroutine, when
	// a term starts. Its ctx is cancelled the moment the term ends. It
	// must return promptly after ctx is cancelled. Required.
	OnStartedLeading func(ctx context.Context)

	// OnStoppedLeading is called once per term, only after
	// OnStartedLeading was called, and after it has returned (or after
	// the safety margin ran out when the lease was lost). Optional.
	OnStoppedLeading func()

	// OnNewLeader is called with the identity of each new holder this
	// process observes, the first one included, in order and one call at
	// a time. It is not called when the Lease is released (empty holder).
	// Optional.
	OnNewLeader func(identity string)
}

// workResult is how the leader's work ended.
type workResult struct {
	panicked any // non-nil if OnStartedLeading panicked
	stack    []byte
}

// err turns a work ending into the error Run reports for it.
func (w workResult) err() error {
	if w.panicked != nil {
		return fmt.Errorf("%w: %v", ErrWorkPanicked, w.panicked)
	}
	return ErrWorkReturned
}

// startWork runs OnStartedLeading in its own goroutine and reports its end,
// recovering a panic, on the returned channel (buffered, so the goroutine
// never blocks on a reader that gave up on it).
func startWork(ctx context.Context, work func(context.Context)) <-chan workResult {
	done := make(chan workResult, 1)
	go func() {
		var res workResult
		defer func() {
			if p := recover(); p != nil {
				res = workResult{panicked: p, stack: debug.Stack()}
			}
			done <- res
		}()
		work(ctx)
	}()
	return done
}

// callSafely calls f, recovering and logging a panic so that a bug in a
// user callback cannot crash the elector or leave the lease held.
func callSafely(log logr.Logger, what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			log.Error(fmt.Errorf("%v", p), "Callback panicked; recovered", "callback", what, "stack", string(debug.Stack()))
		}
	}()
	f()
}

// leaderNotifier delivers OnNewLeader calls in order, one at a time, on a
// goroutine of its own, so a slow callback never delays a renewal. The
// goroutine runs only while calls are queued: an idle notifier, or one
// without a callback, costs none.
type leaderNotifier struct {
	log      logr.Logger
	callback func(identity string)

	mu       sync.Mutex
	queue    []string
	last     string // last identity queued; duplicates are not queued
	active   bool   // a delivery goroutine is running
	closed   bool
	finished chan struct{} // closed when the delivery goroutine ends, if active
}

func newLeaderNotifier(log logr.Logger, callback func(string)) *leaderNotifier {
	return &leaderNotifier{log: log, callback: callback}
}

// holderSeen queues a call for identity if it differs from the last one
// queued. An empty identity (a released lease) is not reported.
func (n *leaderNotifier) holderSeen(identity string) {
	if identity == "" || n.callback == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if identity == n.last || n.closed {
		return
	}
	n.last = identity
	n.queue = append(n.queue, identity)
	if !n.active {
		n.active = true
		n.finished = make(chan struct{})
		go n.deliver(n.finished)
	}
}

// deliver makes the queued calls, in order, then ends.
func (n *leaderNotifier) deliver(finished chan struct{}) {
	defer close(finished)
	for {
		n.mu.Lock()
		if len(n.queue) == 0 || n.closed {
			n.active = false
			n.mu.Unlock()
			return
		}
		id := n.queue[0]
		n.queue = n.queue[1:]
		n.mu.Unlock()
		callSafely(n.log, "OnNewLeader", func() { n.callback(id) })
	}
}

// close stops delivery and waits for a call in progress to return.
// Queued calls not yet started are dropped.
func (n *leaderNotifier) close() {
	n.mu.Lock()
	n.closed = true
	n.queue = nil
	finished := n.finished
	active := n.active
	n.mu.Unlock()
	if active {
		<-finished
	}
}
