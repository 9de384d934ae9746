package leasehold

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// These tests run the elector on client-go's plain fake clientsets, the
// ones controller authors already test with. Their object tracker keeps
// resourceVersions outside the objects it returns, so every Lease comes
// back without one, and their watchers panic once 100 events are left
// unread. Everything a single-process test needs must work there.

// plainFakes are the two constructors users have.
var plainFakes = []struct {
	name string
	new  func() kubernetes.Interface
}{
	{"NewSimpleClientset", func() kubernetes.Interface { return fake.NewSimpleClientset() }}, //nolint:staticcheck // users still have it
	{"NewClientset", func() kubernetes.Interface { return fake.NewClientset() }},
}

func forEachPlainFake(t *testing.T, test func(t *testing.T, cs kubernetes.Interface, h *harness)) {
	for _, f := range plainFakes {
		t.Run(f.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cs := f.new()
				test(t, cs, newFakeClientsetHarness(t, cs))
			})
		})
	}
}

func TestPlainFakeReturnsNoResourceVersion(t *testing.T) {
	// The premise of this file: if a fake starts returning
	// resourceVersions, these tests no longer cover the versionless path.
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		l, err := cs.CoordinationV1().Leases(testNS).Create(context.Background(),
			&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "probe"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.ResourceVersion != "" {
			t.Skipf("this fake now returns resourceVersion %q; the versionless path is covered by decide_test only", l.ResourceVersion)
		}
	})
}

// Holds for many lease durations, renewing, and stays healthy.
func TestPlainFakeHoldsAndRenews(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		a := h.candidate("a").start()
		a.waitLeader()
		for i := 1; i <= 10; i++ {
			h.advance(15 * time.Second)
			if !a.e.IsLeader() || h.holder() != "a" {
				t.Fatalf("after %d lease durations: leading=%v holder=%q, want a still leading", i, a.e.IsLeader(), h.holder())
			}
			if err := a.e.Check(0); err != nil {
				t.Fatalf("Check while leading: %v", err)
			}
			renewed := h.lease().Spec.RenewTime.Time
			if age := h.clock.Since(renewed); age > 2*time.Second {
				t.Fatalf("last renewTime is %v old, want at most one RetryPeriod (2s)", age)
			}
		}
		if a.count("started") != 1 || a.count("stopped") != 0 || a.count("new:a") != 1 {
			t.Fatalf("callbacks = %v, want one start, one new:a, no stop", a.history())
		}
		if n := len(a.logs.matching("without resourceVersion")); n != 1 {
			t.Errorf("logged the versionless warning %d times, want once:\n%s", n, a.logs)
		}
	})
}

// ReleaseOnCancel clears the holder on the fakes too.
func TestPlainFakeReleasesOnCancel(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true }).start()
		a.waitLeader()
		h.advance(10 * time.Second)
		a.cancel()
		if err := a.wait(); err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
		if got := h.holder(); got != "" {
			t.Fatalf("holder after release = %q, want empty", got)
		}
		// OnNewLeader runs on its own goroutine; the work's callbacks are
		// ordered among themselves.
		if got := without(a.history(), "new:a"); fmt.Sprint(got) != "[started returned stopped]" {
			t.Fatalf("callbacks = %v, want started, returned, stopped", a.history())
		}
	})
}

// Two candidates on one fake: the follower never leads while the leader
// renews, and takes over after a release without the clock moving.
func TestPlainFakeFollowerTakesOverAfterRelease(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true }).start()
		a.waitLeader()
		b := h.candidate("b").start()
		h.advance(60 * time.Second)
		if b.e.IsLeader() || b.count("started") != 0 || h.holder() != "a" {
			t.Fatalf("follower led while the leader renewed (holder %q)", h.holder())
		}
		if b.e.Leader() != "a" {
			t.Fatalf("follower sees leader %q, want a", b.e.Leader())
		}
		a.cancel()
		b.waitLeader() // the fake clock stands still: watch, not expiry
		if h.maxWorking.Load() != 1 {
			t.Fatalf("%d works ran at once", h.maxWorking.Load())
		}
		eventually(t, "b's work started", func() bool { return b.count("started") == 1 })
		eventually(t, "b told of both leaders", func() bool { return b.count("new:b") == 1 })
		if got := without(b.history(), "started"); fmt.Sprint(got) != "[new:a new:b]" {
			t.Fatalf("follower's OnNewLeader calls = %v, want [new:a new:b]", got)
		}
		h.advance(30 * time.Second)
		if !b.e.IsLeader() {
			t.Fatal("b lost the lease after taking it over")
		}
	})
}

// A crashed leader (no release) is taken over after LeaseDuration by the
// follower's clock, and not before.
func TestPlainFakeTakeoverAfterExpiry(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName}}
		now := metav1.NewMicroTime(h.clock.Now())
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To("crashed"), LeaseDurationSeconds: ptr.To[int32](15), RenewTime: &now, AcquireTime: &now}
		if _, err := cs.CoordinationV1().Leases(testNS).Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		b := h.candidate("b").start()
		h.advanceTo(14500 * time.Millisecond)
		if b.e.IsLeader() {
			t.Fatal("took over before the claim expired")
		}
		h.advanceTo(15 * time.Second)
		b.waitLeader()
		if got := leaserecord.Transitions(h.lease()); got != 1 {
			t.Fatalf("leaseTransitions = %d, want 1", got)
		}
	})
}

