package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// The harness: members talking to one compare-and-swap Lease server
// (leaseholdtest), inside a testing/synctest bubble whose virtual clock
// drives every timer. Time moves only when every goroutine of the bubble
// is durably blocked, so it never outruns a reaction: between steps the
// harness waits (synctest.Wait) until every member has reacted to
// everything so far (no request in flight, no event unread, every timer
// it wants set). The wait is exact and never gives up; nothing sleeps in
// real time.

const (
	testNS    = "ns"
	testGroup = "grp"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type harness struct {
	t     *testing.T
	clock clock.WithTicker // the bubble's virtual clock
	srv   *leaseholdtest.Server
	// step is how often until looks at its condition, in virtual time.
	step  time.Duration
	works *tracker
}

// inBubble runs f with a new harness inside a synctest bubble. Every
// member started in f is stopped, and its Run has returned, before
// inBubble returns: a goroutine left behind fails the test.
func inBubble(t *testing.T, f func(t *testing.T, h *harness)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		h := &harness{t: t, clock: clock.RealClock{}, srv: leaseholdtest.NewServer(), step: 100 * time.Millisecond, works: newTracker()}
		h.srv.AddHook(h.busyLoopGuard())
		f(t, h)
	})
}

// busyLoopRequests is more requests than any member makes at one instant
// of virtual time, unless it loops without waiting.
const busyLoopRequests = 2000

// busyLoopGuard is a server hook that fails the test when the members
// send more than busyLoopRequests requests at one instant of virtual time:
// a loop that never waits would otherwise hang the test (virtual time
// never moves). Once it fired, it fails such requests, so that the loop's
// backoff lets time move and the test ends.
func (h *harness) busyLoopGuard() leaseholdtest.Hook {
	var mu sync.Mutex
	var at time.Time
	n, reported := 0, false
	return func(ctx context.Context, r leaseholdtest.Request) error {
		mu.Lock()
		defer mu.Unlock()
		if now := h.now(); !now.Equal(at) {
			at, n = now, 0
		}
		n++
		if n <= busyLoopRequests {
			return nil
		}
		if !reported {
			reported = true
			h.t.Errorf("busy loop: more than %d requests at one instant (%s of %s by %s the last)", busyLoopRequests, r.Verb, r.Name, r.Client)
		}
		return errors.New("test: busy loop")
	}
}

func (h *harness) now() time.Time { return h.clock.Now() }

// settle returns once every goroutine of the bubble but the test's is
// durably blocked: everything the members do without time moving has
// happened.
func (h *harness) settle() {
	h.t.Helper()
	synctest.Wait()
}

// advance lets d of virtual time pass; every timer on the way fires at
// its instant, and the members react to each before time moves on.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.settle()
	time.Sleep(d)
	h.settle()
}

// until lets virtual time pass, looking at cond every h.step, until cond
// holds; it fails the test after limit. It returns the virtual time it
// took.
func (h *harness) until(limit time.Duration, what string, cond func() bool) time.Duration {
	h.t.Helper()
	start := h.now()
	h.settle()
	for !cond() {
		if h.clock.Since(start) >= limit {
			h.t.Fatalf("not within %v: %s\n%s", limit, what, h.dump())
		}
		time.Sleep(h.step)
		h.settle()
	}
	return h.clock.Since(start)
}

func (h *harness) assignment() *assignment {
	l := h.srv.Lease(testNS, testGroup)
	if l == nil {
		return nil
	}
	a, err := decodeLease(l)
	if err != nil {
		h.t.Fatalf("decode: %v", err)
	}
	return a
}

func (h *harness) dump() string {
	var b strings.Builder
	if l := h.srv.Lease(testNS, testGroup); l != nil {
		fmt.Fprintf(&b, "assignment rv %s: %s\n", l.ResourceVersion, l.Annotations[AnnotationAssignment])
	}
	b.WriteString(h.works.String())
	return b.String()
}

// tracker records every run of every shard, across members, and the
// overlaps: a shard started by one member while another member still
// owned it, that is, before that member's run of it had returned and
// OnShardStopped had been called for it.
type tracker struct {
	mu       sync.Mutex
	running  map[int]map[string]int // shard -> member -> OnShardStarted calls not returned yet
	owning   map[int]map[string]int // shard -> member -> runs not followed by OnShardStopped yet
	starts   map[string]int         // member/shard -> starts
	stops    map[string]int         // member/shard -> OnShardStopped calls
	returns  map[string]int         // member/shard -> returns of OnShardStarted
	overlaps []string
	log      []string
}

