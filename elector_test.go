package leasehold

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

var leasesGR = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// Contract 2: acquire creates a missing Lease.
func TestAcquireCreatesMissingLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		l := h.lease()
		if got := leaserecord.Holder(l); got != "a" {
			t.Fatalf("holder = %q, want a", got)
		}
		if got := *l.Spec.LeaseDurationSeconds; got != 15 {
			t.Errorf("leaseDurationSeconds = %d, want 15", got)
		}
		if got := leaserecord.Transitions(l); got != 0 {
			t.Errorf("leaseTransitions = %d, want 0 on create", got)
		}
		if h.srv.Requests("a", "create") != 1 {
			t.Errorf("creates = %d, want 1", h.srv.Requests("a", "create"))
		}
		eventually(t, "OnStartedLeading", func() bool { return a.count("started") == 1 })

	})
}

// Contract 2: an empty holder (a released lease) is taken over at once.
func TestAcquireTakesOverReleasedLeaseAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("", 15)
		a := h.candidate("a").start()
		a.waitLeader()
		if got := h.clock.Since(t0); got != 0 {
			t.Fatalf("took over after %v of fake time, want 0", got)
		}
		if got := leaserecord.Transitions(h.lease()); got != 1 {
			t.Errorf("leaseTransitions = %d, want 1", got)
		}

	})
}

// Contract 2: a held lease is taken over only after this process's own
// clock saw no change for the holder's leaseDurationSeconds, whatever the
// timestamps in the Lease say.
func TestAcquireWaitsHolderDurationByLocalClock(t *testing.T) {
	for _, tc := range []struct {
		name     string
		duration int32
		wait     time.Duration
	}{
		{"holder's 15s", 15, 15 * time.Second},
		{"holder's 30s, longer than ours", 30, 30 * time.Second},
		{"holder's 0 falls back to ours", 0, 15 * time.Second},
		{"holder's negative falls back to ours", -5, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				// The stale renewTime says the lease expired long ago; it
				// must not be trusted.
				old := h.putLease("other", tc.duration)
				old.Spec.RenewTime.Time = t0.Add(-time.Hour)
				h.srv.Put(old)
				a := h.candidate("a").start()
				h.advanceTo(tc.wait - 100*time.Millisecond)
				if a.e.IsLeader() || h.holder() != "other" {
					t.Fatalf("took over before %v", tc.wait)
				}
				h.advanceTo(tc.wait)
				a.waitLeader()
				if h.holder() != "a" {
					t.Fatalf("holder = %q, want a", h.holder())
				}

			})
		})
	}
}

// Contract 2: a renewal seen by the follower restarts its expiry timer.
func TestAcquireTimerRestartsOnObservedRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("other", 15)
		a := h.candidate("a").start()
		h.advanceTo(10 * time.Second)
		h.putLease("other", 15) // renewal at t=10s
		h.advanceTo(24900 * time.Millisecond)
		if a.e.IsLeader() {
			t.Fatal("took over before 15s after the observed renewal")
		}
		h.advanceTo(25 * time.Second)
		a.waitLeader()

	})
}

// Contract 2: a conflict means somebody else wrote: re-read, never
// overwrite.
func TestAcquireConflictRereadsNeverOverwrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("other", 15)
		a := h.candidate("a").start()
		// Right before a's takeover write lands, "other" renews.
		renewed := false
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" && !renewed {
				renewed = true
				h.putLease("other", 15)
			}
			return nil
		})
		getsBefore := h.srv.Requests("a", "get")
		h.advanceTo(15 * time.Second)
		eventually(t, "a re-read after the conflict", func() bool { return h.srv.Requests("a", "get") > getsBefore })
		if h.holder() != "other" || a.e.IsLeader() {
			t.Fatalf("holder = %q after a conflict, want other", h.holder())
		}
		// The renewal restarted the clock: no takeover until 15s after it.
		h.advanceTo(29900 * time.Millisecond)
		if a.e.IsLeader() {
			t.Fatal("took over before the renewed claim expired")
		}
		h.advanceTo(30 * time.Second)
		a.waitLeader()

	})
}

// Race: five candidates race for a Lease that does not exist: exactly one
// wins, and the CAS server turns the other writes into conflicts.
func TestRaceFiveCandidatesOneWinner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		for round := 0; round < 5; round++ {
			h := newHarness(t)
			var cs []*candidate
			for _, id := range []string{"a", "b", "c", "d", "e"} {
				cs = append(cs, h.candidate(id))
			}
			for _, c := range cs {
				c.start()
			}
			eventually(t, "a leader", func() bool { return h.holder() != "" })
			h.advance(30 * time.Second)
			leaders := 0
			for _, c := range cs {
				if c.e.IsLeader() {
					leaders++
					if c.id != h.holder() {
						t.Fatalf("%s believes it leads but the lease names %q", c.id, h.holder())
					}
				}
			}
			if leaders != 1 || h.maxWorking.Load() != 1 {
				t.Fatalf("round %d: %d leaders, max %d working at once; want 1", round, leaders, h.maxWorking.Load())
			}
		}

	})
}

