package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

func k(n int) func(*Config) { return func(c *Config) { c.Shards = n } }

func TestThreeMembersSpreadShardsEvenly(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a", k(32)).start()
		b := h.member("b", k(32)).start()
		c := h.member("c", k(32)).start()
		h.until(2*time.Second, "32 shards balanced over 3 members", func() bool { return balanced(32, a, b, c) })
		if got := counts(a, b, c); slices.Max(got) != 11 || slices.Min(got) != 10 {
			t.Fatalf("counts %v, want 10/11", got)
		}
		// Settled: nothing moves, nobody writes the assignment again.
		rv := h.srv.Lease(testNS, testGroup).ResourceVersion
		h.advance(30 * time.Second)
		if got := h.srv.Lease(testNS, testGroup).ResourceVersion; got != rv {
			t.Errorf("assignment rewritten in steady state: rv %s -> %s", rv, got)
		}
		if !balanced(32, a, b, c) {
			t.Errorf("no longer balanced: %v", counts(a, b, c))
		}
		h.works.check(t)
	})
}

func TestGracefulLeaveMovesOnlyTheLeaversShardsAtOnce(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a", k(32)).start()
		b := h.member("b", k(32)).start()
		c := h.member("c", k(32)).start()
		h.until(2*time.Second, "balanced", func() bool { return balanced(32, a, b, c) })
		aBefore, bBefore, cBefore := a.owned(), b.owned(), c.owned()

		// c leaves. No time passes: the handoff is write, watch, write.
		c.cancel()
		h.settle()
		if !balanced(32, a, b) {
			t.Fatalf("after c left, without time passing: a %v b %v\n%s", a.owned(), b.owned(), h.dump())
		}
		if err := c.wait(); err != nil {
			t.Fatalf("c.Run = %v", err)
		}
		for _, prev := range []struct {
			m      *tmember
			before []int
		}{{a, aBefore}, {b, bBefore}} {
			if !sets.New(prev.m.owned()...).IsSuperset(sets.New(prev.before...)) {
				t.Errorf("%s lost shards it had: before %v after %v", prev.m.id, prev.before, prev.m.owned())
			}
		}
		moved := len(a.owned()) - len(aBefore) + len(b.owned()) - len(bBefore)
		if moved != len(cBefore) {
			t.Errorf("%d shards moved, want only c's %d", moved, len(cBefore))
		}
		if l := memberLease(h, "c"); l != nil {
			t.Errorf("c's member Lease left behind after a graceful leave: %+v", l.Spec)
		}
		if st, _ := ReadStatus(h.srv.Lease(testNS, testGroup)); len(st.Moves) != 0 || len(st.Unowned) != 0 {
			t.Errorf("status after leave: %+v", st)
		}
		h.works.check(t)
	})
}

func TestJoinMovesAtMostItsShareAtOnce(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a", k(32)).start()
		b := h.member("b", k(32)).start()
		h.until(2*time.Second, "balanced over 2", func() bool { return balanced(32, a, b) })
		aBefore, bBefore := a.owned(), b.owned()

		c := h.member("c", k(32)).start()
		took := h.until(2*time.Second, "balanced over 3", func() bool { return balanced(32, a, b, c) })
		if took != 0 {
			t.Errorf("join took %v of fake time, want none (writes and watch events only)", took)
		}
		if len(c.owned()) > (32+2)/3 {
			t.Errorf("joiner got %d shards, more than ceil(32/3)", len(c.owned()))
		}
		if !sets.New(aBefore...).IsSuperset(sets.New(a.owned()...)) || !sets.New(bBefore...).IsSuperset(sets.New(b.owned()...)) {
			t.Errorf("a join moved shards between existing members: a %v->%v b %v->%v", aBefore, a.owned(), bBefore, b.owned())
		}
		h.works.check(t)
	})
}

// A crashed member (every request fails) cancels every shard at its renew
// deadline; the others start them only once its Lease has expired by
// their clocks, within LeaseDuration of its last renewal.
func TestCrashedMemberStopsAtDeadlineOthersTakeOverAfterExpiry(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a", k(16)).start()
		b := h.member("b", k(16)).start()
		h.until(2*time.Second, "balanced", func() bool { return balanced(16, a, b) })
		bShards := b.owned()
		// a claims b's shards only after fencing b's Lease: when a's
		// update claiming them is sent, b's Lease has no holder.
		var mu sync.Mutex
		var unfenced []string
		h.srv.AddHook(func(ctx context.Context, r leaseholdtestRequest) error {
			if r.Client != "a" || r.Verb != "update" || r.Name != testGroup {
				return nil
			}
			next, _ := decodeLease(r.Lease)
			cur, _ := decodeLease(h.srv.Lease(testNS, testGroup))
			for i := 0; next != nil && cur != nil && i < 16; i++ {
				if cur.owner[i] == "b" && next.owner[i] == "a" {
					if l := memberLease(h, "b"); l != nil && leaserecord.Holder(l) != "" {
						mu.Lock()
						unfenced = append(unfenced, fmt.Sprintf("shard %d", i))
						mu.Unlock()
					}
				}
			}
			return nil
		})

		cut := cutOff(h, "b")
		cutAt := h.now()
		// b's last renewal was sent at most RetryPeriod before the cut.
		h.until(10*time.Second+time.Second, "b cancels its shards at its renew deadline", func() bool { return len(b.owned()) == 0 })
		if got := h.clock.Since(cutAt); got < 8*time.Second {
			t.Errorf("b stopped after %v, before its renew deadline could pass", got)
		}
		if len(a.owned()) != 8 {
			t.Fatalf("a took over before b's Lease expired: a runs %v", a.owned())
		}
		took := h.until(15*time.Second, "a runs all 16", func() bool { return len(a.owned()) == 16 })
		total := h.clock.Since(cutAt)
		if total > 15*time.Second+time.Second {
			t.Errorf("takeover %v after the cut, want within LeaseDuration + 1s", total)
		}
		if total < 13*time.Second {
			t.Errorf("takeover %v after the cut: before b's Lease could expire", total)
		}
		_ = took
		mu.Lock()
		if len(unfenced) > 0 {
			t.Errorf("a claimed b's shards while b's Lease was still held (not fenced): %v", unfenced)
		}
		mu.Unlock()
		for _, s := range bShards {
			if !slices.Contains(a.owned(), s) {
				t.Errorf("shard %d of b not taken over", s)
			}
		}

		// b comes back: it rejoins with a new epoch and gets its share back,
		// never running a shard a runs.
		cut()
		h.until(20*time.Second, "balanced after b rejoined", func() bool { return balanced(16, a, b) })
		h.works.check(t)
	})
}