func newTracker() *tracker {
	return &tracker{running: map[int]map[string]int{}, owning: map[int]map[string]int{},
		starts: map[string]int{}, stops: map[string]int{}, returns: map[string]int{}}
}

func key(id string, shard int) string { return fmt.Sprintf("%s/%d", id, shard) }

func (tr *tracker) start(id string, shard int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.running[shard] == nil {
		tr.running[shard], tr.owning[shard] = map[string]int{}, map[string]int{}
	}
	for other, n := range tr.owning[shard] {
		if n > 0 && other != id {
			tr.overlaps = append(tr.overlaps, fmt.Sprintf("shard %d started by %s while %s still owned it (run not returned or not stopped)", shard, id, other))
		}
	}
	if tr.running[shard][id] > 0 {
		tr.overlaps = append(tr.overlaps, fmt.Sprintf("shard %d started again by %s before its previous run returned", shard, id))
	}
	tr.running[shard][id]++
	tr.owning[shard][id]++
	tr.starts[key(id, shard)]++
	tr.log = append(tr.log, fmt.Sprintf("start %s", key(id, shard)))
}

func (tr *tracker) returned(id string, shard int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.running[shard][id]--
	tr.returns[key(id, shard)]++
	tr.log = append(tr.log, fmt.Sprintf("return %s", key(id, shard)))
}

func (tr *tracker) stopped(id string, shard int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.stops[key(id, shard)]++
	tr.log = append(tr.log, fmt.Sprintf("stopped %s", key(id, shard)))
	if tr.stops[key(id, shard)] > tr.returns[key(id, shard)] {
		tr.overlaps = append(tr.overlaps, fmt.Sprintf("OnShardStopped(%d) of %s before its OnShardStarted returned", shard, id))
		return
	}
	tr.owning[shard][id]--
}

// runners returns, per shard, the members that own it now: started, and
// not yet stopped.
func (tr *tracker) runners() map[int][]string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[int][]string{}
	for s, m := range tr.owning {
		for id, n := range m {
			if n > 0 {
				out[s] = append(out[s], id)
			}
		}
	}
	return out
}

func (tr *tracker) check(t *testing.T) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.overlaps) > 0 {
		t.Errorf("contract broken: %v", tr.overlaps)
	}
}

func (tr *tracker) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := len(tr.log)
	return "last shard events: " + strings.Join(tr.log[max(0, n-40):], ", ")
}

// tmember is one member under test.
type tmember struct {
	h      *harness
	id     string
	m      *Member
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	logs   *logSink

	mu sync.Mutex
	// hold keeps a shard's work running after its ctx is cancelled,
	// until the channel is closed.
	hold map[int]chan struct{}
	// ctxs are the contexts of the shard runs in progress.
	ctxs map[int]context.Context
	// returnEarly makes a shard's next run return at once.
	returnEarly map[int]bool
	// holdStop keeps OnShardStopped of a shard from returning until the
	// channel is closed.
	holdStop map[int]chan struct{}
}

func (h *harness) member(id string, mutate ...func(*Config)) *tmember {
	h.t.Helper()
	tm := &tmember{h: h, id: id, done: make(chan error, 1), logs: &logSink{}, hold: map[int]chan struct{}{}, ctxs: map[int]context.Context{}, returnEarly: map[int]bool{}, holdStop: map[int]chan struct{}{}}
	tm.cfg = Config{
		Namespace: testNS, Group: testGroup, Identity: id, Client: h.srv.Client(id),
		Shards:        8,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ReleaseOnCancel: true,
		Clock:           h.clock,
		OnShardStarted:  tm.work,
		OnShardStopped:  tm.stopped,
	}
	for _, f := range mutate {
		f(&tm.cfg)
	}
	m, err := New(tm.cfg)
	if err != nil {
		h.t.Fatalf("New(%s): %v", id, err)
	}
	tm.m = m
	return tm
}

