package leasehold

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// The test harness: candidates on one fake clock, talking to one
// compare-and-swap Lease server, inside a testing/synctest bubble. Time
// moves only when a test advances the fake clock; between steps the
// harness waits until every goroutine of the bubble is durably blocked
// (synctest.Wait), so a step never outruns the reaction to the previous
// one, and the wait is exact.

const (
	testNS   = "ns"
	testName = "lock"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type harness struct {
	t     *testing.T
	clock *clocktesting.FakeClock
	srv   *leaseholdtest.Server
	// working counts candidates inside OnStartedLeading; maxWorking is
	// the most ever seen at once. Safety means maxWorking <= 1.
	working, maxWorking atomic.Int32
	// step is the largest single step of the fake clock in advance.
	step time.Duration
	// clientFor and leaseAt reach the Lease API under test: srv's by
	// default, or one of client-go's plain fake clientsets.
	clientFor func(id string) coordinationv1client.LeasesGetter
	leaseAt   func(namespace, name string) *coordinationv1.Lease

	mu    sync.Mutex
	cands []*candidate
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, clock: clocktesting.NewFakeClock(t0), srv: leaseholdtest.NewServer(), step: 500 * time.Millisecond}
	h.clientFor = func(id string) coordinationv1client.LeasesGetter { return h.srv.Client(id) }
	h.leaseAt = h.srv.Lease
	h.srv.AddHook(h.loopGuard())
	return h
}

// loopLimit is how many requests one client may send at a single instant
// of the fake clock. An elector sends a handful (a write, a re-read, a
// watch); a path that loops without waiting on its clock sends thousands,
// and would keep synctest.Wait from ever returning.
const loopLimit = 50

// loopGuard fails the test when a client sends more than loopLimit
// requests while the fake clock stands still, and then refuses its
// requests with 500 until the clock moves, so that the loop, waiting in
// backoff, lets the test end instead of hanging.
func (h *harness) loopGuard() leaseholdtest.Hook {
	var mu sync.Mutex
	at := map[string]time.Time{}
	count := map[string]int{}
	return func(_ context.Context, r leaseholdtest.Request) error {
		mu.Lock()
		defer mu.Unlock()
		now := h.clock.Now()
		if !at[r.Client].Equal(now) {
			at[r.Client], count[r.Client] = now, 0
		}
		count[r.Client]++
		if count[r.Client] == loopLimit+1 {
			h.t.Errorf("request loop: %s sent more than %d requests at %v with the fake clock standing still (last: %s)",
				r.Client, loopLimit, now.Sub(t0), r.Verb)
		}
		if count[r.Client] > loopLimit {
			return apierrors.NewInternalError(errors.New("harness: request loop"))
		}
		return nil
	}
}

// newFakeClientsetHarness runs the candidates on one of client-go's plain
// fake clientsets, which returns Leases without a resourceVersion.
func newFakeClientsetHarness(t *testing.T, cs kubernetes.Interface) *harness {
	h := &harness{t: t, clock: clocktesting.NewFakeClock(t0), step: 500 * time.Millisecond}
	h.clientFor = func(string) coordinationv1client.LeasesGetter { return cs.CoordinationV1() }
	h.leaseAt = func(namespace, name string) *coordinationv1.Lease {
		l, err := cs.CoordinationV1().Leases(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return l
	}
	return h
}

// settle waits until every goroutine of the test's synctest bubble is
// durably blocked: each candidate has reacted to everything so far (no
// request in flight, no watch event unread, every timer it wants set),
// and nothing more can happen until the fake clock moves. It is exact:
// synctest.Wait returns at that point and never gives up. Every harness
// test runs inside synctest.Test.
func (h *harness) settle() {
	h.t.Helper()
	synctest.Wait()
}

// advance moves the fake clock forward by d in steps of at most h.step,
// settling after each.
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

// advanceTo moves the fake clock to t0+d.
func (h *harness) advanceTo(d time.Duration) {
	h.t.Helper()
	h.advance(t0.Add(d).Sub(h.clock.Now()))
}

func (h *harness) lease() *coordinationv1.Lease { return h.leaseAt(testNS, testName) }

func (h *harness) holder() string { return leaserecord.Holder(h.lease()) }

// putLease stores a Lease held by holder, as another process would.
func (h *harness) putLease(holder string, durationSeconds int32) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName}}
	if cur := h.lease(); cur != nil {
		l = cur
	}
	now := metav1.NewMicroTime(h.clock.Now())
	if holder != "" {
		l.Spec.HolderIdentity = ptr.To(holder)
	} else {
		l.Spec.HolderIdentity = nil
	}
	l.Spec.LeaseDurationSeconds = ptr.To(durationSeconds)
	l.Spec.RenewTime = &now
	return h.srv.Put(l)
}

// eventually settles (the fake clock standing still) and fails the test
// unless cond then holds: whatever the candidates do without time moving
// has happened by then.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	synctest.Wait()
	if !cond() {
		t.Fatalf("not true once settled: %s", what)
	}
}

// candidate is one elector under test, with a record of its callbacks.
type candidate struct {
	h      *harness
	id     string
	e      *Elector
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	logs   *logSink

	mu     sync.Mutex
	events []string
	// recorded is closed and replaced at each record, for await.
	recorded chan struct{}

	// hold, when set, keeps OnStartedLeading running after its ctx is
	// cancelled until the channel is closed.
	hold chan struct{}
	// workCtx is the ctx of the current term's work.
	workCtx atomic.Pointer[context.Context]
	// workReturn, when set, makes OnStartedLeading return (or panic with
	// the value) as soon as it starts.
	workReturn func()
}

