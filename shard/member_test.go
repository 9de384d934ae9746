package shard

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
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
		if fenced := memberLease(h, "b"); holderOf(fenced) != "" {
			t.Errorf("b's Lease was not fenced before its shards were taken: holder %q", holderOf(fenced))
		}
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
