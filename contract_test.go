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

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// Tests that pin the contract points of doc.go that the mutation audit of
// issue 16 found uncaught. Each names the mutation it catches; hack/mutate
// applies them and checks that these tests fail.

// Contract "the release is conditioned on our own last write". The
// intruder's write lands between our last renewal and the release, and
// again at any read the releasing client makes. A release conditioned on
// our last write gets 409 and gives up at once: one Update, no read, and
// the intruder keeps the Lease.
//
// Catches: a release that GETs the Lease and conditions its write on that
// version; a release retried after a 409.
func TestContractReleaseConditionedOnOwnLastWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		gate := newWatchGate(h.srv.Client("a"))
		a := h.candidate("a", func(c *Config) {
			c.ReleaseOnCancel = true
			c.Lock.Client = gate
		})
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		h.advance(5 * time.Second) // renewals: the release must be conditioned on the last one
		ourLast := h.lease().ResourceVersion
		if h.holder() != "a" || ourLast == "" {
			t.Fatalf("holder %q at resourceVersion %q, want a", h.holder(), ourLast)
		}
		a.cancel()
		eventually(t, "work ctx cancelled", func() bool {
			p := a.workCtx.Load()
			return p != nil && (*p).Err() != nil
		})

		// From here on a learns nothing from its watch, and the fake clock
		// stands still (no renewal): a sees the intruder only if the release
		// reads the Lease.
		gate.pause()
		var releasing atomic.Bool
		var mu sync.Mutex
		var releaseRVs []string
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client != "a" || !releasing.Load() {
				return nil
			}
			switch r.Verb {
			case "get", "list", "watch":
				h.putLease("intruder", 15) // lands at the read
			case "update":
				mu.Lock()
				releaseRVs = append(releaseRVs, r.Lease.ResourceVersion)
				mu.Unlock()
			}
			return nil
		})
		h.putLease("intruder", 15) // lands between our last renewal and the release
		reads := func() int {
			return h.srv.Requests("a", "get") + h.srv.Requests("a", "list") + h.srv.Requests("a", "watch")
		}
		readsBefore, updatesBefore := reads(), h.srv.Requests("a", "update")
		releasing.Store(true)
		close(a.hold)

		returned, err := runReturnsWithin(a, 5*time.Second)
		if !returned {
			t.Fatalf("Run did not return with the fake clock standing still: the release waits (retrying after a 409?); %d release updates",
				h.srv.Requests("a", "update")-updatesBefore)
		}
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		h.advance(15 * time.Second) // time for any retry that would still come
		if n := reads() - readsBefore; n != 0 {
			t.Errorf("the releasing client made %d reads; the release must be conditioned on our last write, not on a read", n)
		}
		mu.Lock()
		rvs := append([]string(nil), releaseRVs...)
		mu.Unlock()
		if len(rvs) != 1 || h.srv.Requests("a", "update")-updatesBefore != 1 {
			t.Errorf("%d release updates (conditioned on %v), want exactly 1: a 409 is not retried", len(rvs), rvs)
		}
		if len(rvs) > 0 && rvs[0] != ourLast {
			t.Errorf("release conditioned on resourceVersion %q, want our last write's %q", rvs[0], ourLast)
		}
		if h.holder() != "intruder" {
			t.Fatalf("holder = %q, want intruder: the release blanked another holder's lease", h.holder())
		}

	})
}

// Contract "the work gets at most the safety margin" after a loss. At one
// millisecond before the margin nothing happens; at the margin exactly,
// with the fake clock standing still, OnStoppedLeading runs and Run
// returns.
//
// Catches: a grace longer than the margin (the harness's wait keeps the
// clock moving, so TestLostLeaseWorkOutlivesMargin cannot tell), or a
// shorter one.
func TestContractLostWorkGetsExactlyTheMargin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a")
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" {
				return apierrors.NewServiceUnavailable("injected")
			}
			return nil
		})
		h.advanceTo(10 * time.Second) // the renew deadline after the acquire at 0s
		eventually(t, "work ctx cancelled at the deadline", func() bool { return (*a.workCtx.Load()).Err() != nil })
		lostAt := h.clock.Now()
		const margin = 15*time.Second - 10*time.Second - 2*time.Second

		h.advance(margin - time.Millisecond)
		if returned, err := runReturnsWithin(a, 100*time.Millisecond); returned || a.count("stopped") != 0 {
			t.Fatalf("at %v after the loss (margin %v): Run returned (%v: %v) or OnStoppedLeading ran (%d): the work got less than the margin",
				h.clock.Since(lostAt), margin, returned, err, a.count("stopped"))
		}

		h.clock.Step(time.Millisecond) // the margin, exactly; from here the clock stands still
		eventually(t, "OnStoppedLeading at the margin, the clock standing still", func() bool { return a.count("stopped") == 1 })
		returned, err := runReturnsWithin(a, 5*time.Second)
		if !returned {
			t.Fatal("Run did not return at the margin: the work got more than the margin")
		}
		if !errors.Is(err, ErrLeaderLost) || !errors.Is(err, ErrWorkOutlivedLease) {
			t.Fatalf("Run = %v, want ErrLeaderLost and ErrWorkOutlivedLease", err)
		}
		if d := h.clock.Since(lostAt); d != margin {
			t.Fatalf("the clock moved to %v after the loss, want the margin %v", d, margin)
		}
		if h.holder() != "a" {
			t.Fatalf("holder = %q: a lost lease must never be released", h.holder())
		}

	})
}

