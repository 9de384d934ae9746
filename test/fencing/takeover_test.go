package fencing

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/testkit"
)

// The current leader's stamped writes are admitted; after another replica
// takes over, the deposed leader's work, still running (its writes held
// back past the takeover, as by a pause or a slow network), gets every
// stamped write refused: on an object the new leader has written since,
// on one only the old leader ever wrote, and a create. The new leader's
// writes are admitted.
func TestDeposedLeaderWritesRefused(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	w := clientAs(writer(ns), "").CoreV1().ConfigMaps(ns)

	type result struct {
		what string
		err  error
	}
	release := make(chan struct{})
	results := make(chan result, 8)
	a := startElector(t, electorOpts{ns: ns, id: "a", work: func(ctx context.Context) {
		// Held back past the takeover; then the work goes on without
		// looking at ctx, as code that was mid-step when paused does.
		<-release
		bg := context.Background()
		write := func(what string, f func() error) { results <- result{what, f()} }
		write("update of an object the new leader has written", func() error { return updateStamped(bg, ctx, ns, "shared") })
		write("update of an object only the deposed leader wrote", func() error { return updateStamped(bg, ctx, ns, "a-only") })
		write("create", func() error {
			cm := configMap(t, ns, "a-late", nil)
			if err := fence.Stamp(ctx, cm); err != nil {
				return err
			}
			_, err := w.Create(bg, cm, metav1.CreateOptions{})
			return err
		})
		close(results)
	}})
	aTerm := a.leads(t, 20*time.Second)
	// The Lease exists now: install the policy, then let a work.
	installStampPolicy(t, ns, false)
	for _, name := range []string{"shared", "a-only"} {
		cm := configMap(t, ns, name, nil)
		cm.Data = map[string]string{"by": aTerm.String()}
		if err := fence.Stamp(a.workCtx(), cm); err != nil {
			t.Fatal(err)
		}
		_, err := w.Create(ctx, cm, metav1.CreateOptions{})
		wantAdmitted(t, "the leader's create", err)
	}
	wantAdmitted(t, "the leader's update", updateStamped(ctx, a.workCtx(), ns, "shared"))

	// Cut a off: its renewals fail, its term ends by its clock, and b
	// takes over once the Lease expires.
	a.cut.Store(true)
	b := startElector(t, electorOpts{ns: ns, id: "b"})
	bTerm := b.leads(t, 20*time.Second)
	if bTerm.Transitions <= aTerm.Transitions {
		t.Fatalf("b's term %d does not follow a's %d", bTerm.Transitions, aTerm.Transitions)
	}
	// b writes "shared". Its first write may be refused for the few
	// milliseconds the API server's copy of the Lease lags the takeover;
	// once admitted, the API server has seen b's term, and a's is over.
	var err error
	testkit.Eventually(t, 10*time.Second, "the new leader's write to be admitted", func() bool {
		err = updateStamped(ctx, b.workCtx(), ns, "shared")
		if err != nil && !fence.IsFenced(err) {
			t.Fatalf("the new leader's write: %v", err)
		}
		return err == nil
	})

	close(release)
	want := fmt.Sprintf("stamped for term %d of a, but Lease %s/%s is in term %d of b", aTerm.Transitions, ns, leaseName, bTerm.Transitions)
	n := 0
	for r := range results {
		n++
		wantFenced(t, "deposed leader's "+r.what, r.err, want)
	}
	if n != 3 {
		t.Errorf("got %d results of the deposed leader's writes; want 3", n)
	}
	// What is stored is what the terms were entitled to write.
	for name, want := range map[string]leasehold.Term{"shared": bTerm, "a-only": aTerm} {
		cm, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := cm.Data["by"]; got != want.String() {
			t.Errorf("%s was last written by %q; want %q", name, got, want)
		}
	}
	if _, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "a-late", metav1.GetOptions{}); err == nil {
		t.Errorf("a-late, created by the deposed leader after the takeover, is stored")
	}
	wantAdmitted(t, "the new leader's write to an object only the old leader wrote", updateStamped(ctx, b.workCtx(), ns, "a-only"))
}

// A leader that releases the Lease (here on cancel) gets its later writes
// refused even before anyone else takes over: the Lease has no holder.
func TestReleasedLeaderWritesRefused(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	workCtx := make(chan context.Context, 1)
	a := startElector(t, electorOpts{ns: ns, id: "a", release: true, work: func(ctx context.Context) {
		workCtx <- ctx
		<-ctx.Done()
	}})
	aTerm := a.leads(t, 20*time.Second)
	installStampPolicy(t, ns, false)
	wctx := <-workCtx
	cm := configMap(t, ns, "obj", nil)
	if err := fence.Stamp(wctx, cm); err != nil {
		t.Fatal(err)
	}
	if _, err := clientAs(writer(ns), "").CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the leader's create: %v", err)
	}
	a.stop(t)
	var err error
	testkit.Eventually(t, 10*time.Second, "the released term to be refused", func() bool {
		err = updateStamped(ctx, wctx, ns, "obj")
		return err != nil
	})
	wantFenced(t, fmt.Sprintf("write of term %d after the release", aTerm.Transitions), err, "has no holder")
}

// updateStamped updates the ConfigMap's data (data.by names the writer),
// stamped with the term of termCtx, as the controller, with reqCtx for
// the request.
func updateStamped(reqCtx, termCtx context.Context, ns, name string) error {
	cm, err := admin.CoreV1().ConfigMaps(ns).Get(reqCtx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	term, ok := leasehold.TermFromContext(termCtx)
	if !ok {
		return errors.New("no term")
	}
	cm.Data = map[string]string{"by": term.String(), "at": time.Now().Format(time.RFC3339Nano)}
	if err := fence.Stamp(termCtx, cm); err != nil {
		return err
	}
	_, err = clientAs(writer(ns), "").CoreV1().ConfigMaps(ns).Update(reqCtx, cm, metav1.UpdateOptions{})
	return err
}
