package leasehold

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/leasehold/leasehold/leaseholdtest"
)

var leasesGR = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// Contract 2: acquire creates a missing Lease.
func TestAcquireCreatesMissingLease(t *testing.T) {
	h := newHarness(t)
	a := h.candidate("a").start()
	a.waitLeader()
	l := h.lease()
	if got := holderOf(l); got != "a" {
		t.Fatalf("holder = %q, want a", got)
	}
	if got := *l.Spec.LeaseDurationSeconds; got != 15 {
		t.Errorf("leaseDurationSeconds = %d, want 15", got)
	}
	if got := transitionsOf(l); got != 0 {
		t.Errorf("leaseTransitions = %d, want 0 on create", got)
	}
	if h.srv.Requests("a", "create") != 1 {
		t.Errorf("creates = %d, want 1", h.srv.Requests("a", "create"))
	}
	eventually(t, "OnStartedLeading", func() bool { return a.count("started") == 1 })
}

// Contract 2: an empty holder (a released lease) is taken over at once.
func TestAcquireTakesOverReleasedLeaseAtOnce(t *testing.T) {
	h := newHarness(t)
	h.putLease("", 15)
	a := h.candidate("a").start()
	a.waitLeader()
	if got := h.clock.Since(t0); got != 0 {
		t.Fatalf("took over after %v of fake time, want 0", got)
	}
	if got := transitionsOf(h.lease()); got != 1 {
		t.Errorf("leaseTransitions = %d, want 1", got)
	}
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
	}
}

// Contract 2: a renewal seen by the follower restarts its expiry timer.
func TestAcquireTimerRestartsOnObservedRenewal(t *testing.T) {
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
}

// Contract 2: a conflict means somebody else wrote: re-read, never
// overwrite.
func TestAcquireConflictRereadsNeverOverwrites(t *testing.T) {
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
}

// Race: five candidates race for a Lease that does not exist: exactly one
// wins, and the CAS server turns the other writes into conflicts.
func TestRaceFiveCandidatesOneWinner(t *testing.T) {
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
}

// Contract 3: followers watch, not poll: at steady state a follower makes
// no GETs, and the leader renews with one Update per retry period (contract
// 4: no GET on the happy path).
func TestFollowersWatchLeaderRenewsWithoutGet(t *testing.T) {
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
}

// Contract 3: a release seen on the watch is acted on at once, with no
// clock step: the handoff does not wait for a poll tick.
func TestWatchHandoffOnReleaseWithoutWaiting(t *testing.T) {
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
}

// Contract 3: a closed watch is resumed from the last resourceVersion
// without a re-read; a 410 Gone leads to a re-read.
func TestWatchResumesAndRereadsOnGone(t *testing.T) {
	h := newHarness(t)
	h.putLease("other", 15)
	b := h.candidate("b").start()
	eventually(t, "watching", func() bool { return h.srv.Watches() == 1 })
	gets := h.srv.Requests("b", "get")
	h.srv.CloseWatches()
	h.putLease("other", 15)
	eventually(t, "re-watch", func() bool { return h.srv.Requests("b", "watch") == 2 })
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
	// The follower still tracks renewals: no takeover while other renews.
	for i := 0; i < 10; i++ {
		h.advance(5 * time.Second)
		h.putLease("other", 15)
	}
	if b.e.IsLeader() {
		t.Fatal("follower took over a lease that was being renewed")
	}
}

// Contract 3: if RBAC forbids watch, fall back to polling every
// RetryPeriod, with one warning.
func TestWatchForbiddenFallsBackToPolling(t *testing.T) {
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
}

// Contract 4: the leader stops leading when no renewal succeeded within
// RenewDeadline, measured from when the last successful renewal was sent.
func TestRenewDeadlineFromSendTime(t *testing.T) {
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
	err := a.wait()
	if !errors.Is(err, ErrLeaderLost) {
		t.Fatalf("Run = %v, want ErrLeaderLost", err)
	}
	if h.holder() != "a" {
		t.Fatalf("lease holder %q: a lost lease must never be released", h.holder())
	}
}

// Contract 4: a single hung request times out well before RenewDeadline,
// and the next attempt keeps the lease.
func TestRenewHungRequestTimesOut(t *testing.T) {
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
}
