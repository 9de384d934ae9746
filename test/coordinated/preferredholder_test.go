package coordinated

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/bench"
	"github.com/leasehold/leasehold/test/testkit"
)

// A yield writes spec.preferredHolder as well as the annotation only where
// kube-apiserver keeps the field: with the CoordinatedLeaderElection gate
// on and a strategy on the Lease. On a gate-on server, a Lease without a
// strategy refuses the field (422), so the yield must not write it there;
// with the default gates the server drops strategy, and the field is never
// written. In every case the named successor takes over.
func TestYieldWritesSpecPreferredHolderOnlyWhereKept(t *testing.T) {
	t.Run("gate on", func(t *testing.T) {
		_, _, cs := start(t, bench.CoordinatedControlPlane()...)
		if got := yieldOnce(t, cs, "with-strategy", true); !got.inSpec("b") {
			t.Fatalf("no release named b in spec.preferredHolder; writes seen:\n%s", got)
		}
		if got := yieldOnce(t, cs, "no-strategy", false); got.inSpec("b") {
			t.Fatalf("a release on a Lease without a strategy named b in spec.preferredHolder; writes seen:\n%s", got)
		}
	})
	t.Run("default gates", func(t *testing.T) {
		_, _, cs := start(t)
		if got := yieldOnce(t, cs, "with-strategy", true); got.inSpec("b") || got.strategy {
			t.Fatalf("spec.preferredHolder or spec.strategy arrived with the gate off; writes seen:\n%s", got)
		}
	})
}

// writes is what a watch saw of one Lease during a yield.
type writes struct {
	mu       sync.Mutex
	lines    []string
	released []string // spec.preferredHolder of each release ("" for none)
	strategy bool     // some version had spec.strategy
}

func (w *writes) add(l *coordinationv1.Lease) {
	w.mu.Lock()
	defer w.mu.Unlock()
	holder, pref := ptr.Deref(l.Spec.HolderIdentity, ""), ptr.Deref(l.Spec.PreferredHolder, "")
	w.lines = append(w.lines, fmt.Sprintf("rv %s holder %q spec.preferredHolder %q strategy %v annotation %q",
		l.ResourceVersion, holder, pref, ptr.Deref(l.Spec.Strategy, ""), l.Annotations[leasehold.PreferredHolderAnnotation]))
	if holder == "" {
		w.released = append(w.released, pref)
	}
	w.strategy = w.strategy || l.Spec.Strategy != nil
}

func (w *writes) inSpec(who string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.released {
		if p == who {
			return true
		}
	}
	return false
}

func (w *writes) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// yieldOnce creates an unheld Lease (with a strategy if asked), lets a lead
// it with b following, has a yield to b, and returns every version of the
// Lease a watch saw until b led. It fails the test unless b takes over and
// clears both forms of the preference.
func yieldOnce(t *testing.T, cs kubernetes.Interface, name string, withStrategy bool) *writes {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leases := cs.CoordinationV1().Leases("default")
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if withStrategy {
		l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	}
	created, err := leases.Create(ctx, l, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: created.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	seen := &writes{}
	seen.add(created)
	go func() {
		for ev := range w.ResultChan() {
			if lease, ok := ev.Object.(*coordinationv1.Lease); ok && ev.Type != watch.Error {
				seen.add(lease)
			}
		}
	}()

	electors := map[string]*leasehold.Elector{}
	done := make(chan error, 2)
	for _, id := range []string{"a", "b"} {
		e, err := leasehold.New(leasehold.Config{
			Lock:      &leasehold.LeaseLock{Namespace: "default", Name: name, Identity: id, Client: cs.CoordinationV1()},
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { <-ctx.Done() }},
		})
		if err != nil {
			t.Fatal(err)
		}
		electors[id] = e
		go func() { done <- e.Run(ctx) }()
		if id == "a" {
			poll.Eventually(t, handoffWithin, "a leads", func() bool { return e.IsLeader() })
		}
	}
	a, b := electors["a"], electors["b"]
	poll.Eventually(t, handoffWithin, "b follows a", func() bool { return b.Leader() == "a" })
	yctx, ycancel := context.WithTimeout(ctx, 30*time.Second)
	defer ycancel()
	if err := a.Yield(yctx, "b"); err != nil {
		t.Fatalf("%s: Yield = %v; writes seen:\n%s", name, err, seen)
	}
	poll.Eventually(t, handoffWithin, "b leads", func() bool { return b.IsLeader() })
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Spec.PreferredHolder != nil || cur.Annotations[leasehold.PreferredHolderAnnotation] != "" {
		t.Fatalf("%s: b's term kept the preference: spec %q, annotations %v", name, ptr.Deref(cur.Spec.PreferredHolder, ""), cur.Annotations)
	}
	t.Logf("%s: writes seen:\n%s", name, seen)
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("%s: Run = %v", name, err)
		}
	}
	return seen
}

// handoffWithin is far above what a loaded 2-core machine needs for a
// handoff that takes milliseconds; poll polls every 5ms.
const handoffWithin = 30 * time.Second

var poll = testkit.Poller{Every: 5 * time.Millisecond}