func (tm *tmember) work(ctx context.Context, shard int) {
	tm.h.works.start(tm.id, shard)
	tm.mu.Lock()
	tm.ctxs[shard] = ctx
	early := tm.returnEarly[shard]
	delete(tm.returnEarly, shard)
	tm.mu.Unlock()
	defer tm.h.works.returned(tm.id, shard)
	if early {
		return
	}
	<-ctx.Done()
	tm.mu.Lock()
	hold := tm.hold[shard]
	tm.mu.Unlock()
	if hold != nil {
		<-hold
	}
}

// stopped is OnShardStopped: it returns once holdStop allows, and the
// tracker counts the shard stopped when it returns.
func (tm *tmember) stopped(shard int) {
	tm.mu.Lock()
	hold := tm.holdStop[shard]
	tm.mu.Unlock()
	if hold != nil {
		<-hold
	}
	tm.h.works.stopped(tm.id, shard)
}

// holdStopped keeps OnShardStopped(shard) from returning until the
// returned func is called.
func (tm *tmember) holdStopped(shard int) (release func()) {
	ch := make(chan struct{})
	tm.mu.Lock()
	tm.holdStop[shard] = ch
	tm.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// holdShard keeps shard's work from returning until the returned func is
// called.
func (tm *tmember) holdShard(shard int) (release func()) {
	ch := make(chan struct{})
	tm.mu.Lock()
	tm.hold[shard] = ch
	tm.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (tm *tmember) start() *tmember {
	ctx, cancel := context.WithCancel(context.Background())
	ctx = klog.NewContext(ctx, tm.logs.logger())
	tm.cancel = cancel
	go func() { tm.done <- tm.m.Run(ctx) }()
	tm.h.t.Cleanup(func() {
		cancel()
		tm.releaseAll()
		select {
		case err := <-tm.done:
			tm.done <- err
		case <-time.After(10 * time.Minute):
			tm.h.t.Errorf("%s: Run did not return within 10 minutes of virtual time after cancel\n%s", tm.id, tm.logs)
		}
	})
	tm.h.settle()
	return tm
}

// releaseAll lets every held shard's work return.
func (tm *tmember) releaseAll() {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	for _, holds := range []map[int]chan struct{}{tm.hold, tm.holdStop} {
		for s, ch := range holds {
			select {
			case <-ch:
			default:
				close(ch)
			}
			delete(holds, s)
		}
	}
}

// stop cancels Run's ctx and waits for Run to return, letting time pass.
func (tm *tmember) stop() error {
	tm.h.t.Helper()
	tm.cancel()
	return tm.wait()
}

// wait waits, letting virtual time pass, for Run to return; it fails the
// test after a minute of virtual time.
func (tm *tmember) wait() error {
	tm.h.t.Helper()
	tm.h.settle()
	select {
	case err := <-tm.done:
		tm.done <- err
		tm.h.settle()
		return err
	case <-time.After(time.Minute):
	}
	tm.h.t.Fatalf("%s: Run did not return within a minute\n%s", tm.id, tm.logs)
	return nil
}

// returned reports whether Run has returned, and its error.
func (tm *tmember) returned() (bool, error) {
	select {
	case err := <-tm.done:
		tm.done <- err
		return true, err
	default:
		return false, nil
	}
}

func (tm *tmember) owned() []int { return tm.m.Owned() }

// logSink records log lines for assertions and failure output.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lines = append(s.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 4})
}

func (s *logSink) matching(sub string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// counts returns the number of shards each member runs.
func counts(ms ...*tmember) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = len(m.owned())
	}
	return out
}

// balanced: every shard runs in exactly one of ms, and counts differ by
// at most one.
func balanced(shards int, ms ...*tmember) bool {
	seen := map[int]int{}
	for _, m := range ms {
		for _, s := range m.owned() {
			seen[s]++
		}
	}
	if len(seen) != shards {
		return false
	}
	for _, n := range seen {
		if n != 1 {
			return false
		}
	}
	c := counts(ms...)
	return slices.Max(c)-slices.Min(c) <= 1
}

func memberLease(h *harness, id string) *coordinationv1.Lease {
	return h.srv.Lease(testNS, MemberLeaseName(testGroup, id))
}

type leaseholdtestRequest = leaseholdtest.Request