// Contract "Check fails when this process believes it leads but has not
// renewed for RenewDeadline plus the tolerance (its loop is stuck)". The
// renewal hangs past its own timeout, as a client that ignores its ctx
// would: Check is healthy up to RenewDeadline+tolerance after the last
// successful send, and returns ErrRenewStalled right after.
//
// Catches: the ErrRenewStalled branch of Check disabled, or the tolerance
// ignored.
func TestContractCheckRenewStalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		stuck := make(chan struct{})
		var hung atomic.Int32
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" {
				hung.Add(1)
				<-stuck // ignores ctx: the renew loop is stuck in this request
			}
			return nil
		})
		t.Cleanup(func() { close(stuck) }) // before a's own cleanup waits for Run

		const tolerance = 5 * time.Second
		lastSent := h.clock.Now() // the acquire, the last successful write
		h.advanceTo(10*time.Second + tolerance)
		if hung.Load() != 2 {
			t.Fatalf("%d renewals hung, want 2 (the renewal and its hedge: the renew loop stuck in them)", hung.Load())
		}
		if err := a.e.Check(tolerance); err != nil {
			t.Fatalf("Check = %v at RenewDeadline+tolerance (%v) after the last send, want healthy until then", err, h.clock.Since(lastSent))
		}
		h.advance(time.Millisecond)
		if err := a.e.Check(tolerance); !errors.Is(err, ErrRenewStalled) {
			t.Fatalf("Check = %v %v after the last send with the renew loop stuck, want ErrRenewStalled", err, h.clock.Since(lastSent))
		}
		if err := a.e.Check(tolerance + time.Second); err != nil {
			t.Fatalf("Check(tolerance+1s) = %v, want healthy: the tolerance must count", err)
		}

	})
}

// Contract "OnNewLeader is called one call at a time and in order, never
// with a stale identity after a newer one". The first call blocks while
// the holder changes several times, with no settling between the writes:
// no call may start while another runs, and the calls are the writes'
// holders in order (the elector may skip holders it never saw, as the
// writes come faster than it reads).
//
// Catches: OnNewLeader called concurrently (TestOnNewLeaderInOrder settles
// between writes, so it passes); calls out of order.
func TestContractOnNewLeaderOneAtATimeInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("x", 15)
		var inside, overlaps atomic.Int32
		var mu sync.Mutex
		var calls []string
		firstBlocks := make(chan struct{})
		var unblock sync.Once
		release := func() { unblock.Do(func() { close(firstBlocks) }) }
		b := h.candidate("b", func(c *Config) {
			c.Callbacks.OnNewLeader = func(id string) {
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				defer inside.Add(-1)
				mu.Lock()
				calls = append(calls, id)
				first := len(calls) == 1
				mu.Unlock()
				if first {
					<-firstBlocks
				}
			}
		})
		t.Cleanup(release) // before b's own cleanup waits for Run
		b.start()
		got := func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), calls...)
		}
		eventually(t, "the first call", func() bool { return len(got()) == 1 })

		writes := []string{"y", "z", "w", "y", "v", "u"}
		for _, id := range writes {
			h.putLease(id, 15) // no settling between writes
		}
		eventually(t, "b saw the last holder", func() bool { return b.e.Leader() == "u" })
		h.settle() // calls queued by now would have started, if concurrent
		release()
		eventually(t, "the last holder reported", func() bool {
			c := got()
			return c[len(c)-1] == "u"
		})
		h.settle()

		c := got()
		if n := overlaps.Load(); n != 0 {
			t.Fatalf("%d OnNewLeader calls started while another ran; calls %v", n, c)
		}
		if c[0] != "x" {
			t.Fatalf("first call %q, want x; calls %v", c[0], c)
		}
		// The later calls must be a subsequence of the writes' holders,
		// without repeating the previous call.
		i := 0
		for k, id := range c[1:] {
			if id == c[k] {
				t.Fatalf("OnNewLeader(%q) twice in a row; calls %v", id, c)
			}
			for i < len(writes) && writes[i] != id {
				i++
			}
			if i == len(writes) {
				t.Fatalf("calls %v are not the holders %v in order: a stale identity after a newer one", c, writes)
			}
			i++
		}

	})
}

