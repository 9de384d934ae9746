package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// A shard moves only after its owner's work returned and the owner said
// so in the API: while the old owner's work keeps running, the new target
// waits, however long; the moment it returns, the target starts.
func TestTargetWaitsForTheOwnersAcknowledgement(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		h.until(time.Second, "a runs all 8", func() bool { return len(a.owned()) == 8 })
		release := map[int]func(){}
		for s := 0; s < 8; s++ {
			release[s] = a.holdShard(s)
		}
		// While b's claim of a shard is in flight, b does not run it: it
		// starts only once that write succeeded.
		b := h.member("b")
		var early []string
		var mu sync.Mutex
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client != "b" || r.Verb != "update" || r.Name != testGroup {
				return nil
			}
			next, _ := decodeLease(r.Lease)
			cur, _ := decodeLease(h.srv.Lease(testNS, testGroup))
			for i := 0; next != nil && cur != nil && i < 8; i++ {
				if next.owner[i] == "b" && cur.owner[i] != "b" && slices.Contains(b.owned(), i) {
					mu.Lock()
					early = append(early, fmt.Sprintf("shard %d", i))
					mu.Unlock()
				}
			}
			return nil
		})
		b.start()
		h.settle()
		// a was told to give 4 shards up; their work has not returned.
		st, _ := ReadStatus(h.srv.Lease(testNS, testGroup))
		if len(st.Moves) != 4 {
			t.Fatalf("pending moves %v, want 4", st.Moves)
		}
		h.advance(time.Minute)
		if got := b.owned(); len(got) != 0 {
			t.Fatalf("b runs %v while a's work for them has not returned", got)
		}
		// a keeps renewing: its Lease is valid, nobody takes over by expiry.
		for _, mv := range st.Moves {
			release[mv.Shard]()
			h.settle()
			if !slices.Contains(b.owned(), mv.Shard) {
				t.Fatalf("shard %d: a's work returned, b did not start it without time passing", mv.Shard)
			}
		}
		if !balanced(8, a, b) {
			t.Errorf("not balanced: a %v b %v", a.owned(), b.owned())
		}
		mu.Lock()
		if len(early) > 0 {
			t.Errorf("b ran shards before its claim of them was written: %v", early)
		}
		mu.Unlock()
		h.works.check(t)
	})
}

// Same for a graceful leave: shards whose work returned move at once, a
// held one only when it returns.
func TestGracefulLeaveHandsEachShardOverAsItsWorkReturns(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b").start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		held := b.owned()[0]
		release := b.holdShard(held)
		b.cancel()
		h.settle()
		if got := len(a.owned()); got != 7 {
			t.Fatalf("a runs %d shards right after b's leave began, want 7 (all but the held one)", got)
		}
		h.advance(5 * time.Second) // well within b's renew deadline: b keeps renewing
		if slices.Contains(a.owned(), held) {
			t.Fatalf("a runs shard %d while b's work for it has not returned", held)
		}
		release()
		h.settle()
		if len(a.owned()) != 8 {
			t.Fatalf("a runs %v after b's last work returned", a.owned())
		}
		if err := b.wait(); err != nil {
			t.Errorf("b.Run = %v", err)
		}
		h.works.check(t)
	})
}

