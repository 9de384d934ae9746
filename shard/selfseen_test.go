package shard

import (
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// A member whose own Lease was deleted by hand (or fenced) keeps a live
// term until its next renewal fails. Meanwhile the proposer, which sees
// it gone, moves its targets away; it must not write its share back, or
// the two undo each other's writes at one instant without end (found by
// the simulation: test/sim, -world shard, seed 208).
func TestMemberWhoseLeaseIsGoneDoesNotTargetItself(t *testing.T) {
	now := t0.Add(time.Hour)
	lease := func(id, holder, rv string) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: MemberLeaseName(testGroup, id), ResourceVersion: rv,
			Labels: map[string]string{LabelGroup: testGroup}}}
		l.Spec.LeaseDurationSeconds = ptr.To[int32](15)
		l.Spec.RenewTime = &metav1.MicroTime{Time: now}
		if holder != "" {
			l.Spec.HolderIdentity = ptr.To(holder)
		}
		return l
	}
	for _, tc := range []struct {
		name string
		own  *memberView
	}{
		{"deleted", &memberView{lease: lease("b", "b", "200"), absent: true, rv: "210", observedAt: now}},
		{"fenced", &memberView{lease: lease("b", "", "210"), rv: "210", observedAt: now}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAssignment(4)
			a.owner = []string{"a", "a", "a", "a"}
			a.target = []string{"a", "a", "a", "a"}
			a.epoch["a"] = "100"
			s := &state{
				self: "b", group: testGroup, shards: 4, leaseDuration: 15 * time.Second, asg: a,
				members: map[string]*memberView{
					MemberLeaseName(testGroup, "a"): {lease: lease("a", "a", "205"), rv: "205", observedAt: now},
					MemberLeaseName(testGroup, "b"): tc.own,
				},
				synced: true, syncRV: "50", syncAt: now.Add(-time.Hour),
				term:    term{running: true, live: true, epoch: "150"},
				running: map[int]bool{}, cancelled: map[int]bool{}, holdOff: map[int]time.Time{},
			}
			if live := s.live(now); !slices.Equal(live, []string{"a"}) {
				t.Errorf("live = %v; want [a]: the others see b gone", live)
			}
			if d := s.decide(now); d.next != nil && slices.Contains(d.next.target, "b") {
				t.Errorf("b writes targets %v, naming itself, while its own Lease is %s: the proposer a moves them back at once", d.next.target, tc.name)
			}
		})
	}
}