func (h *harness) candidate(id string, mutate ...func(*Config)) *candidate {
	h.t.Helper()
	c := &candidate{h: h, id: id, done: make(chan error, 1), logs: &logSink{}}
	c.cfg = Config{
		Lock:          &LeaseLock{Namespace: testNS, Name: testName, Identity: id, Client: h.clientFor(id)},
		LeaseDuration: 15 * time.Second,
		RenewDeadline: 10 * time.Second,
		RetryPeriod:   2 * time.Second,
		Clock:         h.clock,
		Callbacks: Callbacks{
			OnStartedLeading: c.work,
			OnStoppedLeading: func() { c.record("stopped") },
			OnNewLeader:      func(leader string) { c.record("new:" + leader) },
		},
	}
	for _, m := range mutate {
		m(&c.cfg)
	}
	e, err := New(c.cfg)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	c.e = e
	h.mu.Lock()
	h.cands = append(h.cands, c)
	h.mu.Unlock()
	return c
}

func (c *candidate) work(ctx context.Context) {
	c.record("started")
	c.workCtx.Store(&ctx)
	n := c.h.working.Add(1)
	for {
		m := c.h.maxWorking.Load()
		if n <= m || c.h.maxWorking.CompareAndSwap(m, n) {
			break
		}
	}
	defer func() {
		c.h.working.Add(-1)
		c.record("returned")
	}()
	if c.workReturn != nil {
		c.workReturn()
		return
	}
	<-ctx.Done()
	if c.hold != nil {
		<-c.hold
	}
}

func (c *candidate) record(ev string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, ev)
	if c.recorded != nil {
		close(c.recorded)
	}
	c.recorded = make(chan struct{})
}

// await blocks until the candidate has recorded ev n times. It blocks on
// a channel, so a goroutine awaiting counts as durably blocked in the
// bubble (a request hook may await the work while the request is held).
func (c *candidate) await(ev string, n int) {
	for {
		c.mu.Lock()
		got := 0
		for _, e := range c.events {
			if e == ev {
				got++
			}
		}
		if c.recorded == nil {
			c.recorded = make(chan struct{})
		}
		ch := c.recorded
		c.mu.Unlock()
		if got >= n {
			return
		}
		<-ch
	}
}

func (c *candidate) history() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...)
}

func (c *candidate) count(ev string) int {
	n := 0
	for _, e := range c.history() {
		if e == ev {
			n++
		}
	}
	return n
}

// start runs the elector in a goroutine with a logger that records lines,
// and settles.
func (c *candidate) start() *candidate {
	c.launch()
	c.h.settle()
	return c
}

// launch runs the elector like start, without settling.
func (c *candidate) launch() *candidate {
	ctx, cancel := context.WithCancel(context.Background())
	ctx = klog.NewContext(ctx, c.logs.logger())
	c.cancel = cancel
	go func() { c.done <- c.e.Run(ctx) }()
	c.h.t.Cleanup(func() {
		cancel()
		if c.hold != nil {
			select {
			case <-c.hold:
			default:
				close(c.hold)
			}
		}
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.h.t.Errorf("%s: Run did not return after cancel", c.id)
		}
	})
	return c
}

// wait returns Run's error, failing the test if Run does not return while
// the harness keeps time moving.
func (c *candidate) wait() error {
	c.h.t.Helper()
	for i := 0; i < 600; i++ {
		select {
		case err := <-c.done:
			c.done <- err // keep it for Cleanup
			return err
		default:
		}
		c.h.advance(100 * time.Millisecond)
	}
	c.h.t.Fatalf("%s: Run did not return", c.id)
	return nil
}

// following fails the test unless Run is still running (settled, the
// clock standing still) and the candidate sees leader as the holder.
func (c *candidate) following(leader string) {
	c.h.t.Helper()
	c.h.settle()
	select {
	case err := <-c.done:
		c.done <- err
		c.h.t.Fatalf("%s: Run returned %v; want it following %q", c.id, err, leader)
	default:
	}
	if got := c.e.Leader(); got != leader {
		c.h.t.Fatalf("%s: follows %q, want %q", c.id, got, leader)
	}
}

func (c *candidate) waitLeader() {
	c.h.t.Helper()
	eventually(c.h.t, c.id+" leads", c.e.IsLeader)
}

// logSink records log lines for assertions.
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

func (s *logSink) matching(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(strings.Join(s.lines, "\n"))
}

// returnsWithin advances the clock in steps of 100ms until Run returns,
// for at most limit, and returns Run's error (nil if it did not return:
// the caller compares the time taken).
func (c *candidate) returnsWithin(limit time.Duration) error {
	c.h.t.Helper()
	from := c.h.clock.Now()
	for c.h.clock.Since(from) < limit {
		c.h.advance(100 * time.Millisecond)
		select {
		case err := <-c.done:
			c.done <- err // keep it for Cleanup
			return err
		default:
		}
	}
	return nil
}

// failWhile makes client's requests of verb fail with a 500 while the
// returned flag is set.
func (h *harness) failWhile(client, verb string) *atomic.Bool {
	var failing atomic.Bool
	h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
		if r.Client == client && r.Verb == verb && failing.Load() {
			return apierrors.NewInternalError(errors.New("etcd is down"))
		}
		return nil
	})
	return &failing
}