// The start happens only after the claim's compare-and-swap succeeded: a
// claim that loses a race to another writer starts nothing.
func TestLostClaimRaceStartsNothing(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		h.until(time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		// a leaves with its shards unowned but targeted to nobody live.
		if err := a.stop(); err != nil {
			t.Fatal(err)
		}
		// Just before b's first write of the assignment lands, an unknown
		// member "z" claims every shard (as a concurrent writer would).
		raced := false
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client != "b" || r.Name != testGroup || r.Verb != "update" || raced {
				return nil
			}
			raced = true
			cur := h.srv.Lease(testNS, testGroup)
			asg, _ := decodeLease(cur)
			for i := range asg.owner {
				asg.owner[i] = "z"
			}
			asg.epoch["z"] = "1"
			cur.Annotations[AnnotationAssignment] = asg.encode()
			h.srv.Put(cur)
			return nil
		})
		b := h.member("b").start()
		h.settle()
		if !raced {
			t.Fatal("b never wrote the assignment")
		}
		if got := b.owned(); len(got) != 0 {
			t.Fatalf("b runs %v after its claim lost the race", got)
		}
		h.works.mu.Lock()
		for s := 0; s < 8; s++ {
			if n := h.works.starts[key("b", s)]; n > 0 {
				t.Errorf("b started shard %d (%d times) on a claim that lost the race", s, n)
			}
		}
		h.works.mu.Unlock()
		// z never had a member Lease: its claims are void once b has seen
		// it absent for a LeaseDuration.
		took := h.until(20*time.Second, "b takes z's shards once z's absence lasted LeaseDuration", func() bool { return len(b.owned()) == 8 })
		if took < 14*time.Second {
			t.Errorf("b took over after %v, before z's absence could last LeaseDuration", took)
		}
		h.works.check(t)
	})
}

// A member that sees its shard's owner changed without its
// acknowledgement (as after a pause while it was fenced) stops the work at
// once, without waiting for any timer.
func TestOwnerChangedBehindItsBackStopsAtOnce(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		h.until(time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		cur := h.srv.Lease(testNS, testGroup)
		asg, _ := decodeLease(cur)
		asg.owner[3] = "intruder"
		cur.Annotations[AnnotationAssignment] = asg.encode()
		h.srv.Put(cur)
		h.settle()
		if slices.Contains(a.owned(), 3) {
			t.Fatalf("a still runs shard 3 after the assignment named another owner")
		}
		a.mu.Lock()
		ctx := a.ctxs[3]
		a.mu.Unlock()
		if ctx.Err() == nil {
			t.Error("shard 3's ctx not cancelled")
		}
	})
}

// The takeover rule's epochs, as pure decisions: an owner's claim is taken
// only if it is no later than the version of its member Lease that was
// fenced (or seen absent for a LeaseDuration); a claim from a newer term
// is left alone even when this member's view of the Lease says fenced.
func TestTakeoverNeedsTheClaimToPredateTheFence(t *testing.T) {
	now := t0.Add(time.Hour)
	base := func() *state {
		a := newAssignment(2)
		a.owner = []string{"o", "o"}
		a.target = []string{"c", "c"}
		a.epoch["o"] = "100"
		return &state{
			self: "c", group: testGroup, shards: 2, leaseDuration: 15 * time.Second, asg: a,
			members: map[string]*memberView{}, synced: true, syncRV: "50", syncAt: now.Add(-time.Hour),
			term:    term{running: true, live: true, epoch: "300"},
			running: map[int]bool{}, cancelled: map[int]bool{}, holdOff: map[int]time.Time{},
		}
	}
	lease := func(holder string, rv string) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: MemberLeaseName(testGroup, "o"), ResourceVersion: rv,
			Labels: map[string]string{LabelGroup: testGroup}}}
		l.Spec.LeaseDurationSeconds = ptr.To[int32](15)
		if holder != "" {
			l.Spec.HolderIdentity = ptr.To(holder)
		}
		return l
	}
	name := MemberLeaseName(testGroup, "o")
	cases := []struct {
		name      string
		view      *memberView
		wantClaim bool
		wantFence bool
	}{
		{"fenced after the claim", &memberView{lease: lease("", "150"), rv: "150", observedAt: now}, true, false},
		{"fenced before the claim (a newer term claimed)", &memberView{lease: lease("", "90"), rv: "90", observedAt: now}, false, false},
		{"held, unchanged for LeaseDuration", &memberView{lease: lease("o", "120"), rv: "120", observedAt: now.Add(-15 * time.Second)}, false, true},
		{"held, changed recently", &memberView{lease: lease("o", "120"), rv: "120", observedAt: now.Add(-14 * time.Second)}, false, false},
		{"held, expired, but older than the claim", &memberView{lease: lease("o", "90"), rv: "90", observedAt: now.Add(-time.Hour)}, false, false},
		{"absent for LeaseDuration", &memberView{lease: lease("o", "120"), absent: true, rv: "130", observedAt: now.Add(-15 * time.Second)}, true, false},
		{"absent, not long enough", &memberView{lease: lease("o", "120"), absent: true, rv: "130", observedAt: now.Add(-10 * time.Second)}, false, false},
		{"absent before the claim", &memberView{absent: true, rv: "60", observedAt: now.Add(-time.Hour)}, false, false},
		{"never seen: absent since the list, which predates the claim", nil, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			if tc.view != nil {
				s.members[name] = tc.view
			}
			d := s.decide(now)
			claimed := d.next != nil && d.next.owner[0] == "c"
			if claimed != tc.wantClaim || (d.fence == name) != tc.wantFence {
				t.Errorf("claim %v fence %q; want claim %v fence %v", claimed, d.fence, tc.wantClaim, tc.wantFence)
			}
			if len(d.start) > 0 {
				t.Errorf("started %v before any write", d.start)
			}
		})
	}
}

