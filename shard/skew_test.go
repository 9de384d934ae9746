package shard

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// skewedClock reads the bubble's clock set off by off; its durations and
// timers are the bubble's.
type skewedClock struct {
	clock.RealClock
	off time.Duration
}

func (c skewedClock) Now() time.Time                  { return time.Now().Add(c.off) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Absolute clock offsets do not matter (shard/doc.go). A member whose
// clock is three lease durations ahead reads every other member's
// renewTime as old; if that hint kept a member that is renewing out of
// the group, the two would each take themselves to be right about the
// targets and undo each other's writes without end (the simulator's shard
// world, seed 2 once skew was drawn: 65 assignment writes at one virtual
// instant, over and over, and shards left idle).
func TestSkewedMemberIsNotKeptOutOfTheGroup(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		var mu sync.Mutex
		writes := 0
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Name == testGroup && (r.Verb == "update" || r.Verb == "create") {
				mu.Lock()
				writes++
				mu.Unlock()
			}
			return nil
		})
		b := h.member("b").start()
		h.until(time.Second, "b runs all 8", func() bool { return len(b.owned()) == 8 })
		// a, the proposer (the smallest identity), reads b's renewTime as
		// 45s old: more than twice b's lease duration.
		a := h.member("a", func(c *Config) { c.Clock = skewedClock{off: 45 * time.Second} }).start()
		h.until(time.Minute, "a and b balanced", func() bool { return balanced(8, a, b) })
		mu.Lock()
		n := writes
		mu.Unlock()
		// Joining a member moves 4 shards: a few writes each (targets,
		// acknowledgements, claims), nowhere near a war.
		if n > 20 {
			t.Errorf("%d writes of the assignment for one member joining, want at most 20: the members undo each other's targets", n)
		}
		h.advance(time.Minute)
		if !balanced(8, a, b) {
			t.Errorf("not balanced a minute later: a %v b %v", a.owned(), b.owned())
		}
		h.works.check(t)
		a.stop()
		b.stop()
	})
}

// The hint against Leases left by members long gone still holds for a
// Lease never seen renewed that names no shard; a Lease seen renewed, or
// one the assignment names, is judged only by when this member saw it
// change.
func TestStaleRenewTimeHintAppliesOnlyToLeasesNeverSeenRenewed(t *testing.T) {
	now := t0.Add(time.Hour)
	lease := func(id, rv string, renewed time.Time) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: MemberLeaseName(testGroup, id), ResourceVersion: rv,
			Labels: map[string]string{LabelGroup: testGroup}}}
		l.Spec.HolderIdentity = ptr.To(id)
		l.Spec.LeaseDurationSeconds = ptr.To[int32](15)
		l.Spec.RenewTime = &metav1.MicroTime{Time: renewed}
		return l
	}
	old := now.Add(-time.Minute) // four durations old by this member's clock
	a := newAssignment(4)
	a.owner = []string{"a", "a", "c", "c"}
	a.target = []string{"a", "a", "a", "c"}
	a.epoch["a"], a.epoch["c"] = "100", "101"
	s := &state{
		self: "a", group: testGroup, shards: 4, leaseDuration: 15 * time.Second, asg: a,
		members: map[string]*memberView{
			MemberLeaseName(testGroup, "a"): {lease: lease("a", "300", now), rv: "300", observedAt: now},
			// b: renewing (seen in a second version), its clock behind.
			MemberLeaseName(testGroup, "b"): {lease: lease("b", "302", old), rv: "302", observedAt: now, renewed: true},
			// c: seen once, but the assignment names it.
			MemberLeaseName(testGroup, "c"): {lease: lease("c", "303", old), rv: "303", observedAt: now},
			// d: seen once, named nowhere: left long ago.
			MemberLeaseName(testGroup, "d"): {lease: lease("d", "304", old), rv: "304", observedAt: now},
		},
		synced: true, syncRV: "300", syncAt: now,
		term:    term{running: true, live: true, epoch: "100"},
		running: map[int]bool{}, cancelled: map[int]bool{}, holdOff: map[int]time.Time{},
	}
	if got, want := s.live(now), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("live = %v, want %v", got, want)
	}
}

// A second version of a member Lease under the same holder marks it
// renewed; the first sighting, or a version under another holder (a
// fence), does not.
func TestMemberLeaseSeenRenewedIsMarkedSo(t *testing.T) {
	l := &loop{cfg: Config{Group: testGroup}, clock: clock.RealClock{}, s: state{members: map[string]*memberView{}}}
	name := MemberLeaseName(testGroup, "b")
	version := func(rv, holder string) *coordinationv1.Lease {
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: rv,
			Labels: map[string]string{LabelGroup: testGroup}}}
		if holder != "" {
			lease.Spec.HolderIdentity = ptr.To(holder)
		}
		return lease
	}
	for _, step := range []struct {
		rv, holder string
		renewed    bool
	}{
		{"10", "b", false}, // first sighting
		{"12", "b", true},  // renewed
		{"14", "", false},  // fenced
		{"16", "b", false}, // taken again: a first version under b
		{"18", "b", true},
	} {
		l.onLease(version(step.rv, step.holder))
		if got := l.s.members[name].renewed; got != step.renewed {
			t.Errorf("after rv %s (holder %q): renewed = %v, want %v", step.rv, step.holder, got, step.renewed)
		}
	}
}