// cutOff makes every request of client id fail, as if its network was
// cut; the returned func heals it.
func cutOff(h *harness, id string) (heal func()) {
	var on = make(chan struct{})
	h.srv.AddHook(func(ctx context.Context, r leaseholdtestRequest) error {
		select {
		case <-on:
			return nil
		default:
		}
		if r.Client == id {
			return errors.New("connection refused (test: network cut)")
		}
		return nil
	})
	return func() { close(on) }
}

// refuse makes the requests of client id with one of verbs (all verbs if
// none) fail with err while it is on; the returned func turns it off.
func refuse(h *harness, id string, err error, verbs ...string) (heal func()) {
	var mu sync.Mutex
	on := true
	h.srv.AddHook(func(ctx context.Context, r leaseholdtestRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if on && r.Client == id && (len(verbs) == 0 || slices.Contains(verbs, r.Verb)) {
			return err
		}
		return nil
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		on = false
	}
}

// A member whose Lease is deleted while another member's group watch is
// down is seen absent only by that member's list after the outage: its
// absence counts from that list, not from when it was last seen before
// the outage, so its shards are taken LeaseDuration after the list, not at
// once.
func TestAbsenceAfterRelistCountsFromTheList(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b", func(c *Config) { c.ReleaseOnCancel = false }).start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		bShards := b.owned()

		// a's group watch goes down for 5s (its renewals go on), not long
		// enough for b's last version seen to expire.
		healWatch := refuse(h, "a", errors.New("connection reset (test: watch outage)"), "watch", "list")
		h.srv.CloseWatches()
		h.advance(time.Second)
		// b is cut off and its Lease deleted, while a cannot see it.
		cutOff(h, "b")
		h.srv.Delete(testNS, MemberLeaseName(testGroup, "b"))
		h.advance(4 * time.Second)
		if got := a.owned(); len(got) != 4 {
			t.Fatalf("a runs %v during its watch outage, want its own 4", got)
		}

		// The outage ends; a's watch cannot resume (history compacted) and
		// a lists again: only now does it see b absent.
		lists := h.srv.Requests("a", "list")
		h.srv.Compact()
		healWatch()
		h.until(20*time.Second, "a lists the group again", func() bool { return h.srv.Requests("a", "list") > lists })
		took := h.until(20*time.Second, "a runs all 8", func() bool { return len(a.owned()) == 8 })
		if took < 15*time.Second-h.step {
			t.Errorf("a took b's shards %v after the list that first showed b absent, before LeaseDuration (15s)", took)
		}
		for _, s := range bShards {
			if !slices.Contains(a.owned(), s) {
				t.Errorf("shard %d of b not taken over", s)
			}
		}
		h.works.check(t)
	})
}

// A member that left, came back, claimed shards and died while another
// member's group watch was down is, for that member, absent before and
// after the outage: the claims its list shows were made in a term it
// never saw. Their owner's absence counts from that list: the shards are
// taken LeaseDuration after it (not never, and not at once).
func TestAbsenceOfAMemberThatCameBackDuringAnOutageCountsFromTheList(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b").start()
		c := h.member("c").start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b, c) })
		if err := b.stop(); err != nil { // a sees b's Lease go
			t.Fatal(err)
		}
		h.until(time.Second, "a and c run all", func() bool { return balanced(8, a, c) })

		healWatch := refuse(h, "a", errors.New("connection reset (test: watch outage)"), "watch", "list")
		h.srv.CloseWatches()
		h.advance(time.Second)
		// Unseen by a: b comes back and claims what c hands it, c leaves,
		// and b dies, its Lease deleted.
		b2 := h.member("b", func(c *Config) { c.ReleaseOnCancel = false }).start()
		h.until(5*time.Second, "b runs shards again", func() bool { return len(b2.owned()) > 0 })
		if err := c.stop(); err != nil {
			t.Fatal(err)
		}
		h.settle()
		bOwned := b2.owned()
		if len(bOwned) == 0 {
			t.Fatal("b owns nothing after c left")
		}
		cutOff(h, "b")
		h.srv.Delete(testNS, MemberLeaseName(testGroup, "b"))
		h.advance(30 * time.Second)

		lists := h.srv.Requests("a", "list")
		h.srv.Compact()
		healWatch()
		h.until(20*time.Second, "a lists the group again", func() bool { return h.srv.Requests("a", "list") > lists })
		took := h.until(40*time.Second, "a runs all 8", func() bool { return len(a.owned()) == 8 })
		if took < 15*time.Second-h.step {
			t.Errorf("a took b's shards %v after the list that first showed b absent since its new claims, before LeaseDuration (15s)", took)
		}
		h.works.check(t)
	})
}
