package leasehold

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// The deletion rule: a deleted Lease is gone. A candidate creates it only
// after LeaseDuration counted from when it learned of the deletion (or,
// if its watch showed the deleted version, from when it first saw that
// version); the former holder, whose own write was deleted, creates it as
// soon as its work has stopped. Every 404 is handled with backoff: no
// path loops without time moving.

// forbidWatch makes every watch fail with 403, so the candidates poll.
func forbidWatch(h *harness) {
	h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
		if r.Verb == "watch" {
			return apierrors.NewForbidden(leasesGR, "", errors.New("no watch for you"))
		}
		return nil
	})
}

// Issue 20, 1: the leader's Lease deleted, with Rejoin, in watch and in
// polling mode, with 1 and 3 replicas. There is a leader again within
// 2×LeaseDuration, requests stay near the steady rate (the bug: tens of
// thousands of update+get with the clock standing still), and no two
// works ever run at once.
func TestDeletedLeaseLeaderAgainWithoutRequestLoop(t *testing.T) {
	for _, polling := range []bool{false, true} {
		for _, replicas := range []int{1, 3} {
			t.Run(fmt.Sprintf("polling=%v/replicas=%d", polling, replicas), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					h := newHarness(t)
					if polling {
						forbidWatch(h)
					}
					rejoin := func(c *Config) { c.Rejoin = true }
					a := h.candidate("a", rejoin).start()
					a.waitLeader()
					for i := 1; i < replicas; i++ {
						h.candidate(fmt.Sprintf("f%d", i), rejoin).start()
					}
					h.advance(5 * time.Second)
					before := h.srv.Requests("", "")
					deletedAt := h.clock.Now()
					h.srv.Delete(testNS, testName)
					// Without time moving, nothing may loop: settle, then
					// count what the delete alone caused.
					h.settle()
					if n := h.srv.Requests("", "") - before; n > 4*replicas {
						t.Fatalf("%d requests with the clock standing still after the delete; want at most %d (a request loop)", n, 4*replicas)
					}
					var ledAgain time.Duration
					for h.clock.Since(deletedAt) < 30*time.Second {
						h.advance(500 * time.Millisecond)
						if ledAgain == 0 && h.holder() != "" && h.working.Load() == 1 {
							ledAgain = h.clock.Since(deletedAt)
						}
					}
					if ledAgain == 0 {
						t.Fatalf("no leader within 2×LeaseDuration (30s) of the delete; lease=%v", h.lease())
					}
					// The former holder's own write was deleted: once its
					// work stopped it recreates the Lease at once (its
					// renewal's 404 or the DELETE event, then Rejoin's
					// RetryPeriod), instead of waiting out a lease duration.
					if ledAgain > 5*time.Second || h.holder() != "a" {
						t.Fatalf("leader again after %v (holder %q); want the former holder a back within 5s", ledAgain, h.holder())
					}
					// Steady rate: the leader renews every 2s, followers
					// poll or watch. 30s at steady state is about 15
					// requests per replica; allow double.
					if n := h.srv.Requests("", "") - before; n > 30*replicas+10 {
						t.Fatalf("%d requests in the 30s after the delete with %d replica(s); want near the steady rate (at most %d)", n, replicas, 30*replicas+10)
					}
					if m := h.maxWorking.Load(); m > 1 {
						t.Fatalf("%d works ran at once", m)
					}
					t.Logf("leader again %v after the delete", ledAgain)
				})
			})
		}
	}
}

// Issue 20, 2: x held the Lease; b takes it over at expiry while c's own
// takeover write is in flight. c's write conflicts and, when c re-reads,
// the Lease has just been deleted. c never saw b's version: it must wait
// out a claim counted from when it learned of the deletion, not create at
// once while b's work still runs.
func TestDeletedAfterLostRaceWaitsOutUnseenHolder(t *testing.T) {
	// Five worlds: goroutine order within one fake instant varies, and
	// in a few orders c learns of b another way; five make the rule's
	// breakage show every time.
	for i := 0; i < 5; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) { synctest.Test(t, deletedAfterLostRace) })
	}
}