// Contract "only then does it release the Lease and call
// OnStoppedLeading": OnStoppedLeading reads the Lease and finds it
// released already, on a cancel with ReleaseOnCancel and when the work
// returned on its own.
//
// Catches: OnStoppedLeading called before the release.
func TestContractReleaseBeforeOnStoppedLeading(t *testing.T) {
	for _, tc := range []struct {
		name       string
		workReturn func()
		want       error
	}{
		{"cancel with ReleaseOnCancel", nil, nil},
		{"work returned", func() {}, ErrWorkReturned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				var mu sync.Mutex
				var atStop []string
				a := h.candidate("a", func(c *Config) {
					c.ReleaseOnCancel = true
					c.Callbacks.OnStoppedLeading = func() {
						mu.Lock()
						defer mu.Unlock()
						atStop = append(atStop, h.holder())
					}
				})
				a.workReturn = tc.workReturn
				a.start()
				if tc.workReturn == nil {
					a.waitLeader()
					a.cancel()
				}
				if err := a.wait(); !errors.Is(err, tc.want) {
					t.Fatalf("Run = %v, want %v", err, tc.want)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(atStop) != 1 || atStop[0] != "" {
					t.Fatalf("holders seen inside OnStoppedLeading: %q, want one call with the Lease already released", atStop)
				}

			})
		})
	}
}

// A real race: five candidates start at once on a missing Lease, and every
// create is held until all five were sent. Exactly one wins; the other
// four creates meet AlreadyExists (five creates, one Lease).
//
// Catches: a create that lost the race taken for a win
// (TestRaceFiveCandidatesOneWinner settles each candidate before the next
// starts: one create, no conflict).
func TestContractRaceFiveCandidatesReallyRace(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				var sent atomic.Int32
				allSent := make(chan struct{})
				h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
					if r.Verb != "create" {
						return nil
					}
					if sent.Add(1) == 5 {
						close(allSent)
					}
					select {
					case <-allSent:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(10 * time.Second): // a safety valve, not a bound: the counts below fail
						return apierrors.NewServiceUnavailable("not all five creates came")
					}
				})
				var cs []*candidate
				for _, id := range []string{"a", "b", "c", "d", "e"} {
					cs = append(cs, h.candidate(id))
				}
				for _, c := range cs {
					c.launch() // no settling between the starts
				}
				eventually(t, "five creates sent", func() bool { return sent.Load() >= 5 })
				h.settle()
				if n := h.srv.Requests("", "create"); n != 5 {
					t.Fatalf("%d creates, want 5: the candidates did not race", n)
				}
				winner := h.holder()
				if winner == "" {
					t.Fatal("no holder after the race")
				}
				leaders := 0
				for _, c := range cs {
					if c.e.IsLeader() {
						leaders++
						if c.id != winner {
							t.Fatalf("%s believes it leads but the Lease names %q", c.id, winner)
						}
					}
				}
				if leaders != 1 {
					t.Fatalf("%d leaders after five creates met, want 1", leaders)
				}
				// The four losers met AlreadyExists and re-read: they know
				// the winner.
				for _, c := range cs {
					if c.id != winner {
						eventually(t, c.id+" knows the winner", func() bool { return c.e.Leader() == winner })
					}
				}
				h.advance(30 * time.Second)
				leaders = 0
				for _, c := range cs {
					if c.e.IsLeader() {
						leaders++
					}
				}
				if leaders != 1 || h.maxWorking.Load() != 1 || h.holder() != winner {
					t.Fatalf("after 30s: %d leaders, max %d working at once, holder %q; want 1, 1, %q",
						leaders, h.maxWorking.Load(), h.holder(), winner)
				}

			})
		})
	}
}