// Contract 3: followers watch, not poll: at steady state a follower makes
// no GETs, and the leader renews with one Update per retry period (contract
// 4: no GET on the happy path).
func TestFollowersWatchLeaderRenewsWithoutGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		b := h.candidate("b").start()
		eventually(t, "b watching", func() bool { return h.srv.Watches() == 2 })
		getsA, getsB := h.srv.Requests("a", "get"), h.srv.Requests("b", "get")
		updatesA := h.srv.Requests("a", "update")
		h.advance(60 * time.Second)
		if n := h.srv.Requests("b", ""); n != getsB+1 {
			t.Errorf("follower made %d requests in 60s, want only its initial get and watch (%d)", n, getsB+1)
		}
		if got := h.srv.Requests("a", "get") - getsA; got != 0 {
			t.Errorf("leader made %d GETs while renewing, want 0", got)
		}
		if got := h.srv.Requests("a", "update") - updatesA; got < 29 || got > 31 {
			t.Errorf("leader made %d updates in 60s, want ~30 (one per 2s)", got)
		}
		if b.e.IsLeader() {
			t.Fatal("b leads while a renews")
		}

	})
}

// Contract 3: a release seen on the watch is acted on at once, with no
// clock step: the handoff does not wait for a poll tick.
func TestWatchHandoffOnReleaseWithoutWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true }).start()
		a.waitLeader()
		b := h.candidate("b").start()
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		before := h.clock.Now()
		a.cancel()
		eventually(t, "b leads", b.e.IsLeader)
		if d := h.clock.Since(before); d != 0 {
			t.Fatalf("handoff took %v of fake time, want 0", d)
		}
		if err := <-a.done; err != nil {
			t.Fatalf("a.Run = %v, want nil", err)
		}
		a.done <- nil

	})
}

// Contract 3: a closed watch is resumed from the last resourceVersion
// without a re-read; a 410 Gone leads to a re-read.
func TestWatchResumesAndRereadsOnGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("other", 15)
		b := h.candidate("b").start()
		eventually(t, "watching", func() bool { return h.srv.Watches() == 1 })
		gets := h.srv.Requests("b", "get")
		h.srv.CloseWatches()
		h.putLease("other", 15)
		// The request is counted before the watch is open: wait for both, or
		// the CloseWatches below can miss the new watch.
		eventually(t, "re-watch", func() bool { return h.srv.Requests("b", "watch") == 2 && h.srv.Watches() == 1 })
		if h.srv.Requests("b", "get") != gets {
			t.Fatalf("a closed watch caused a GET; it should resume from the last resourceVersion")
		}
		// Compact the history, then close: the resume gets 410 Gone.
		h.srv.Compact()
		h.srv.CloseWatches()
		eventually(t, "watching again", func() bool { return h.srv.Watches() == 1 && h.srv.Requests("b", "watch") == 4 })
		if n := h.srv.Requests("b", ""); n != gets+4 {
			t.Fatalf("%d requests after 410, want %d: one failed resume and one fresh watch, no spin", n, gets+4)
		}
		// A real API server reports 410 as an ERROR event in the stream: the
		// follower re-reads through a watch from the current state, no GET.
		h.srv.ExpireWatches()
		eventually(t, "watching after the 410 event", func() bool { return h.srv.Watches() == 1 && h.srv.Requests("b", "watch") == 5 })
		if n := h.srv.Requests("b", "get"); n != gets {
			t.Fatalf("%d GETs after a 410 event, want %d", n, gets)
		}
		// The follower still tracks renewals: no takeover while other renews.
		for i := 0; i < 10; i++ {
			h.advance(5 * time.Second)
			h.putLease("other", 15)
		}
		if b.e.IsLeader() {
			t.Fatal("follower took over a lease that was being renewed")
		}

	})
}

// Contract 3: if RBAC forbids watch, fall back to polling every
// RetryPeriod, with one warning.
func TestWatchForbiddenFallsBackToPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("other", 15)
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Verb == "watch" {
				return apierrors.NewForbidden(leasesGR, "", errors.New("no watch for you"))
			}
			return nil
		})
		b := h.candidate("b").start()
		h.advance(10 * time.Second)
		gets := h.srv.Requests("b", "get")
		if gets < 5 || gets > 7 {
			t.Fatalf("follower made %d GETs in 10s of polling, want ~6 (one per 2s)", gets)
		}
		if n := len(b.logs.matching("falling back to polling")); n != 1 {
			t.Fatalf("%d fallback warnings, want exactly 1", n)
		}
		// Polling still sees renewals and still takes over an expired lease.
		h.putLease("other", 15)
		renewedAt := h.clock.Now()
		h.advance(14 * time.Second)
		if b.e.IsLeader() {
			t.Fatal("took over too early while polling")
		}
		h.advance(4 * time.Second) // within one poll period of expiry
		b.waitLeader()
		if d := h.clock.Since(renewedAt); d < 15*time.Second {
			t.Fatalf("took over %v after the last renewal, want >= 15s", d)
		}

	})
}

