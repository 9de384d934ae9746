package testkit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Tracker checks that at most one elector of a test does the leader's
// work at a time, leasehold's and client-go's alike, and hands each start
// of the work to the test (NextStart, NoStart).
type Tracker struct {
	mu       sync.Mutex
	seq      int
	active   map[int]*work
	max      int
	overlaps []string
	starts   chan Start
}

type work struct {
	id string
	// ctx, if set, ends the work when cancelled: client-go does not wait
	// for OnStartedLeading to return before it releases the lease, so a
	// client-go leader's work counts only until its ctx is cancelled.
	ctx    context.Context
	exited bool
}

// Start is one start of the leader's work: who, and when.
type Start struct {
	ID string
	At time.Time
}

// NewTracker returns a Tracker with no work running.
func NewTracker() *Tracker {
	return &Tracker{active: map[int]*work{}, starts: make(chan Start, 64)}
}

// Enter records that id started the leader's work; the returned func
// records that it stopped. ctx may be nil (see work).
func (tr *Tracker) Enter(id string, ctx context.Context) (exit func()) {
	at := time.Now()
	tr.mu.Lock()
	tr.seq++
	key := tr.seq
	w := &work{id: id, ctx: ctx}
	tr.active[key] = w
	var running []string
	for k, o := range tr.active {
		if o.exited || (o.ctx != nil && o.ctx.Err() != nil) {
			delete(tr.active, k)
			continue
		}
		running = append(running, o.id)
	}
	if len(running) > tr.max {
		tr.max = len(running)
	}
	if len(running) > 1 {
		tr.overlaps = append(tr.overlaps, fmt.Sprintf("%s started while %v were leading", id, running))
	}
	tr.mu.Unlock()
	tr.starts <- Start{ID: id, At: at}
	return func() {
		tr.mu.Lock()
		w.exited = true
		delete(tr.active, key)
		tr.mu.Unlock()
	}
}

// Check fails t if two electors ever did the leader's work at once.
func (tr *Tracker) Check(t testing.TB) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.max > 1 || len(tr.overlaps) > 0 {
		t.Errorf("two leaders worked at once (max concurrency %d): %v", tr.max, tr.overlaps)
	}
}

// NextStart waits for the next start of the leader's work, at most within.
func (tr *Tracker) NextStart(t testing.TB, within time.Duration) Start {
	t.Helper()
	select {
	case s := <-tr.starts:
		return s
	case <-time.After(within):
		t.Fatalf("no leader started within %v", within)
		return Start{}
	}
}

// NoStart fails t at once if anyone starts leading within d (0: if a
// start is waiting now), as why says nobody should.
func (tr *Tracker) NoStart(t testing.TB, d time.Duration, why string) {
	t.Helper()
	fail := func(s Start) {
		t.Fatalf("%s started leading at %s, but %s", s.ID, s.At.Format("15:04:05.000"), why)
	}
	select {
	case s := <-tr.starts:
		fail(s)
		return
	default:
	}
	if d <= 0 {
		return
	}
	select {
	case s := <-tr.starts:
		fail(s)
	case <-time.After(d):
	}
}