// The Lease replaced by a new object (new UID) that this leader does not
// see on its watch: only its next renewal finds out, and the replacement
// alone decides how the term ends. The leader must never write into the
// new object. TestLeaseReplacedByNewObject passes on the deletion alone;
// here, without the replacement write, the renewal meets 404 and the
// error says "deleted", which fails.
//
// Catches: any Lease naming this identity taken for our own write.
func TestLeaseReplacedByNewObjectUnseen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		holder string
		want   []error
		says   string
	}{
		{"names another holder", "x", []error{ErrLeaderLost}, `held by "x"`},
		{"names us, not our write", "a", []error{ErrIdentityConflict}, `under this identity`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				gate := newWatchGate(h.srv.Client("a"))
				a := h.candidate("a", func(c *Config) { c.Lock.Client = gate }).start()
				a.waitLeader()
				gate.pause()
				old := h.lease()
				h.srv.Delete(testNS, testName)
				l := old.DeepCopy()
				l.UID, l.ResourceVersion = "", ""
				l.Spec.HolderIdentity = &tc.holder
				stamp := metav1.NewMicroTime(old.Spec.RenewTime.Add(-time.Second)) // a time a never wrote
				l.Spec.RenewTime = &stamp
				replacement := h.srv.Put(l)
				if replacement.UID == old.UID {
					t.Fatal("the replacement kept the old UID")
				}

				err := a.wait()
				for _, want := range tc.want {
					if !errors.Is(err, want) {
						t.Fatalf("Run = %v, want %v", err, want)
					}
				}
				if !strings.Contains(err.Error(), tc.says) {
					t.Fatalf("Run = %v, want it to say %s", err, tc.says)
				}
				if cur := h.lease(); cur.UID != replacement.UID || cur.ResourceVersion != replacement.ResourceVersion {
					t.Fatalf("the Lease is %s at %s, want the untouched replacement %s at %s: a wrote into an object it did not create",
						cur.UID, cur.ResourceVersion, replacement.UID, replacement.ResourceVersion)
				}
				if a.count("stopped") != 1 {
					t.Fatalf("callbacks %v, want one OnStoppedLeading", a.history())
				}

			})
		})
	}
}

// A reader of the Lease must not change what a client-go fake clientset
// stores. The fakes' tracker hands its stored object itself to a watch
// that starts with the existing Leases, and the elector trims every
// watched Lease in place (kept drops managedFields): the fake's stored
// Lease changes behind its lock, and any concurrent Get (a test reading
// the Lease, another candidate) is a data race under -race.
func TestPlainFakeStoredLeaseNotMutatedByElector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		cs := fake.NewClientset()
		h := newFakeClientsetHarness(t, cs)
		a := h.candidate("a").start()
		a.waitLeader()
		before := len(h.lease().ManagedFields)
		if before == 0 {
			t.Fatal("the fake stores no managedFields: nothing to check")
		}
		b := h.candidate("b").start() // its watch starts with the stored Lease
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		if after := len(h.lease().ManagedFields); after != before {
			t.Fatalf("the fake's stored Lease has %d managedFields entries after a follower started watching, had %d: the elector changed the object it was handed", after, before)
		}

	})
}

// runReturnsWithin waits, in real time and with the fake clock standing
// still, for c's Run to return. It keeps the error for Cleanup.
func runReturnsWithin(c *candidate, d time.Duration) (returned bool, err error) {
	select {
	case err := <-c.done:
		c.done <- err
		return true, err
	case <-time.After(d):
		return false, nil
	}
}

// watchGate wraps a client so that a test can hold back what its watches
// deliver: while paused, the client learns of others' writes only by
// reading the Lease, as when its watch lags behind.
type watchGate struct {
	coordinationv1client.LeasesGetter
	mu   sync.Mutex
	open chan struct{} // closed while events flow
	one  chan struct{} // while paused, lets one event through
}

func newWatchGate(c coordinationv1client.LeasesGetter) *watchGate {
	g := &watchGate{LeasesGetter: c, open: make(chan struct{}), one: make(chan struct{})}
	close(g.open)
	return g
}

// pause holds back every event of the client's watches from now on.
func (g *watchGate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

// deliverOne lets one held-back event through, and reports whether one
// was waiting.
func (g *watchGate) deliverOne() bool {
	select {
	case g.one <- struct{}{}:
		return true
	default:
		return false
	}
}

// resume lets the held-back events flow again, in order.
func (g *watchGate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *watchGate) opened() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *watchGate) Leases(namespace string) coordinationv1client.LeaseInterface {
	return &gatedLeases{LeaseInterface: g.LeasesGetter.Leases(namespace), g: g}
}

type gatedLeases struct {
	coordinationv1client.LeaseInterface
	g *watchGate
}

func (l *gatedLeases) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := l.LeaseInterface.Watch(ctx, opts)
	if err != nil {
		return nil, err
	}
	gw := &gatedWatch{inner: w, out: make(chan watch.Event), stop: make(chan struct{})}
	go gw.forward(l.g)
	return gw, nil
}

type gatedWatch struct {
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
}

func (w *gatedWatch) forward(g *watchGate) {
	defer close(w.out)
	for ev := range w.inner.ResultChan() {
		select {
		case <-g.opened():
		case <-g.one:
		case <-w.stop:
			return
		}
		select {
		case w.out <- ev:
		case <-w.stop:
			return
		}
	}
}

func (w *gatedWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *gatedWatch) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.inner.Stop()
	})
}

var _ coordinationv1client.LeaseInterface = (*gatedLeases)(nil)