// Contract 4: the leader stops leading when no renewal succeeded within
// RenewDeadline, measured from when the last successful renewal was sent.
func TestRenewDeadlineFromSendTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		// From now on every renewal is slow: the first one answers after 3s
		// (and succeeds); all later ones hang until their timeout.
		var slowSentAt time.Time
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client != "a" || r.Verb != "update" {
				return nil
			}
			if slowSentAt.IsZero() {
				slowSentAt = h.clock.Now()
				select {
				case <-h.clock.After(3 * time.Second):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			<-ctx.Done()
			return ctx.Err()
		})
		h.advance(2 * time.Second) // the slow renewal is sent at t=2s
		eventually(t, "slow renewal sent", func() bool { return !slowSentAt.IsZero() })
		deadline := slowSentAt.Add(10 * time.Second)
		h.advance(deadline.Add(-100 * time.Millisecond).Sub(h.clock.Now()))
		if !a.e.IsLeader() {
			t.Fatal("lost the lease before renewDeadline after the last successful send")
		}
		h.advance(100 * time.Millisecond)
		if a.e.IsLeader() {
			t.Fatal("IsLeader true at renewDeadline after the last successful send (deadline measured from the answer?)")
		}
		// The work is cancelled at the deadline too, even though a
		// renewal hangs: its request timeout is capped at the deadline.
		if (*a.workCtx.Load()).Err() == nil {
			t.Fatal("work still running at renewDeadline while a renewal hangs (request timeout not capped at the deadline?)")
		}
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrLeaderLost", err)
		}
		if h.holder() != "a" {
			t.Fatalf("lease holder %q: a lost lease must never be released", h.holder())
		}

	})
}

// Contract 4: a single hung request times out well before RenewDeadline,
// and the next attempt keeps the lease.
func TestRenewHungRequestTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		hung := 0
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" && hung == 0 {
				hung++
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		h.advance(30 * time.Second)
		if !a.e.IsLeader() || hung != 1 {
			t.Fatalf("leader = %v after one hung renewal (hung=%d), want still leading", a.e.IsLeader(), hung)
		}

	})
}

// Contract 5: OnStartedLeading's ctx is cancelled the moment the term
// ends; OnStoppedLeading follows once, after OnStartedLeading returned.
func TestCallbacksOrderAndOncePerTerm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true }).start()
		a.waitLeader()
		// Lose the lease twice by blocking renewals, rejoining each time.
		block := true
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if block && r.Client == "a" && r.Verb == "update" {
				return apierrors.NewInternalError(errors.New("injected"))
			}
			return nil
		})
		h.advance(10 * time.Second) // deadline passes
		eventually(t, "first term stopped", func() bool { return a.count("stopped") == 1 })
		block = false
		h.advance(4 * time.Second) // rejoin: the lease is still ours, re-acquired
		a.waitLeader()
		a.cancel()
		err := a.wait()
		if err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
		// OnNewLeader runs on its own goroutine: only its presence is checked.
		if a.count("new:a") == 0 {
			t.Fatal("OnNewLeader(a) never called")
		}
		want := []string{"started", "returned", "stopped", "started", "returned", "stopped"}
		var got []string
		for _, ev := range a.history() {
			if ev != "new:a" {
				got = append(got, ev)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("callbacks = %v, want %v", got, want)
		}
		if tr := leaserecord.Transitions(h.lease()); tr != 1 {
			t.Errorf("leaseTransitions = %d after two terms, want 1 (0 on create, +1 per later term)", tr)
		}

	})
}

// Contract 5: OnStoppedLeading is never called in a process that never led,
// and a follower whose ctx is cancelled returns nil (contract 6).
func TestFollowerCancelNoCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("other", 15)
		b := h.candidate("b").start()
		h.advance(5 * time.Second)
		b.cancel()
		if err := b.wait(); err != nil {
			t.Fatalf("follower Run = %v, want nil", err)
		}
		if got := b.history(); strings.Join(got, ",") != "new:other" {
			t.Fatalf("follower callbacks = %v, want only new:other", got)
		}

	})
}

// Contract 5: OnNewLeader is called in order for each change of holder,
// the first one included, and never with a stale identity after a newer.
func TestOnNewLeaderInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("x", 15)
		b := h.candidate("b").start()
		eventually(t, "first leader seen", func() bool { return b.count("new:x") == 1 })
		for _, id := range []string{"y", "z", "y"} {
			h.putLease(id, 15)
			h.settle()
		}
		h.putLease("y", 15) // same holder renewing: no call
		h.putLease("y", 15)
		eventually(t, "all changes seen", func() bool { return len(b.history()) == 4 })
		h.settle()
		if got := strings.Join(b.history(), ","); got != "new:x,new:y,new:z,new:y" {
			t.Fatalf("OnNewLeader calls = %s", got)
		}
		if b.e.Leader() != "y" {
			t.Fatalf("Leader() = %q, want y", b.e.Leader())
		}

	})
}

