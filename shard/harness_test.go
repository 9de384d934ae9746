package shard

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/klog/v2"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// The harness: members on one fake clock, talking to one compare-and-swap
// Lease server (leaseholdtest). Time moves only when a test advances the
// clock; between steps the harness waits until the members have settled
// (no request in flight, no new timer), so a step never outruns the
// reaction to the previous one.

const (
	testNS    = "ns"
	testGroup = "grp"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type harness struct {
	t     *testing.T
	clock *clocktesting.FakeClock
	srv   *leaseholdtest.Server
	step  time.Duration
	works *tracker
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, clock: clocktesting.NewFakeClock(t0), srv: leaseholdtest.NewServer(), step: 250 * time.Millisecond, works: newTracker()}
}

// settle waits, in real time, until the fake clock's waiters, the
// server's requests in flight and the request count are stable.
func (h *harness) settle() {
	h.t.Helper()
	last, stable := -1, 0
	for i := 0; i < 20000 && stable < 20; i++ {
		n := h.clock.Waiters()*1_000_000 + h.srv.InFlight()*100_000 + h.srv.Requests("", "") + h.works.events()
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.settle()
	for d > 0 {
		s := min(d, h.step)
		h.clock.Step(s)
		d -= s
		h.settle()
	}
}

// until advances the clock in small steps until cond holds, failing after
// limit of fake time. It returns the fake time it took.
func (h *harness) until(limit time.Duration, what string, cond func() bool) time.Duration {
	h.t.Helper()
	start := h.clock.Now()
	h.settle()
	for !cond() {
		if h.clock.Since(start) >= limit {
			h.t.Fatalf("not within %v of fake time: %s\n%s", limit, what, h.dump())
		}
		h.clock.Step(h.step)
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
// overlaps: a shard started by one member while another's run of it had
// not returned.
type tracker struct {
	mu       sync.Mutex
	active   map[int]map[string]int // shard -> member -> runs in progress
	starts   map[string]int         // member/shard -> starts
	stops    map[string]int         // member/shard -> OnShardStopped calls
	returns  map[string]int         // member/shard -> returns of OnShardStarted
	overlaps []string
	log      []string
	n        int
}

func newTracker() *tracker {
	return &tracker{active: map[int]map[string]int{}, starts: map[string]int{}, stops: map[string]int{}, returns: map[string]int{}}
}

func key(id string, shard int) string { return fmt.Sprintf("%s/%d", id, shard) }

func (tr *tracker) start(id string, shard int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.n++
	if tr.active[shard] == nil {
		tr.active[shard] = map[string]int{}
	}
	for other, n := range tr.active[shard] {
		if n > 0 {
			tr.overlaps = append(tr.overlaps, fmt.Sprintf("shard %d started by %s while %s ran it", shard, id, other))
		}
	}
	tr.active[shard][id]++
	tr.starts[key(id, shard)]++
	tr.log = append(tr.log, fmt.Sprintf("start %s", key(id, shard)))
}

func (tr *tracker) returned(id string, shard int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.n++
	tr.active[shard][id]--
	tr.returns[key(id, shard)]++
	tr.log = append(tr.log, fmt.Sprintf("return %s", key(id, shard)))
}

func (tr *tracker) stopped(id string, shard int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.n++
	tr.stops[key(id, shard)]++
	if tr.stops[key(id, shard)] > tr.returns[key(id, shard)] {
		tr.overlaps = append(tr.overlaps, fmt.Sprintf("OnShardStopped(%d) of %s before its OnShardStarted returned", shard, id))
	}
}

func (tr *tracker) events() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.n
}

// runners returns, per shard, the members running it now.
func (tr *tracker) runners() map[int][]string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[int][]string{}
	for s, m := range tr.active {
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
	// returnEarly makes a shard's work return at once.
	returnEarly map[int]bool
}

func (h *harness) member(id string, mutate ...func(*Config)) *tmember {
	h.t.Helper()
	tm := &tmember{h: h, id: id, done: make(chan error, 1), logs: &logSink{}, hold: map[int]chan struct{}{}, ctxs: map[int]context.Context{}, returnEarly: map[int]bool{}}
	tm.cfg = Config{
		Namespace: testNS, Group: testGroup, Identity: id, Client: h.srv.Client(id),
		Shards:        8,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ReleaseOnCancel: true,
		Clock:           h.clock,
		OnShardStarted:  tm.work,
		OnShardStopped:  func(shard int) { h.works.stopped(id, shard) },
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
		tm.mu.Lock()
		for s, ch := range tm.hold {
			select {
			case <-ch:
			default:
				close(ch)
			}
			delete(tm.hold, s)
		}
		tm.mu.Unlock()
		for i := 0; i < 400; i++ {
			select {
			case err := <-tm.done:
				tm.done <- err
				return
			default:
			}
			tm.h.clock.Step(100 * time.Millisecond)
			time.Sleep(time.Millisecond)
		}
		tm.h.t.Errorf("%s: Run did not return after cancel", tm.id)
	})
	tm.h.settle()
	return tm
}

// stop cancels Run's ctx and waits for Run to return, moving time.
func (tm *tmember) stop() error {
	tm.h.t.Helper()
	tm.cancel()
	return tm.wait()
}

func (tm *tmember) wait() error {
	tm.h.t.Helper()
	for i := 0; i < 600; i++ {
		tm.h.settle()
		select {
		case err := <-tm.done:
			tm.done <- err
			return err
		default:
		}
		tm.h.clock.Step(100 * time.Millisecond)
	}
	tm.h.t.Fatalf("%s: Run did not return\n%s", tm.id, tm.logs)
	return nil
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