// SharedWatch on the fakes, which ignore field selectors and send every
// Lease of the namespace: a busy neighbour Lease must not disturb the
// election.
func TestPlainFakeSharedWatch(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		sw := NewSharedWatch(cs.CoordinationV1(), testNS)
		shared := func(c *Config) { c.SharedWatch = sw; c.ReleaseOnCancel = true }
		a := h.candidate("a", shared).start()
		a.waitLeader()
		b := h.candidate("b", shared).start()
		neighbour := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "neighbour"}}
		if _, err := cs.CoordinationV1().Leases(testNS).Create(context.Background(), neighbour, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 150; i++ { // more than a fake watcher buffers
			neighbour.Spec.HolderIdentity = ptr.To(fmt.Sprint("x", i))
			if _, err := cs.CoordinationV1().Leases(testNS).Update(context.Background(), neighbour, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if i%10 == 0 {
				h.advance(time.Second)
			}
		}
		if !a.e.IsLeader() || b.e.IsLeader() || b.e.Leader() != "a" {
			t.Fatalf("a leading=%v, b leading=%v, b sees %q: want a leading, b following a", a.e.IsLeader(), b.e.IsLeader(), b.e.Leader())
		}
		a.cancel()
		b.waitLeader()
		if h.maxWorking.Load() != 1 {
			t.Fatalf("%d works ran at once", h.maxWorking.Load())
		}
	})
}

// A fake watcher panics once 100 events are left unread. Nothing in the
// elector may stop reading a watch while writes go on: not a follower
// whose OnNewLeader blocks, not a leader stepping down with a slow work,
// not a stopped elector, not a candidate waiting for a lost term's
// overdue work.
func TestPlainFakeWatchersNeverLeftUnread(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		a := h.candidate("a").start()
		a.waitLeader()

		block := make(chan struct{})
		slow := h.candidate("slow-callback", func(c *Config) {
			c.Callbacks.OnNewLeader = func(string) { <-block }
		}).start()
		t.Cleanup(func() { close(block) }) // before slow's own cleanup waits for Run

		stopped := h.candidate("stopped").start()
		stopped.cancel()
		if err := stopped.wait(); err != nil {
			t.Fatal(err)
		}

		// A leader of another Lease in the namespace, stepping down with a
		// work that ignores its ctx for now: its watch sees a's renewals.
		other := h.candidate("other", func(c *Config) {
			lock := *c.Lock
			lock.Name = "other-lock"
			c.Lock = &lock
			c.StepDownTimeout = time.Hour
		})
		other.hold = make(chan struct{})
		other.start()
		other.waitLeader()
		other.cancel()

		// A candidate with Rejoin that lost its term to another writer and
		// waits, not campaigning, for its overdue work to return.
		const thirdLease = "third-lock"
		third := func(c *Config) {
			lock := *c.Lock
			lock.Name = thirdLease
			c.Lock = &lock
			c.Rejoin = true
		}
		overdue := h.candidate("overdue", third)
		overdue.hold = make(chan struct{})
		overdue.start()
		overdue.waitLeader()
		leases := cs.CoordinationV1().Leases(testNS)
		taken, err := leases.Get(context.Background(), thirdLease, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		taken.Spec.HolderIdentity = ptr.To("usurper")
		if taken, err = leases.Update(context.Background(), taken, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		h.advance(5 * time.Second) // past the safety margin
		eventually(t, "overdue's work outlived the lease", func() bool { return errors.Is(overdue.e.Check(0), ErrWorkOutlivedLease) })

		// 120 usurper renewals and as many of a's: each watcher on the
		// namespace gets 240 events (the fakes ignore field selectors).
		h.step = 2 * time.Second
		for i := 0; i < 120; i++ {
			now := metav1.NewMicroTime(h.clock.Now())
			taken.Spec.RenewTime = &now // the usurper renews
			if taken, err = leases.Update(context.Background(), taken, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			h.advance(2 * time.Second)
		}
		if !a.e.IsLeader() || slow.e.IsLeader() {
			t.Fatal("a lost the lease, or the follower took it")
		}
		if other.count("stopped") != 0 {
			t.Fatal("other stepped down before its work returned")
		}
		close(other.hold)
		if err := other.wait(); err != nil {
			t.Fatalf("other: %v", err)
		}
		close(overdue.hold)
		eventually(t, "overdue's work returned", func() bool { return overdue.e.Check(0) == nil })
	})
}

// without returns events with every drop removed.
func without(events []string, drop string) []string {
	var out []string
	for _, e := range events {
		if e != drop {
			out = append(out, e)
		}
	}
	return out
}

// On a server without resourceVersions, a version this process has seen
// replaced is a stale delivery (a fake's watch replaying the state at its
// start), not news: after our own write, the unheld Lease we saw before it
// must not read as a release.
func TestVersionlessStaleDeliveryIsIgnored(t *testing.T) {
	r := benchRun(t, "a", &stubLeases{})
	unheld := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName}}
	if err := r.observe(observation{lease: unheld}); err != nil {
		t.Fatal(err)
	}
	ours := unheld.DeepCopy()
	now := metav1.NewMicroTime(t0)
	ours.Spec.HolderIdentity, ours.Spec.AcquireTime, ours.Spec.RenewTime = ptr.To("a"), &now, &now
	r.remember(t0)
	r.wrote(ours)
	if err := r.observe(observation{lease: unheld.DeepCopy()}); err != nil { // the replay
		t.Fatal(err)
	}
	if leaserecord.Holder(r.view.lease) != "a" || !r.view.ours() {
		t.Fatalf("a replayed earlier version replaced our own write in the view: holder %q", leaserecord.Holder(r.view.lease))
	}
}