// Contract 5: if OnStartedLeading panics or returns while leading, the
// term ends: recovered, OnStoppedLeading, lease released, Run errors.
func TestWorkPanicsOrReturnsEndsTerm(t *testing.T) {
	for _, tc := range []struct {
		name string
		work func()
		want error
	}{
		{"panics", func() { panic("boom") }, ErrWorkPanicked},
		{"returns", func() {}, ErrWorkReturned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				a := h.candidate("a")
				a.workReturn = tc.work
				a.start()
				err := a.wait()
				if !errors.Is(err, tc.want) {
					t.Fatalf("Run = %v, want %v", err, tc.want)
				}
				if a.count("stopped") != 1 {
					t.Fatalf("OnStoppedLeading called %d times, want 1", a.count("stopped"))
				}
				if h.holder() != "" {
					t.Fatalf("lease still held by %q with no one working", h.holder())
				}

			})
		})
	}
}

// Contract 6: Run's ctx cancelled while leading: the work's ctx is
// cancelled, renewals go on until the work returns, then the lease is
// released (conditioned on our last write), then OnStoppedLeading.
func TestCancelKeepsRenewingUntilWorkReturnsThenReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) {
			c.ReleaseOnCancel = true
			c.StepDownTimeout = time.Minute // longer than this test's wait; the bound has its own tests
		})
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		b := h.candidate("b").start()
		a.cancel()
		eventually(t, "work ctx cancelled", func() bool {
			p := a.workCtx.Load()
			return p != nil && (*p).Err() != nil
		})
		renews := h.srv.Requests("a", "update")
		h.advance(30 * time.Second) // work still running, past LeaseDuration
		if h.srv.Requests("a", "update")-renews < 14 {
			t.Fatalf("stopped renewing while the work ran")
		}
		if b.e.IsLeader() || h.holder() != "a" || !a.e.IsLeader() {
			t.Fatal("lease changed hands while the old leader's work still ran")
		}
		if a.count("stopped") != 0 {
			t.Fatal("OnStoppedLeading before OnStartedLeading returned")
		}
		close(a.hold)
		if err := a.wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		eventually(t, "b takes over", b.e.IsLeader)
		if h.maxWorking.Load() != 1 {
			t.Fatalf("%d works at once", h.maxWorking.Load())
		}
		hist := a.history()
		if hist[len(hist)-1] != "stopped" {
			t.Fatalf("history %v: OnStoppedLeading must come last", hist)
		}

	})
}

// Contract 6: the release is conditioned on our last write: it can never
// blank another holder's lease.
func TestReleaseNeverBlanksAnotherHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true }).start()
		a.waitLeader()
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" && leaserecord.Holder(r.Lease) == "" {
				h.putLease("intruder", 15) // lands between our last write and the release
			}
			return nil
		})
		a.cancel()
		a.wait()
		if h.holder() != "intruder" {
			t.Fatalf("holder = %q, want intruder: the release overwrote another holder", h.holder())
		}

	})
}

// Contract 6: lease lost: work cancelled at once, waited for at most the
// safety margin, never released; OnStoppedLeading; ErrLeaderLost; if the
// work outlived the margin, Run says so and Check fails until it returns.
func TestLostLeaseWorkOutlivesMargin(t *testing.T) {
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
		h.advance(10 * time.Second)
		eventually(t, "work ctx cancelled at the deadline", func() bool { return (*a.workCtx.Load()).Err() != nil })
		if a.e.IsLeader() {
			t.Fatal("IsLeader after the deadline")
		}
		margin := 15*time.Second - 10*time.Second - 2*time.Second
		h.advance(margin - 500*time.Millisecond)
		if a.count("stopped") != 0 {
			t.Fatal("OnStoppedLeading before the margin ran out while the work still ran")
		}
		h.advance(500 * time.Millisecond)
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) || !errors.Is(err, ErrWorkOutlivedLease) {
			t.Fatalf("Run = %v, want ErrLeaderLost and ErrWorkOutlivedLease", err)
		}
		if a.count("stopped") != 1 {
			t.Fatal("OnStoppedLeading not called after the margin")
		}
		if err := a.e.Check(0); !errors.Is(err, ErrWorkOutlivedLease) {
			t.Fatalf("Check = %v while the work outlives the lease", err)
		}
		if h.holder() != "a" {
			t.Fatal("a lost lease was released")
		}
		close(a.hold)
		eventually(t, "Check healthy once the work returned", func() bool { return a.e.Check(0) == nil })

	})
}

// Contract 6: lost because another holder was seen on the watch.
func TestLostOnOtherHolderSeen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		h.putLease("usurper", 15)
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) || !strings.Contains(err.Error(), "usurper") {
			t.Fatalf("Run = %v, want ErrLeaderLost naming usurper", err)
		}
		if h.clock.Since(t0) > 500*time.Millisecond {
			t.Fatalf("noticed the usurper only after %v; the watch should show it at once", h.clock.Since(t0))
		}

	})
}

// The lease deleted while we lead: we stop; followers do not recreate it
// before the deleted holder's claim ran out.
func TestLeaseDeletedWhileLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		b := h.candidate("b").start()
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		h.srv.Delete(testNS, testName)
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrLeaderLost", err)
		}
		if h.lease() != nil && h.clock.Since(t0) < 15*time.Second {
			t.Fatalf("follower recreated the lease %v after deletion, before the old claim expired", h.clock.Since(t0))
		}
		h.advanceTo(16 * time.Second)
		b.waitLeader()

	})
}