// Per-run callbacks: OnShardStopped once per run, after that run's work
// returned; a run that returns or panics while the shard is still ours is
// started again after RetryPeriod.
func TestWorkThatEndsOnItsOwnIsRestartedAfterRetryPeriod(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		panics := 0
		a := h.member("a", func(c *Config) {
			inner := c.OnShardStarted
			c.OnShardStarted = func(ctx context.Context, s int) {
				if s == 1 && panics == 0 {
					panics++
					h.works.start("a", s)
					h.works.returned("a", s)
					panic("boom")
				}
				inner(ctx, s)
			}
		})
		a.returnEarly[2] = true
		a.start()
		h.settle()
		if slices.Contains(a.owned(), 1) || slices.Contains(a.owned(), 2) {
			t.Fatalf("shards that ended on their own still listed as running: %v", a.owned())
		}
		if got := a.logs.matching("panicked"); len(got) == 0 {
			t.Error("panic not logged")
		}
		h.advance(1500 * time.Millisecond)
		if slices.Contains(a.owned(), 1) || slices.Contains(a.owned(), 2) {
			t.Fatalf("restarted before RetryPeriod: %v", a.owned())
		}
		h.advance(time.Second)
		if !slices.Contains(a.owned(), 1) || !slices.Contains(a.owned(), 2) {
			t.Fatalf("not restarted after RetryPeriod: %v", a.owned())
		}
		if err := a.stop(); err != nil {
			t.Fatal(err)
		}
		h.works.mu.Lock()
		defer h.works.mu.Unlock()
		for s := 0; s < 8; s++ {
			k := key("a", s)
			if h.works.starts[k] != h.works.returns[k] || h.works.stops[k] != h.works.returns[k] {
				t.Errorf("shard %d: %d starts, %d returns, %d OnShardStopped; want equal", s, h.works.starts[k], h.works.returns[k], h.works.stops[k])
			}
		}
		if len(h.works.overlaps) > 0 {
			t.Error(h.works.overlaps)
		}
	})
}

func TestShardCountMismatchIsRefused(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		h.until(time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		b := h.member("b", k(16)).start()
		err := b.wait()
		if !errors.Is(err, ErrShardCountMismatch) {
			t.Fatalf("Run = %v, want ErrShardCountMismatch", err)
		}
		for _, w := range []string{"8 shards", "Shards 16"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
		if memberLease(h, "b") != nil {
			t.Error("b joined (wrote its member Lease) although the group has another size")
		}
	})
}

// A member alone in its group, whose assignment Lease is deleted, stops
// every shard, and, since no other member could run one, creates the
// assignment again and restarts them at once; Run goes on.
func TestDeletedAssignmentAloneStopsAndRestartsAtOnce(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		h.until(time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		uid := h.srv.Lease(testNS, testGroup).UID
		h.srv.Delete(testNS, testGroup)
		h.settle()
		h.works.mu.Lock()
		for s := 0; s < 8; s++ {
			if k := key("a", s); h.works.stops[k] != 1 || h.works.starts[k] != 2 {
				t.Errorf("shard %d: %d starts and %d OnShardStopped, want it stopped once and started again", s, h.works.starts[k], h.works.stops[k])
			}
		}
		h.works.mu.Unlock()
		if got := a.owned(); len(got) != 8 {
			t.Errorf("a runs %v, want all 8 again", got)
		}
		if l := h.srv.Lease(testNS, testGroup); l == nil || l.UID == uid {
			t.Errorf("assignment Lease not created again: %v", l)
		}
		if done, err := a.returned(); done {
			t.Errorf("Run returned %v", err)
		}
		h.works.check(t)
	})
}