func deletedAfterLostRace(t *testing.T) {
	{
		h := newHarness(t)
		h.putLease("x", 15)
		b := h.candidate("b")
		// b's work takes 2s to return once cancelled (within the 3s
		// margin): a c that creates the Lease at once overlaps it
		// whichever goroutine runs first.
		b.hold = make(chan struct{})
		b.start()
		c := h.candidate("c").start()
		// Both write at x's expiry: b's takeover waits until c's is in
		// flight, then lands first, so c's conflicts and c re-reads.
		// c polls (its watch is refused), so it never sees b's version:
		// only the re-read's 404.
		cSent := make(chan struct{})
		var bWaited, cSentOnce atomic.Bool
		h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
			switch {
			case r.Client == "c" && r.Verb == "watch":
				return apierrors.NewForbidden(leasesGR, "", errors.New("no watch for c"))
			case r.Client == "b" && r.Verb == "update" && !bWaited.Swap(true):
				<-cSent
			case r.Client == "c" && r.Verb == "update" && !cSentOnce.Swap(true):
				close(cSent)
				b.await("started", 1) // b's takeover lands first: c's write conflicts
			case r.Client == "c" && r.Verb == "get" && !h.clock.Now().Before(t0.Add(15*time.Second)):
				// Any read by c from x's expiry on (its re-read, or a
				// poll) waits until both takeovers were sent and b's
				// landed, then finds the Lease just deleted: c never
				// sees b's version.
				<-cSent
				b.await("started", 1)
				if h.holder() == "b" {
					h.srv.Delete(testNS, testName)
					h.clock.AfterFunc(2*time.Second, func() { close(b.hold) })
				}
			}
			return nil
		})
		h.advance(20 * time.Second)
		if b.count("started") != 1 {
			t.Fatalf("b did not take over at expiry: %v", b.history())
		}
		if m := h.maxWorking.Load(); m > 1 {
			t.Fatalf("two works at once: c created the deleted Lease while b's work still ran (c: %v, b: %v)", c.history(), b.history())
		}
		// c does take over once b's possible claim has run out.
		h.advance(20 * time.Second)
		if c.count("started") != 1 {
			t.Fatalf("c never created the deleted Lease: %v", c.history())
		}
		if m := h.maxWorking.Load(); m > 1 {
			t.Fatalf("%d works at once", m)
		}
	}
}

// A watched deletion of the Lease's own last version, seen by a follower
// that saw that version: its claim runs from when the follower first saw
// it, as for an expiry (no extra wait), and a released Lease deleted is
// free at once.
func TestWatchedDeletionOfSeenVersionKeepsItsClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.putLease("x", 15)
		b := h.candidate("b").start()
		h.advance(10 * time.Second)
		h.srv.Delete(testNS, testName)
		h.advance(4 * time.Second)
		if b.e.IsLeader() {
			t.Fatal("b created the Lease before x's claim (seen 14s ago, 15s) ran out")
		}
		h.advance(3 * time.Second)
		b.waitLeader()
	})
}