// The lease replaced by another object (new UID) under our feet.
func TestLeaseReplacedByNewObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		l := h.lease()
		h.srv.Delete(testNS, testName)
		l.UID, l.ResourceVersion = "", ""
		h.srv.Put(l) // same spec, holder "a", but a new object we did not write
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrLeaderLost", err)
		}

	})
}

// Contract 7: IsLeader is false as soon as the renew deadline passes, even
// before the loop reacts; Leader returns the last observed holder.
func TestIsLeaderHonoursDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		if a.e.Leader() != "a" {
			t.Fatalf("Leader() = %q", a.e.Leader())
		}
		a.e.mu.Lock()
		a.e.status.lastRenewSent = instant{at: h.clock.Now().Add(-10 * time.Second), boot: -1}
		a.e.mu.Unlock()
		if a.e.IsLeader() {
			t.Fatal("IsLeader true with the last renewal sent RenewDeadline ago")
		}

	})
}

// Contract 8: a lease held under our identity that we did not write is
// another's: wait for it to expire (a dead previous incarnation).
func TestIdentityFoundAtStartupWaitsForExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("a", 15)
		a := h.candidate("a").start()
		h.advanceTo(14 * time.Second)
		if a.e.IsLeader() {
			t.Fatal("took over a lease under our identity that we did not write")
		}
		h.advanceTo(15 * time.Second)
		a.waitLeader()

	})
}

// Contract 8: another live process using our identity: never lead, return
// ErrIdentityConflict naming the identity.
func TestIdentityConflictWithLiveProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		first := h.candidate("same").start()
		first.waitLeader()
		second := h.candidate("same").start()
		err := second.wait()
		if !errors.Is(err, ErrIdentityConflict) || !strings.Contains(err.Error(), `"same"`) {
			t.Fatalf("Run = %v, want ErrIdentityConflict naming the identity", err)
		}
		if second.count("started") != 0 {
			t.Fatal("the second process led")
		}
		if !first.e.IsLeader() {
			t.Fatal("the first process lost the lease")
		}

	})
}

// Contract 9: a second concurrent Run returns an error, not a panic.
func TestConcurrentRunRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		if err := a.e.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
			t.Fatalf("second Run = %v, want ErrAlreadyRunning", err)
		}

	})
}

// Contract 10: contextual logging with lease and identity; V(4) renewals.
func TestLoggingKeysAndLevels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		h.advance(4 * time.Second)
		acq := a.logs.matching("Acquired the lease")
		if len(acq) != 1 || !strings.Contains(acq[0], `"lease"="ns/lock"`) || !strings.Contains(acq[0], `"identity"="a"`) {
			t.Fatalf("acquire log lines = %v, want one with lease and identity", acq)
		}
		renews := a.logs.matching("Renewed the lease")
		if len(renews) < 2 || !strings.Contains(renews[0], `"level"=4`) {
			t.Fatalf("renew log lines = %v, want V(4)", renews)
		}

	})
}

// Transient errors are logged without flooding: one line per streak (and
// one per minute), plus one on recovery.
func TestTransientErrorsLoggedWithoutFlooding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			return apierrors.NewServiceUnavailable("apiserver down")
		})
		b := h.candidate("b").start()
		h.advance(50 * time.Second)
		if n := h.srv.Requests("b", "get"); n < 8 {
			t.Fatalf("only %d attempts in 50s; want retries with backoff", n)
		}
		if n := len(b.logs.matching("Cannot read the lease")) - len(b.logs.matching(`"level"=4`)); n > 1 {
			t.Fatalf("%d error lines for one 50s outage, want 1", n)
		}
		h.srv.ClearHooks()
		h.advance(10 * time.Second)
		b.waitLeader()
		if len(b.logs.matching("Recovered")) != 1 {
			t.Fatalf("want one recovery line:\n%s", b.logs)
		}

	})
}

// Contract 11: events on the Lease when leading starts and stops.
func TestEventsPosted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		rec := record.NewFakeRecorder(10)
		a := h.candidate("a", func(c *Config) {
			c.Lock.EventRecorder = rec
			c.ReleaseOnCancel = true
		}).start()
		a.waitLeader()
		a.cancel()
		a.wait()
		var got []string
		for len(rec.Events) > 0 {
			got = append(got, <-rec.Events)
		}
		want := []string{"Normal LeaderElection a became leader", "Normal LeaderElection a stopped leading"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("events = %q, want %q", got, want)
		}

	})
}

// Labels are set while we hold the lease and removed on release.
func TestLabelsWhileHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) {
			c.Lock.Labels = map[string]string{"app": "x"}
			c.ReleaseOnCancel = true
		}).start()
		a.waitLeader()
		if h.lease().Labels["app"] != "x" {
			t.Fatal("label not set while held")
		}
		a.cancel()
		a.wait()
		if _, ok := h.lease().Labels["app"]; ok {
			t.Fatal("label kept after release")
		}

	})
}

