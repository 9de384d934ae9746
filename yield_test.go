package leasehold

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// releases records the successor each release write named in
// spec.preferredHolder ("" for none), per client.
type releases struct {
	mu     sync.Mutex
	inSpec map[string][]string
}

func (r *releases) record(client string, lease *coordinationv1.Lease) {
	if lease == nil || leaserecord.Holder(lease) != "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inSpec == nil {
		r.inSpec = map[string][]string{}
	}
	r.inSpec[client] = append(r.inSpec[client], ptr.Deref(lease.Spec.PreferredHolder, ""))
}

func (r *releases) of(client string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.inSpec[client]...)
}

func (r *releases) hook(h *harness) {
	h.srv.AddHook(func(_ context.Context, req leaseholdtest.Request) error {
		if req.Verb == "update" {
			r.record(req.Client, req.Lease)
		}
		return nil
	})
}

// yieldFromAToB starts a, which leads, and b, which follows; a yields to
// b, and b leads.
func yieldFromAToB(t *testing.T, h *harness) {
	t.Helper()
	a := h.candidate("a").start()
	a.waitLeader()
	b := h.candidate("b").start()
	eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
	if err := a.e.Yield(context.Background(), "b"); err != nil {
		t.Fatalf("Yield = %v", err)
	}
	b.waitLeader()
}

// putStrategy stores an unheld Lease carrying a strategy, as one created
// by kube-apiserver's election controller (or by hand) would.
func putStrategy(h *harness) {
	l := h.putLease("", 15)
	l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	h.srv.Put(l)
}

// On a Lease with a strategy, where the server keeps the field (the gate
// on), a yield names the successor in spec.preferredHolder as well as in
// the annotation, and the successor clears both.
func TestYieldWritesSpecPreferredHolderWhereKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		var rel releases
		rel.hook(h)
		putStrategy(h)
		yieldFromAToB(t, h)
		if got := rel.of("a"); len(got) != 1 || got[0] != "b" {
			t.Fatalf("a's releases named %q in spec.preferredHolder, want [b]", got)
		}
		h.settle()
		if l := h.lease(); l.Spec.PreferredHolder != nil || l.Annotations[PreferredHolderAnnotation] != "" {
			t.Fatalf("the successor left the preference on the Lease: spec %v, annotations %v", l.Spec.PreferredHolder, l.Annotations)
		}

	})
}

// On a Lease without a strategy the field is never written: a server with
// the gate on would refuse the release with 422 (leaseholdtest does the
// same), and the annotation alone carries the successor.
func TestYieldWithoutStrategyNamesSuccessorInAnnotationOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		var rel releases
		rel.hook(h)
		a := h.candidate("a").start()
		a.waitLeader()
		b := h.candidate("b").start()
		c := h.candidate("c").start()
		eventually(t, "followers see a", func() bool { return b.e.Leader() == "a" && c.e.Leader() == "a" })
		// A refused release is retried until the renew deadline, which the
		// fake clock never reaches: bound the wait in real time instead.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.e.Yield(ctx, "c"); err != nil {
			t.Fatalf("Yield = %v", err)
		}
		c.waitLeader()
		if got := rel.of("a"); len(got) != 1 || got[0] != "" {
			t.Fatalf("a's releases named %q in spec.preferredHolder, want one release naming nobody there", got)
		}
		if b.count("started") != 0 {
			t.Fatal("b took the lease meant for c")
		}

	})
}

// Where the server drops the field (the gate off, on a Lease that kept its
// strategy from before), the first release that writes it learns so from
// the answer, says so once in the log, and no later release writes it.
func TestYieldStopsWritingSpecPreferredHolderOnceDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.srv.SetCoordinatedLeaderElection(false)
		var rel releases
		rel.hook(h)
		putStrategy(h)
		rejoin := func(c *Config) { c.Rejoin = true }
		a := h.candidate("a", rejoin).start()
		a.waitLeader()
		b := h.candidate("b", rejoin).start()
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		for i, to := range []*candidate{b, a, b} {
			from := map[*candidate]*candidate{a: b, b: a}[to]
			if err := from.e.Yield(context.Background(), to.id); err != nil {
				t.Fatalf("yield %d to %s = %v", i, to.id, err)
			}
			to.waitLeader()
		}
		if got := rel.of("a"); len(got) != 2 || got[0] != "b" || got[1] != "" {
			t.Fatalf("a's releases named %q in spec.preferredHolder, want [b \"\"]: written once, then not again", got)
		}
		if n := len(a.logs.matching("drops spec.preferredHolder")); n != 1 {
			t.Fatalf("logged the dropped field %d times, want once:\n%s", n, a.logs)
		}
		if l := h.lease(); l.Spec.PreferredHolder != nil {
			t.Fatalf("the server kept spec.preferredHolder %q with the gate off", *l.Spec.PreferredHolder)
		}

	})
}