// Issue 20, 3: a release the server refuses for good (422, 400, 403) ends
// at once: Yield returns an error naming the refusal without waiting for
// the renew deadline, Check reports it, and the yielder, with Rejoin,
// does not take its own Lease back before the successor had its chance.
func TestReleaseRefusedEndsAtOnce(t *testing.T) {
	for _, refusal := range []error{
		apierrors.NewInvalid(schema.GroupKind{Group: "coordination.k8s.io", Kind: "Lease"}, testName, nil),
		apierrors.NewBadRequest("no"),
		apierrors.NewForbidden(leasesGR, testName, errors.New("no update")),
	} {
		t.Run(fmt.Sprint(apierrors.ReasonForError(refusal)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				rejoin := func(c *Config) { c.Rejoin = true }
				a := h.candidate("a", rejoin).start()
				a.waitLeader()
				b := h.candidate("b", rejoin).start()
				h.settle()
				h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
					if r.Client == "a" && r.Verb == "update" && leaserecord.Holder(r.Lease) == "" {
						return refusal
					}
					return nil
				})
				done := make(chan error, 1)
				go func() { done <- a.e.Yield(context.Background(), "b") }()
				h.settle()
				var err error
				select {
				case err = <-done:
				default:
					t.Fatal("Yield did not return at once on a refused release (the clock standing still)")
				}
				if err == nil || !errors.Is(err, ErrLeaseRefused) && !errors.Is(err, ErrForbidden) {
					t.Fatalf("Yield = %v, want an error wrapping ErrLeaseRefused or ErrForbidden", err)
				}
				if n := h.srv.Requests("a", "update"); n > 4 {
					t.Fatalf("%d updates by a: the refused release was retried", n)
				}
				if cerr := a.e.Check(0); cerr == nil {
					t.Fatal("Check healthy after a release the server refused")
				}
				if l := a.logs.matching("refused"); len(l) != 1 {
					t.Fatalf("%d log lines about the refusal, want exactly 1:\n%s", len(l), a.logs)
				}
				// The Lease still names a (the release never landed): b
				// takes it after expiry, and a sits out meanwhile.
				h.advance(20 * time.Second)
				if a.count("started") != 1 {
					t.Fatalf("a took its own Lease back after a refused yield: %v", a.history())
				}
				if !b.e.IsLeader() {
					t.Fatalf("b did not take over after a's refused release expired; lease=%v", h.lease())
				}
			})
		})
	}
}

// Found by the simulator (test/sim, seed 551): the former holder's own
// Lease is deleted; while its work is stopping, another process creates
// the Lease and it is deleted again. The newest-wins mailbox keeps only
// that second DELETE. The former holder must wait out that holder's
// claim, not create at once as for its own deleted write.
func TestRecreatedAndDeletedAgainWhileStopping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true })
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		h.srv.Delete(testNS, testName) // a's own write: a may recreate at once
		h.settle()
		h.putLease("z", 15) // another process creates it...
		h.settle()
		h.srv.Delete(testNS, testName) // ...and it is deleted again
		secondDelete := h.clock.Now()
		close(a.hold)
		h.advance(14 * time.Second)
		if a.count("started") != 1 {
			t.Fatalf("a created the Lease %v after z's Lease was deleted, inside z's claim", h.clock.Since(secondDelete))
		}
		h.advance(4 * time.Second)
		if a.count("started") != 2 {
			t.Fatalf("a never created the Lease once z's claim ran out: %v", a.history())
		}
	})
}

// Found by the simulator (test/sim, seeds 1962, 2861, 3136): c decides to
// create the Lease (none exists); while its create is in flight, another
// candidate b creates it and an operator deletes it, so c's create lands
// on nothing. c's watch showed b's Lease before the answer came: b may
// still work, so c keeps the Lease without starting its work until b's
// claim (counted from when c learned of it) runs out.
func TestCreateOverAHolderSeenInFlightHoldsTheWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		land := make(chan struct{})
		var held atomic.Bool
		h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
			if r.Client == "c" && r.Verb == "create" && !held.Swap(true) {
				<-land
			}
			return nil
		})
		c := h.candidate("c").start() // its create waits in the hook
		if h.lease() != nil {
			t.Fatalf("c's create landed before the test let it: %v", h.lease())
		}
		h.putLease("b", 15) // b wins meanwhile...
		h.settle()
		h.srv.Delete(testNS, testName) // ...and its Lease is deleted by hand
		h.settle()
		close(land)
		h.settle()
		if h.holder() != "c" {
			t.Fatalf("c's create did not land: lease=%v", h.lease())
		}
		if c.count("started") != 0 {
			t.Fatalf("c started its work at once over b's Lease, which its watch showed while the create was in flight: %v\n%s", c.history(), c.logs)
		}
		if l := c.logs.matching("keeping the Lease without starting the work"); len(l) != 1 {
			t.Fatalf("want one line saying the work is held back, got %d:\n%s", len(l), c.logs)
		}
		h.advance(14 * time.Second)
		if c.count("started") != 0 || c.e.IsLeader() {
			t.Fatalf("c started its work inside b's claim (15s): %v", c.history())
		}
		if h.holder() != "c" {
			t.Fatalf("c did not keep its Lease while holding back the work: lease=%v", h.lease())
		}
		h.advance(2 * time.Second)
		if c.count("started") != 1 || !c.e.IsLeader() {
			t.Fatalf("c did not start its work once b's claim ran out: %v", c.history())
		}
		if tr := leaserecord.Transitions(h.lease()); tr != 0 {
			t.Fatalf("leaseTransitions = %d after holding back; the renewals while holding start no term, want 0", tr)
		}
	})
}