func TestIdentityConflictEndsRun(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a1 := h.member("a").start()
		h.until(time.Second, "a runs all", func() bool { return len(a1.owned()) == 8 })
		a2 := h.member("a")
		a2.cfg.Client = h.srv.Client("a2")
		m, _ := New(a2.cfg)
		a2.m = m
		a2.start()
		var err error
		select {
		case err = <-a1.done:
			a1.done <- err
		case err = <-a2.done:
			a2.done <- err
		case <-time.After(30 * time.Second):
			t.Fatal("neither Run returned within 30s")
		}
		if !errors.Is(err, leasehold.ErrIdentityConflict) {
			t.Fatalf("Run = %v, want ErrIdentityConflict", err)
		}
		h.works.check(t)
	})
}

// Without ReleaseOnCancel, a member that stops leaves its Lease to
// expire: the others take over after LeaseDuration, as after a crash.
func TestLeaveWithoutReleaseWaitsForExpiry(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b", func(c *Config) { c.ReleaseOnCancel = false }).start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		b.cancel()
		h.settle()
		if len(b.owned()) != 0 || len(a.owned()) != 4 {
			t.Fatalf("after b stopped: a %v b %v", a.owned(), b.owned())
		}
		took := h.until(20*time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		if took < 13*time.Second {
			t.Errorf("a took over %v after b stopped without releasing, before b's Lease could expire", took)
		}
		h.works.check(t)
	})
}

// Cost flat in K: in steady state a group of 3 makes the same requests
// for K = 8 and K = 128: one renewal per member per RetryPeriod, nothing
// for the assignment.
func TestSteadyStateCostIsFlatInK(t *testing.T) {
	perMinute := map[int]int{}
	for _, shards := range []int{8, 128} {
		inBubble(t, func(t *testing.T, h *harness) {
			ms := []*tmember{h.member("a", k(shards)).start(), h.member("b", k(shards)).start(), h.member("c", k(shards)).start()}
			h.until(2*time.Second, "balanced", func() bool { return balanced(shards, ms...) })
			h.advance(10 * time.Second)
			before := h.srv.Requests("", "")
			h.advance(time.Minute)
			perMinute[shards] = h.srv.Requests("", "") - before
			t.Logf("K=%d: %d requests in a minute (%d updates in all)", shards, perMinute[shards], h.srv.Requests("", "update"))
			for _, m := range ms {
				m.cancel()
			}
			for _, m := range ms {
				if err := m.wait(); err != nil {
					t.Errorf("%s: Run = %v", m.id, err)
				}
			}
		})
	}
	const n = 3
	if bound := 30*(n+1) + 10; perMinute[8] > bound || perMinute[128] > bound {
		t.Errorf("requests/min %v over the bound %d", perMinute, bound)
	}
	if d := perMinute[128] - perMinute[8]; d > 3 || d < -3 {
		t.Errorf("requests/min not flat in K: %v", perMinute)
	}
}

// A member gone for good leaves a Lease: once its shards are taken and
// nothing refers to it, the proposer deletes it (fenced or expired,
// unchanged for its lease duration).
func TestLeasesOfMembersGoneForGoodAreDeleted(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b").start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		cutOff(h, "b") // never healed
		h.until(20*time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		if memberLease(h, "b") == nil {
			t.Fatal("b's Lease deleted before it could be fenced")
		}
		took := h.until(20*time.Second, "b's Lease deleted", func() bool { return memberLease(h, "b") == nil })
		if took < 14*time.Second {
			t.Errorf("b's fenced Lease deleted %v after its shards were taken, before it was unchanged for LeaseDuration", took)
		}
		if memberLease(h, "a") == nil {
			t.Error("a's own Lease deleted")
		}
		if err := a.m.Check(0); err != nil {
			t.Errorf("a.Check = %v", err)
		}
		h.works.check(t)
	})
}