// A paused process (SIGSTOP, debugger, frozen VM) resumes with every timer
// overdue at once. The elector must see from its clock that the deadline
// passed and cancel the work before it sends anything.
func TestResumeAfterPauseCancelsWorkFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		h.settle()
		var sentBeforeCancel bool
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" {
				if p := a.workCtx.Load(); p != nil && (*p).Err() == nil {
					sentBeforeCancel = true
				}
			}
			return nil
		})
		h.clock.Step(20 * time.Second) // the "pause": one jump past the deadline
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrLeaderLost", err)
		}
		if sentBeforeCancel {
			t.Fatal("sent a renewal after the pause while the work still ran")
		}

	})
}

// The API server unreachable at start: the elector keeps retrying with
// backoff, Check reports it after LeaseDuration, and recovers with it.
func TestAPIUnreachableAtStartCheckReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			return apierrors.NewServiceUnavailable("connection refused")
		})
		b := h.candidate("b").start()
		h.advance(10 * time.Second)
		if err := b.e.Check(0); err != nil {
			t.Fatalf("Check = %v after 10s, want healthy until LeaseDuration passed", err)
		}
		h.advance(6 * time.Second)
		if err := b.e.Check(0); !errors.Is(err, ErrAPIUnreachable) {
			t.Fatalf("Check = %v after 16s of failures, want ErrAPIUnreachable", err)
		}
		h.srv.ClearHooks()
		h.advance(10 * time.Second)
		b.waitLeader()
		if err := b.e.Check(0); err != nil {
			t.Fatalf("Check = %v after recovery", err)
		}

	})
}