// Found by the simulator (test/sim, seed 6614): a's Lease is deleted by
// hand while a is cut off from the server (it keeps working until its
// renew deadline). b saw a's Lease and waits out a's claim. Meanwhile a
// process that never saw a's Lease creates it and releases it: b may take
// the released Lease, but starts no work before a's claim has run out.
func TestDeletedHoldersClaimOutlivesLaterVersions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		b := h.candidate("b").start()
		h.advance(2 * time.Second)
		var cutOff atomic.Bool
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && cutOff.Load() {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		cutOff.Store(true)
		h.srv.Delete(testNS, testName)
		deletedAt := h.clock.Now()
		h.settle()
		h.advance(3 * time.Second)
		h.putLease("z", 15) // a process that never saw a's Lease...
		h.settle()
		released := h.lease().DeepCopy()
		released.Spec.HolderIdentity = nil // ...releases it
		h.srv.Put(released)
		h.settle()
		if h.holder() != "b" {
			t.Fatalf("b did not take the released Lease: %v", h.lease())
		}
		for h.clock.Since(deletedAt) < 14*time.Second {
			if b.count("started") != 0 {
				t.Fatalf("b started its work %v after a's Lease was deleted, inside a's claim (15s from b's sighting); a: %v",
					h.clock.Since(deletedAt), a.history())
			}
			h.advance(500 * time.Millisecond)
		}
		if h.holder() != "b" {
			t.Fatalf("b did not keep the Lease while holding back its work: %v", h.lease())
		}
		h.advance(4 * time.Second)
		if b.count("started") != 1 {
			t.Fatalf("b never started once a's claim ran out: %v\n%s", b.history(), b.logs)
		}
		if m := h.maxWorking.Load(); m > 1 {
			t.Fatalf("%d works at once", m)
		}
	})
}

// A version of a new object (another UID) means the object in the view
// was deleted, even when the deletion itself was never seen: a watch
// resumed after an outage delivers the other holder's last renewals,
// the deletion and a new object at one instant, and the newest-wins
// mailbox hands on only the newest, here released. The deleted holder's
// claim runs from now, and no work starts here before it has run out.
// (Found by the simulator, seed 1148 with paused processes: c1 took the
// released Lease and started working 71ms after c3's work was cancelled,
// while it still ran.)
func TestUnseenDeletionOfAnotherHoldersLeaseKeepsItsClaim(t *testing.T) {
	r := benchRun(t, "c1", &stubLeases{})
	now := r.e.clock.Now()
	version := func(uid, rv, holder string) *coordinationv1.Lease {
		stamp := metav1.NewMicroTime(now)
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName, UID: types.UID(uid), ResourceVersion: rv},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), AcquireTime: &stamp, RenewTime: &stamp, LeaseDurationSeconds: ptr.To[int32](15)}}
	}
	held := version("u1", "333", "c3")
	if err := r.observe(observation{lease: held}); err != nil {
		t.Fatal(err)
	}
	created := version("u2", "335", "c2")
	released := version("u2", "336", "")
	if err := r.observe(observation{lease: released, superseded: []*coordinationv1.Lease{held, created}}); err != nil {
		t.Fatal(err)
	}
	if left := r.holdUntil.Sub(r.e.clock.Now()); left < 14*time.Second {
		t.Fatalf("no work may start for c3's claim, 15s from now; held back for %v", left)
	}
}
