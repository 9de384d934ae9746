package shard

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// A leaver whose term was lost while a shard's work hangs keeps writing
// its leaving mark; the proposer, which sees its Lease no longer renewed,
// must not forget the mark while that Lease is still held, and the leaver
// must not write it back once its Lease is gone or fenced: otherwise the
// two undo each other's writes without end (the simulator's shard world,
// seeds 4141, 4155, 4306 and 5420: writes every 10ms while the work hung).
func TestLeavingMarkIsNotFoughtOver(t *testing.T) {
	now := t0.Add(time.Hour)
	lease := func(id, holder, rv string, renewed time.Time) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: MemberLeaseName(testGroup, id), ResourceVersion: rv,
			Labels: map[string]string{LabelGroup: testGroup}}}
		l.Spec.LeaseDurationSeconds = ptr.To[int32](15)
		l.Spec.RenewTime = &metav1.MicroTime{Time: renewed}
		if holder != "" {
			l.Spec.HolderIdentity = ptr.To(holder)
		}
		return l
	}
	world := func(self string, cLease *coordinationv1.Lease, t term) *state {
		a := newAssignment(4)
		a.owner = []string{"a", "a", "", ""}
		a.target = []string{"a", "a", "a", "a"}
		a.epoch["a"] = "100"
		a.leaving["c"] = true
		return &state{
			self: self, group: testGroup, shards: 4, leaseDuration: 15 * time.Second, asg: a,
			members: map[string]*memberView{
				MemberLeaseName(testGroup, "a"): {lease: lease("a", "a", "300", now), rv: "300", observedAt: now},
				// c's Lease, unchanged for a minute: not live.
				MemberLeaseName(testGroup, "c"): {lease: cLease, rv: cLease.ResourceVersion, observedAt: now.Add(-time.Minute)},
			},
			synced: true, syncRV: "300", syncAt: now.Add(-time.Hour),
			term:    t,
			running: map[int]bool{0: true, 1: true}, cancelled: map[int]bool{}, holdOff: map[int]time.Time{},
		}
	}
	proposer := term{running: true, live: true, epoch: "100"}
	leaver := term{running: true, leaving: true, epoch: "200"}
	held := lease("c", "c", "250", now.Add(-time.Minute))
	fenced := lease("c", "", "260", now.Add(-time.Minute))

	if next, _, _ := world("a", held, proposer).desired(now); !next.leaving["c"] {
		t.Error("the proposer forgot the leaving mark of c, whose Lease is still held: c writes it back at once")
	}
	if next, _, _ := world("a", fenced, proposer).desired(now); next.leaving["c"] {
		t.Error("the proposer kept the leaving mark of c, whose Lease is fenced")
	}
	gone := world("c", fenced, leaver)
	delete(gone.asg.leaving, "c") // the proposer forgot it
	if next, _, _ := gone.desired(now); next.leaving["c"] {
		t.Error("c wrote its leaving mark back although it sees its own Lease fenced")
	}
	if next, _, _ := world("c", held, leaver).desired(now); !next.leaving["c"] {
		t.Error("c, leaving with its Lease held, does not mark itself leaving")
	}
}