// On client-go's plain fakes, which keep every field, a yield on a Lease
// with a strategy writes the field, and the successor takes over. The Lease
// exists, unheld, before the candidates start: NewSimpleClientset's watch
// then delivers that first state after the winner's write, which must not
// read as a release.
func TestPlainFakeYieldWritesSpecPreferredHolder(t *testing.T) {
	forEachPlainFake(t, func(t *testing.T, cs kubernetes.Interface, h *harness) {
		var rel releases
		cs.(interface {
			PrependReactor(verb, resource string, reaction k8stesting.ReactionFunc)
		}).PrependReactor("update", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
			rel.record("any", action.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease))
			return false, nil, nil
		})
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName}}
		l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
		if _, err := cs.CoordinationV1().Leases(testNS).Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		yieldFromAToB(t, h)
		if got := rel.of("any"); len(got) != 1 || got[0] != "b" {
			t.Fatalf("releases named %q in spec.preferredHolder, want [b]", got)
		}
	})
}

// Issue 22, 2 and 3: ten yields in a row, back to back, to anyone and to a
// named candidate, in a three-replica fleet without Rejoin: every process
// keeps running, and after each yield a new leader holds the Lease within
// one RetryPeriod (the bug: the second yielder's Lease sat unheld ~14s
// while the first sat out a whole lease duration).
func TestBackToBackYieldsKeepAFleetLed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		cands := map[string]*candidate{}
		for _, id := range []string{"m1", "m2", "m3"} {
			cands[id] = h.candidate(id).start()
		}
		eventually(t, "a leader", func() bool { return h.holder() != "" })
		for i := 0; i < 10; i++ {
			leader := cands[h.holder()]
			to := ""
			if i%2 == 1 {
				for id := range cands { // a named successor, not the leader
					if id != leader.id {
						to = id
						break
					}
				}
			}
			if err := leader.e.Yield(context.Background(), to); err != nil {
				t.Fatalf("yield %d by %s to %q: %v", i, leader.id, printable(to), err)
			}
			start := h.clock.Now()
			for h.holder() == "" || h.holder() == leader.id {
				if h.clock.Since(start) > 2*time.Second {
					t.Fatalf("yield %d by %s to %q: no new leader within one RetryPeriod (2s); lease=%v", i, leader.id, printable(to), h.lease())
				}
				h.advance(100 * time.Millisecond)
			}
			if to != "" && h.holder() != to {
				t.Fatalf("yield %d to %s: %s took it", i, to, h.holder())
			}
			h.advance(time.Second) // the next yield comes one second later
		}
		for id, c := range cands {
			select {
			case err := <-c.done:
				t.Fatalf("%s's Run returned %v after the yields; a yield must keep the process", id, err)
			default:
			}
		}
		if m := h.maxWorking.Load(); m > 1 {
			t.Fatalf("%d works at once", m)
		}
		if n := len(cands["m1"].logs.matching("Sitting out")) + len(cands["m2"].logs.matching("Sitting out")) + len(cands["m3"].logs.matching("Sitting out")); n != 10 {
			t.Fatalf("%d sit-out log lines for 10 yields, want 10", n)
		}
	})
}

// Found by the simulator (test/sim): Run's ctx cancelled while a yield
// waits for the work. The yield is carried on and answered, not dropped.
func TestCancelDuringYieldStillAnswersTheYield(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a")
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		b := h.candidate("b").start()
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		yielded := make(chan error, 1)
		go func() { yielded <- a.e.Yield(context.Background(), "b") }()
		h.settle()
		a.cancel() // while the yield waits for the work
		h.settle()
		close(a.hold)
		h.settle()
		select {
		case err := <-yielded:
			if err != nil {
				t.Fatalf("Yield = %v, want nil (the release named b)", err)
			}
		default:
			t.Fatal("Yield never answered after Run's ctx was cancelled during its step-down")
		}
		b.waitLeader()
	})
}