// A missing namespace or a missing RBAC rule gives an error that says what
// to do, retried with backoff, not a tight loop.
func TestMissingNamespaceAndForbiddenExplained(t *testing.T) {
	for _, tc := range []struct {
		name string
		verb string
		err  error
		want string
	}{
		{"namespace missing", "create", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, testNS), `not found; create it or set Lock.Namespace`},
		{"create forbidden", "create", apierrors.NewForbidden(leasesGR, testName, errors.New("denied")), `RBAC forbids \"create\": grant get, create, update and watch`},
		{"get forbidden", "get", apierrors.NewForbidden(leasesGR, testName, errors.New("denied")), `RBAC forbids \"get\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
					if r.Verb == tc.verb {
						return tc.err
					}
					return nil
				})
				a := h.candidate("a").start()
				h.advance(20 * time.Second)
				if n := h.srv.Requests("a", tc.verb); n < 3 || n > 20 {
					t.Fatalf("%d %s attempts in 20s, want retries with backoff", n, tc.verb)
				}
				if lines := a.logs.matching(tc.want); len(lines) == 0 {
					t.Fatalf("no log line says %q:\n%s", tc.want, a.logs)
				}
				if a.e.IsLeader() {
					t.Fatal("leads without the lease")
				}

			})
		})
	}
}

// Run's ctx cancelled while a renewal is in flight: the work returns, and
// its end may be seen before the cancellation. It is still a clean stop:
// nil, and no release without ReleaseOnCancel.
func TestCancelDuringRenewIsCleanStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		for i := 0; i < 20; i++ {
			h := newHarness(t)
			a := h.candidate("a")
			a.start()
			a.waitLeader()
			proceed := make(chan struct{})
			h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
				if r.Client == "a" && r.Verb == "update" {
					a.cancel() // cancelled while the renewal is in flight
					a.await("returned", 1)
					close(proceed)
				}
				return nil
			})
			h.advance(2 * time.Second)
			<-proceed
			if err := a.wait(); err != nil {
				t.Fatalf("iteration %d: Run = %v, want nil", i, err)
			}
			if h.holder() != "a" {
				t.Fatalf("iteration %d: released without ReleaseOnCancel", i)
			}
		}

	})
}

// RBAC forbids update: the term ends at the deadline with the cause in
// Run's error, and Check names the missing verb while it persists.
func TestForbiddenUpdateSurfaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Verb == "update" {
				return apierrors.NewForbidden(leasesGR, testName, errors.New("update denied"))
			}
			return nil
		})
		h.advance(10 * time.Second)
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) || !strings.Contains(err.Error(), `RBAC forbids "update"`) {
			t.Fatalf("Run = %v, want ErrLeaderLost naming the forbidden update", err)
		}
		b := h.candidate("b").start()
		h.advance(35 * time.Second) // a's claim expires at 25s; b's takeover is forbidden from then on
		if err := b.e.Check(0); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), `"update"`) {
			t.Fatalf("Check = %v, want ErrForbidden naming update", err)
		}

	})
}

// pausingLeases pauses a client right after one of its updates landed, as
// a SIGSTOP between the winning write and the start of the work would.
type pausingLeases struct {
	coordinationv1client.LeasesGetter
	armed  atomic.Bool
	landed chan struct{}
	resume chan struct{}
}

func (p *pausingLeases) Leases(ns string) coordinationv1client.LeaseInterface {
	return &pausingLeaseInterface{LeaseInterface: p.LeasesGetter.Leases(ns), p: p}
}

type pausingLeaseInterface struct {
	coordinationv1client.LeaseInterface
	p *pausingLeases
}

func (l *pausingLeaseInterface) Update(ctx context.Context, lease *coordinationv1.Lease, o metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	got, err := l.LeaseInterface.Update(ctx, lease, o)
	if err == nil && l.p.armed.CompareAndSwap(true, false) {
		close(l.p.landed)
		<-l.p.resume
	}
	return got, err
}

// A process paused for longer than LeaseDuration right after its acquire
// landed must not start its work on resume: the term may be another's.
// (Found by reading lead() during the chaos work.)
func TestPauseAfterAcquireLandedStartsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.putLease("x", 15)
		pl := &pausingLeases{LeasesGetter: h.srv.Client("a"), landed: make(chan struct{}), resume: make(chan struct{})}
		pl.armed.Store(true)
		a := h.candidate("a", func(c *Config) { c.Lock.Client = pl }).start()
		h.advanceTo(15 * time.Second)
		eventually(t, "a's acquire landed", func() bool {
			select {
			case <-pl.landed:
				return true
			default:
				return false
			}
		})
		b := h.candidate("b").start()
		h.advance(16 * time.Second) // a stays paused for longer than L
		b.waitLeader()
		close(pl.resume) // SIGCONT
		err := a.wait()
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrLeaderLost", err)
		}
		if a.count("started") != 0 || a.count("stopped") != 0 || h.maxWorking.Load() != 1 {
			t.Fatalf("a's callbacks %v, max working %d: a started work on an expired claim", a.history(), h.maxWorking.Load())
		}

	})
}

// A renewal still unanswered after RetryPeriod is hedged: a second one,
// from the same version, goes out then and keeps the term when only the
// first is stuck. When both hang until their timeouts, the next attempt
// goes out at once, not a full RetryPeriod later, so a server stall of
// most of RenewDeadline still costs no term.
func TestHungRenewalIsHedgedThenRetriedAtOnce(t *testing.T) {
	for _, hangs := range []int{1, 2} {
		t.Run(fmt.Sprintf("hung=%d", hangs), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				a := h.candidate("a").start()
				a.waitLeader()
				var sends []time.Duration
				h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
					if r.Client != "a" || r.Verb != "update" {
						return nil
					}
					sends = append(sends, h.clock.Since(t0))
					if len(sends) <= hangs { // hangs until its 5s timeout
						<-ctx.Done()
						return ctx.Err()
					}
					return nil
				})
				h.advance(9500 * time.Millisecond)
				want := []time.Duration{2 * time.Second, 4 * time.Second} // the renewal, its hedge
				if hangs == 2 {
					// Both time out (at 7s and 9s); the next goes at once.
					want = append(want, 9*time.Second)
				}
				if len(sends) < len(want) || fmt.Sprint(sends[:len(want)]) != fmt.Sprint(want) {
					t.Fatalf("renewal attempts at %v; want them to start with %v", sends, want)
				}
				if !a.e.IsLeader() {
					t.Fatalf("lost the lease after %d hung renewals", hangs)
				}
				if hangs == 1 {
					return
				}
				if got := h.lease().Spec.RenewTime.Time.Sub(t0); got != want[len(want)-1] {
					t.Fatalf("the Lease was last renewed at %v, want by the attempt at %v", got, want[len(want)-1])
				}
				// That renewal's answer came 9s after the last successful
				// send: 1s of the 10s deadline left. Said once, and once
				// when renewals are fast again.
				h.advance(4 * time.Second)
				if n, m := len(a.logs.matching("The term is at risk")), len(a.logs.matching("answered in time again")); n != 1 || m != 1 {
					t.Fatalf("%d at-risk lines and %d recovery lines, want 1 of each:\n%s", n, m, a.logs)
				}
			})
		})
	}
}

// With Rejoin, a process whose lost term's work outlived the margin does
// not campaign again until that work returned: never two works at once.
func TestRejoinWaitsForOverdueWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true })
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		fail := true
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if fail && r.Client == "a" && r.Verb == "update" {
				return apierrors.NewServiceUnavailable("injected")
			}
			return nil
		})
		h.advance(10 * time.Second) // lost at the deadline; the work holds on
		h.advance(4 * time.Second)  // past the margin
		fail = false
		h.advance(20 * time.Second)
		if a.count("started") != 1 {
			t.Fatalf("started a new term while the old work still ran: %v", a.history())
		}
		close(a.hold)
		h.advance(5 * time.Second)
		a.waitLeader()
		if h.maxWorking.Load() != 1 || a.count("started") != 2 {
			t.Fatalf("history %v, max working %d", a.history(), h.maxWorking.Load())
		}

	})
}

// A watch the server ends as soon as it opens is reopened with backoff,
// never in a loop (the harness's loop guard fails a test whose candidate
// sends more than loopLimit requests at one fake instant).
func TestWatchEndedAtOnceIsReopenedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.putLease("x", 15)
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Verb == "watch" {
				go h.srv.CloseWatches() // ends the watch right after it opens
			}
			return nil
		})
		h.candidate("b").start()
		h.advance(10 * time.Second)
		if n := h.srv.Requests("b", "watch"); n > 60 {
			t.Fatalf("%d watches in 10s; a watch ended at once must be reopened with backoff", n)
		}
	})
}

// Found by the simulator (run-ended, seeds 11 and 2228) and by make chaos:
// a leader's renewals fail until its term ends, then more than eight of
// its acquire attempts fail too, and then the Lease, still naming it with
// the renewTime of its last successful write, is edited by hand. Those
// failed attempts pushed that renewTime out of the recent stamps: the
// version must still count as its own, not as another process using its
// identity (ErrIdentityConflict would end Run).
func TestHandEditAfterManyFailedWritesIsNoIdentityConflict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true })
		a.start()
		a.waitLeader()
		failing := h.failWhile("a", "update")
		failing.Store(true)
		h.advance(40 * time.Second) // the term ends at 10s; then many acquire attempts fail
		if n := h.srv.Requests("a", "update"); n < 12 {
			t.Fatalf("only %d updates by a while failing; the test needs more than 8 failed writes", n)
		}
		edited := h.lease().DeepCopy()
		edited.Labels = map[string]string{"edited": "by-hand"}
		h.srv.Put(edited)
		failing.Store(false)
		h.advance(5 * time.Second)
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("Run returned %v after a hand edit of its own last write", err)
		default:
		}
		if !a.e.IsLeader() {
			t.Fatalf("a does not lead again once writes succeed: lease %v\n%s", h.lease(), a.logs)
		}
	})
}

// Found by the simulator (run-ended, seed 516 once watch-drop and clock
// skew were added): a leader's renewal lands but its answer is lost while
// its watch is down; more than eight writes fail after it, until its term
// ends and another process takes the Lease. When the watch comes back it
// delivers that renewal, naming this process with a stamp the failed
// writes pushed out of the recent ones, then the other holder's version.
// One unrecognised version after our own is our lost answer as likely as
// another process: it is treated as another's, and only a second one
// shows a live process using our identity. Run must not end.
func TestOwnLostAnswerAfterManyFailedWritesIsNoIdentityConflict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		gate := newWatchGate(h.srv.Client("a"))
		a := h.candidate("a", func(c *Config) { c.Rejoin = true; c.Lock.Client = gate })
		a.start()
		a.waitLeader()
		gate.pause()
		var landed, failing atomic.Bool
		h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
			switch {
			case r.Client != "a" || r.Verb != "update" || !failing.Load():
			case landed.CompareAndSwap(false, true):
				cur := h.lease().DeepCopy()
				cur.Spec = *r.Lease.Spec.DeepCopy()
				h.srv.Put(cur) // the renewal lands; its answer is lost
				return apierrors.NewServerTimeout(leasesGR, "update", 1)
			default:
				return apierrors.NewInternalError(errors.New("etcd is down"))
			}
			return nil
		})
		failing.Store(true)
		h.advance(40 * time.Second) // the term ends at 10s; then many acquire attempts fail
		if n := h.srv.Requests("a", "update"); n < 12 {
			t.Fatalf("only %d updates by a while failing; the test needs more than 8 failed writes", n)
		}
		taken := h.lease().DeepCopy()
		x := "x"
		taken.Spec.HolderIdentity = &x
		h.srv.Put(taken)
		gate.resume()
		h.advance(5 * time.Second)
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("Run returned %v after its own renewal, whose answer was lost, came back on the watch:\n%s", err, a.logs)
		default:
		}
	})
}

// Found by the simulator (run-ended, seed 216): a leader's watch lags.
// Its Lease is deleted by hand; it learns so from its renewal's 404,
// creates the Lease again and leads on the new object, renewing it more
// than eight times, and that object is deleted by hand too. Only then
// does the lagging watch deliver the first deletion, then the creation.
// That deletion is older than what the leader knows: it is stale, and
// must not make its own creation look like another process using its
// identity.
func TestLaggingWatchDeliversOldDeletionAfterOurRecreate(t *testing.T) {
	r := benchRun(t, "a", &stubLeases{})
	at := t0
	write := func(uid, rv string) *coordinationv1.Lease {
		at = at.Add(2 * time.Second)
		stamp := metav1.NewMicroTime(at)
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName, UID: types.UID(uid), ResourceVersion: rv},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a"), AcquireTime: &stamp, RenewTime: &stamp}}
		r.remember(at)
		r.wrote(l)
		return l
	}
	first := write("u1", "5")
	r.markGone(nil, true) // its renewal met 404
	created := write("u2", "8")
	for rv := 9; rv < 20; rv++ {
		write("u2", strconv.Itoa(rv))
	}
	r.markGone(nil, true) // deleted again
	if err := r.observe(observation{deleted: true, deletedRV: "6", final: first}); err != nil {
		t.Fatal(err)
	}
	if err := r.observe(observation{lease: created.DeepCopy()}); err != nil {
		t.Fatalf("the lagging watch's delivery of our own create, after a stale deletion: %v", err)
	}
	if !r.view.gone {
		t.Fatalf("stale deliveries replaced the deletion in the view: %+v", r.view)
	}
}
