package shard

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// A proposer whose claim of every shard has just landed, while a new
// member joins: one decision starts the shards it now owns and, as
// proposer, moves half of them to the newcomer. The same write must not
// acknowledge those it is starting (clear their owner): the newcomer would
// claim and start them while this member's work runs (found by the
// simulation: test/sim, -world shard, seeds 6, 31, 366 and 380).
func TestShardsStartedByADecisionAreNotAcknowledgedByIt(t *testing.T) {
	now := t0.Add(time.Hour)
	lease := func(id, rv string) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: MemberLeaseName(testGroup, id), ResourceVersion: rv,
			Labels: map[string]string{LabelGroup: testGroup}}}
		l.Spec.LeaseDurationSeconds = ptr.To[int32](15)
		l.Spec.RenewTime = &metav1.MicroTime{Time: now}
		l.Spec.HolderIdentity = ptr.To(id)
		return l
	}
	a := newAssignment(4)
	a.owner = []string{"a", "a", "a", "a"}
	a.target = []string{"a", "a", "a", "a"}
	a.epoch["a"] = "150"
	s := &state{
		self: "a", group: testGroup, shards: 4, leaseDuration: 15 * time.Second, asg: a,
		members: map[string]*memberView{
			MemberLeaseName(testGroup, "a"): {lease: lease("a", "150"), rv: "150", observedAt: now},
			MemberLeaseName(testGroup, "b"): {lease: lease("b", "160"), rv: "160", observedAt: now},
		},
		synced: true, syncRV: "50", syncAt: now.Add(-time.Hour),
		term:    term{running: true, live: true, epoch: "150"},
		running: map[int]bool{}, cancelled: map[int]bool{}, holdOff: map[int]time.Time{},
	}
	d := s.decide(now)
	if len(d.start) != 4 {
		t.Fatalf("start = %v; want every shard: a owns them all", d.start)
	}
	if d.next == nil {
		t.Fatal("no write: the proposer should move some targets to b")
	}
	moved := 0
	for _, i := range d.start {
		if d.next.target[i] == "b" {
			moved++
		}
		if d.next.owner[i] != "a" {
			t.Errorf("shard %d: the write that moves it clears its owner (%q) while the same decision starts its work here", i, d.next.owner[i])
		}
	}
	if moved == 0 {
		t.Fatalf("targets %v: none moved to b, so the case is not tested", d.next.target)
	}
}
