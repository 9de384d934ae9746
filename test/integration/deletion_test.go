package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// requestsSince counts every lease request the recorders saw since t.
func requestsSince(recs []*testkit.Wire, t time.Time) int {
	n := 0
	for _, r := range recs {
		for _, c := range r.Verbs(t) {
			n += c
		}
	}
	return n
}

// Issue 20, 1 on the real server: a held Lease deleted by hand (as
// `kubectl delete lease` does), with 1 and with 3 replicas, Rejoin on.
// There is a leader again within 2×LeaseDuration, the requests in the 10s
// after the delete stay near the steady rate, and no two works ever run
// at once.
func TestDeletedLeaseRealServer(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			ns, name := newNamespace(t), "deleted"
			tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
			var recs []*testkit.Wire
			for i := 0; i < replicas; i++ {
				c := startCandidate(t, candidateOpts{id: fmt.Sprintf("r%d", i), ns: ns, name: name, t: std, tr: tr, logs: logs, rejoin: true})
				recs = append(recs, c.rec)
			}
			first := tr.NextStart(t, 2*std.L)
			// The steady rate, measured over 10s with a leader.
			steadyFrom := time.Now()
			time.Sleep(10 * time.Second)
			steady := requestsSince(recs, steadyFrom)

			deletedAt := time.Now()
			if err := admin.CoordinationV1().Leases(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("deleting the Lease: %v", err)
			}
			next := tr.NextStart(t, 2*std.L)
			t.Logf("%d replica(s): %s led; after the delete %s led again %v later", replicas, first.ID, next.ID, next.At.Sub(deletedAt).Round(time.Millisecond))
			time.Sleep(time.Until(deletedAt.Add(10 * time.Second)))
			after := requestsSince(recs, deletedAt)
			t.Logf("requests: %d in the 10s before the delete, %d in the 10s after", steady, after)
			if limit := 2*steady + 10*replicas; after > limit {
				t.Fatalf("%d requests in the 10s after the delete, %d before: want near the steady rate (at most %d)", after, steady, limit)
			}
			tr.Check(t)
		})
	}
}

// Issue 22, 2 on the real server: ten yields in a row through the
// annotation (what `kubectl leasehold yield` writes), to anyone and to a
// named replica, in a three-replica fleet without Rejoin. Every process
// keeps running, and each time a new leader starts within one RetryPeriod
// of the old one's work ending.
func TestTenYieldsKeepTheFleetRealServer(t *testing.T) {
	ns, name := newNamespace(t), "yields"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	cands := map[string]*candidate{}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("m%d", i+1)
		cands[id] = startCandidate(t, candidateOpts{id: id, ns: ns, name: name, t: std, tr: tr, logs: logs})
	}
	leader := tr.NextStart(t, 2*std.L).ID
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		to := "*"
		if i%2 == 1 {
			for id := range cands {
				if id != leader {
					to = id
					break
				}
			}
		}
		old := cands[leader]
		stopsBefore := old.stopCount()
		annotated := time.Now()
		// A merge patch, as kubectl annotate sends.
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, leasehold.PreferredHolderAnnotation, to)
		if _, err := admin.CoordinationV1().Leases(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("yield %d: annotating: %v", i, err)
		}
		next := tr.NextStart(t, std.L)
		testkit.Eventually(t, 5*time.Second, leader+" stopped", func() bool { return old.stopCount() > stopsBefore })
		if next.ID == leader || (to != "*" && next.ID != to) {
			t.Fatalf("yield %d by %s to %s: %s took it", i, leader, to, next.ID)
		}
		if gap := next.At.Sub(annotated); gap > std.P {
			t.Errorf("yield %d by %s to %s: %s started %v after the annotation; want within one RetryPeriod (%v)", i, leader, to, next.ID, gap.Round(time.Millisecond), std.P)
		}
		leader = next.ID
		for id, c := range cands {
			select {
			case <-c.Done():
				t.Fatalf("yield %d: %s's Run returned %v: a yield must keep the process", i, id, c.Err())
			default:
			}
		}
		time.Sleep(time.Second) // the next yield a second later
	}
	tr.Check(t)
}