// watchUnavailable makes every client's watch requests fail with 403, as
// RBAC without the 'watch' verb does: members follow the group by
// listing it every RetryPeriod.
func watchUnavailable(h *harness) {
	h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
		if r.Verb == "watch" {
			return apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", errors.New("test: watch not granted"))
		}
		return nil
	})
}

// When an operator deletes the assignment Lease, the record of who owns
// what is gone: its owners stop their shards, and no member starts a shard
// another member may still run until that member's work can have
// stopped, LeaseDuration after it learned of the deletion. A former owner
// restarts its own shards sooner, once their work has returned. No shard
// ever has two owners, whether the members follow the group by watching
// it or (watch forbidden) by listing it.
func TestDeletedAssignmentNeverGivesAShardTwoOwners(t *testing.T) {
	for _, mode := range []string{"watch", "polling"} {
		t.Run(mode, func(t *testing.T) {
			inBubble(t, func(t *testing.T, h *harness) {
				if mode == "polling" {
					watchUnavailable(h)
				}
				a := h.member("a").start()
				b := h.member("b").start()
				h.until(5*time.Second, "balanced", func() bool { return balanced(8, a, b) })
				aBefore := a.owned()
				// Once cancelled, a's work takes 7s to return, b's 12s.
				var releaseA, releaseB []func()
				for s := 0; s < 8; s++ {
					releaseA, releaseB = append(releaseA, a.holdShard(s)), append(releaseB, b.holdShard(s))
				}
				h.srv.Delete(testNS, testGroup)
				// A new member joins at once: it finds no assignment.
				c := h.member("c").start()
				h.advance(7 * time.Second)
				if got := append(a.owned(), c.owned()...); len(got) > 0 {
					t.Fatalf("shards %v run while their former owners' work has not returned", got)
				}
				for _, r := range releaseA {
					r()
				}
				h.settle()
				// a may restart its own shards at once, or hand them to c;
				// nobody starts b's: b's work has not returned.
				if len(a.owned()) == 0 {
					t.Error("a did not restart its own shards once their work returned")
				}
				for _, s := range append(a.owned(), c.owned()...) {
					if !slices.Contains(aBefore, s) {
						t.Errorf("shard %d, b's, runs while b's work for it has not returned", s)
					}
				}
				h.advance(5 * time.Second)
				for _, r := range releaseB {
					r()
				}
				h.until(30*time.Second, "8 shards balanced over a, b and c", func() bool { return balanced(8, a, b, c) })
				for _, r := range []*tmember{a, b, c} {
					if done, err := r.returned(); done {
						t.Errorf("%s: Run returned %v after the assignment Lease was deleted; it goes on", r.id, err)
					}
				}
				h.works.check(t)
			})
		})
	}
}

// OnShardStopped is part of the run: a shard is handed to another member
// only after it returned. Here a's OnShardStopped calls block: b, which
// joins, starts none of the shards moving to it until they return.
func TestHandoverWaitsForOnShardStopped(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		h.until(time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		var release []func()
		for s := 0; s < 8; s++ {
			release = append(release, a.holdStopped(s))
		}
		b := h.member("b").start()
		h.advance(time.Minute)
		if got := b.owned(); len(got) != 0 {
			t.Fatalf("b runs %v while a's OnShardStopped for them has not returned", got)
		}
		if got := a.owned(); len(got) != 4 {
			t.Errorf("a runs %v, want the 4 it keeps", got)
		}
		for _, r := range release {
			r()
		}
		h.settle()
		if !balanced(8, a, b) {
			t.Errorf("not balanced once a's OnShardStopped calls returned: a %v b %v", a.owned(), b.owned())
		}
		h.works.check(t)
	})
}

