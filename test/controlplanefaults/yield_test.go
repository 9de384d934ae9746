package controlplanefaults

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// Found by the chaos harness (-mode yield, two annotation yields 26ms
// apart): a leader yields to anyone (the preferred-holder annotation "*");
// while its release is in flight, an operator annotates the Lease again,
// now naming c. The release, conditioned on the version the leader read,
// conflicts. The leader then ends its term as lost ("the yield's release
// failed"), campaigns at once (Rejoin), finds the Lease still naming it
// with its own renewal, takes it again as a new term, and that term's
// claim deletes the annotation naming c: the operator's request is
// dropped, and the yielder leads on.
//
// Expected: a release that conflicts with a write that left this process
// the holder (a metadata change) is retried on the newer version, or the
// newer preference is honoured; either way c, named last, leads next.
func TestYieldReleaseRacesAnnotation(t *testing.T) {
	ns, tr, lg := newNamespace(t), testkit.NewTracker(), testkit.NewLogs(t, 4)
	ctx := context.Background()
	a := startLeading(t, "a", ns, "race", std, tr, lg, rejoin)
	startElector(t, "b", ns, "race", std, tr, lg, rejoin)
	c := startElector(t, "c", ns, "race", std, tr, lg, rejoin)
	testkit.Eventually(t, 10*time.Second, "c to see a", func() bool { return c.sees("a") })

	annotate := func(to string) {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{leasehold.PreferredHolderAnnotation: to}}})
		_, err := admin.CoordinationV1().Leases(ns).Patch(ctx, "race", types.MergePatchType, patch, metav1.PatchOptions{})
		testkit.Must(t, err)
	}
	// Just before a's release goes out, the operator names c.
	var once sync.Once
	raced := make(chan struct{})
	a.wire.SetBefore(func(cl testkit.Call, _ *http.Request) *http.Response {
		if (cl.Verb != "update" && cl.Verb != "create") || !cl.HasBody || cl.Holder != "" {
			return nil // not a release
		}
		once.Do(func() { annotate("c"); close(raced) })
		return nil
	})
	annotate("*")
	select {
	case <-raced:
	case <-time.After(10 * time.Second):
		t.Fatal("a never released the Lease after the annotation asked it to")
	}
	s := tr.NextStart(t, std.L+std.P+5*time.Second)
	if s.ID != "c" {
		l, _ := admin.CoordinationV1().Leases(ns).Get(ctx, "race", metav1.GetOptions{})
		t.Errorf("%s led next, want c (named by the newest annotation); the Lease's annotations now: %v", s.ID, l.Annotations)
	}
	tr.Check(t)
}

// Found by the chaos harness (-mode yield): a yields to anyone; b takes
// the Lease; b at once yields to a by name. a, the named successor, sits
// out the rest of the LeaseDuration that follows its own yield before it
// writes (the sit-out meant for yields to anyone), while every other
// candidate defers to it: the handoff to a takes up to LeaseDuration
// instead of milliseconds, and nobody leads meanwhile.
//
// Expected, as Elector.Yield documents: the named successor takes the
// Lease within milliseconds; the sit-out should not hold back a process
// that a release names.
func TestYieldToRecentYielder(t *testing.T) {
	ns, tr, lg := newNamespace(t), testkit.NewTracker(), testkit.NewLogs(t, 4)
	ctx := context.Background()
	a := startLeading(t, "a", ns, "again", std, tr, lg, rejoin)
	b := startElector(t, "b", ns, "again", std, tr, lg, rejoin)
	testkit.Eventually(t, 10*time.Second, "b to see a", func() bool { return b.sees("a") })

	testkit.Must(t, a.el.Yield(ctx, ""))
	if s := tr.NextStart(t, 5*time.Second); s.ID != "b" {
		t.Fatalf("%s took the Lease after a's yield to anyone, want b", s.ID)
	}
	testkit.Eventually(t, 5*time.Second, "b to lead", b.el.IsLeader)
	sent := time.Now()
	testkit.Must(t, b.el.Yield(ctx, "a"))
	s := tr.NextStart(t, std.L+std.P+5*time.Second)
	lat := s.At.Sub(sent)
	if s.ID != "a" {
		t.Fatalf("%s led after b's yield to a", s.ID)
	}
	if lat > std.L/2 {
		t.Errorf("a, named successor, took the Lease %v after b's yield; want milliseconds (the handoff of a yield), at least under L/2 = %v", lat.Round(time.Millisecond), std.L/2)
	} else {
		t.Logf("a took the Lease %v after b's yield to it", lat.Round(time.Millisecond))
	}
	tr.Check(t)
}