// A member whose term lapsed while it was cut off, and which comes back
// with its view of the group stale (its watch still down), must not
// resume the shards its stale view says it owns: they were claimed in its
// earlier term, and taken over since. It claims again under its new
// epoch first, and that write, based on the stale version, fails.
func TestStaleViewAfterALapseResumesNothing(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b", func(c *Config) { c.ReleaseOnCancel = false }).start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		bShards := b.owned()
		refuse(h, "b", errors.New("connection reset (test: b's watch down)"), "watch", "list") // never healed
		heal := cutOff(h, "b")
		h.srv.CloseWatches()
		h.until(20*time.Second, "a takes b's shards over", func() bool { return len(a.owned()) == 8 })
		h.works.mu.Lock()
		startsBefore := map[int]int{}
		for _, s := range bShards {
			startsBefore[s] = h.works.starts[key("b", s)]
		}
		h.works.mu.Unlock()
		// a's work for b's former shards keeps running once cancelled.
		for _, s := range bShards {
			defer a.holdShard(s)()
		}
		heal()
		h.until(10*time.Second, "b is in a new term", func() bool { return leaserecord.Holder(memberLease(h, "b")) == "b" })
		h.advance(30 * time.Second)
		h.works.mu.Lock()
		for _, s := range bShards {
			if n := h.works.starts[key("b", s)]; n != startsBefore[s] && slices.Contains(a.owned(), s) {
				t.Errorf("b started shard %d again from its stale view while a runs it", s)
			}
		}
		h.works.mu.Unlock()
		h.works.check(t)
	})
}

// Where the server refuses to watch the group, a member lists it every
// RetryPeriod instead, and does not ask to watch it again.
func TestRefusedWatchFallsBackToPollingEveryRetryPeriod(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		watchUnavailable(h)
		var mu sync.Mutex
		groupWatches := 0
		a := h.member("a", func(c *Config) {
			c.Client = groupWatchWrapper{LeasesGetter: c.Client, attempt: func() {
				mu.Lock()
				defer mu.Unlock()
				groupWatches++
			}}
		}).start()
		h.until(5*time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		lists := h.srv.Requests("a", "list")
		h.advance(time.Minute)
		if n := h.srv.Requests("a", "list") - lists; n < 28 || n > 31 {
			t.Errorf("%d lists in a minute, want 30 (one per RetryPeriod)", n)
		}
		mu.Lock()
		if groupWatches != 1 {
			t.Errorf("%d attempts to watch the group, want 1: a refused watch is not asked again", groupWatches)
		}
		mu.Unlock()
		if n := len(a.logs.matching("listing them every retry period instead")); n != 1 {
			t.Errorf("%d log lines about the fallback, want 1", n)
		}
		// Each member sees a change within RetryPeriod: a join (b writes
		// its share, a acknowledges it, b claims it) settles within two.
		b := h.member("b").start()
		took := h.until(10*time.Second, "balanced", func() bool { return balanced(8, a, b) })
		if took > 4*time.Second+h.step {
			t.Errorf("b's join settled %v later, want within 2 RetryPeriods", took)
		}
		h.works.check(t)
	})
}

// An owner whose member Lease this member never saw is absent since the
// first list that showed its claim: with the group polled (watch refused),
// later lists do not restart that absence, and its claims are taken
// LeaseDuration after that first list.
func TestNeverSeenOwnerIsTakenOverWhenPolling(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		watchUnavailable(h)
		a := h.member("a").start()
		h.until(5*time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		// A writer names "z", which never had a member Lease, as owner of
		// every shard.
		cur := h.srv.Lease(testNS, testGroup)
		asg, _ := decodeLease(cur)
		for i := range asg.owner {
			asg.owner[i] = "z"
		}
		asg.epoch["z"] = "1"
		cur.Annotations[AnnotationAssignment] = asg.encode()
		h.srv.Put(cur)
		h.until(3*time.Second, "a stops every shard", func() bool { return len(a.owned()) == 0 })
		took := h.until(30*time.Second, "a takes z's shards", func() bool { return len(a.owned()) == 8 })
		if took < 15*time.Second-2*time.Second || took > 15*time.Second+2*time.Second+h.step {
			t.Errorf("a took z's shards %v after it saw z's claim, want LeaseDuration (15s) give or take a poll", took)
		}
		h.works.check(t)
	})
}
