package shard

import (
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/resourceversion"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// Liveness in the member's view of the group (part of state, decide.go):
// when another member's claim, or a shard's owner, counts as gone, by
// this member's clock, and which epochs may still be running.

// othersMayRun reports whether, as far as this member can tell, another
// member may be running shards: a member Lease of another member is held,
// or was seen absent for less than its duration.
func (s *state) othersMayRun(now time.Time) bool {
	own := s.leaseName(s.self)
	for name, mv := range s.members {
		switch {
		case name == own:
		case mv.absent:
			if now.Before(mv.observedAt.Add(leaserecord.ClaimDuration(mv.lease, s.leaseDuration))) {
				return true
			}
		case leaserecord.Holder(mv.lease) != "":
			return true
		}
	}
	return false
}

// held reports whether shard i may not start here, nor be handed on by
// this member, yet: the quarantine after a deletion lasts, and i is not a
// former shard of this term whose work has returned.
func (s *state) held(i int, now time.Time) bool {
	if !now.Before(s.quarantine) {
		return false
	}
	return !s.former[i] || s.running[i] || s.formerEpoch != s.term.epoch
}

// ownerGone decides whether a shard owned by member o, whose claims carry
// epoch, may be claimed from it now: ok if so; fence names o's member
// Lease if it must be fenced first (its claim ran out but it may still be
// renewed); at is when o's claim runs out, if later.
//
// The rules (the package documentation has the argument):
//   - o's Lease absent since rv (deleted, or unlabelled by o's release):
//     ok once the local clock has seen it absent for o's lease duration,
//     if epoch <= rv;
//   - o's Lease held by nobody (fenced by a member that waited out o's
//     claim): ok at once, if epoch <= rv;
//   - o's Lease held: fence it once the local clock has seen no change
//     for its leaseDurationSeconds, if epoch <= rv;
//   - epoch > rv: this view of o's Lease is older than o's claim; wait
//     for the watch to bring the newer one.
func (s *state) ownerGone(o, epoch string, now time.Time) (ok bool, fence string, at time.Time) {
	name := s.leaseName(o)
	mv := s.members[name]
	if mv == nil {
		if !s.synced {
			return false, "", time.Time{}
		}
		// Not in the last list: absent as of its resourceVersion.
		mv = &memberView{absent: true, rv: s.syncRV, observedAt: s.syncAt}
	}
	if !epochNotAfter(epoch, mv.rv) {
		return false, "", time.Time{}
	}
	if !mv.absent && leaserecord.Holder(mv.lease) == "" {
		return true, "", time.Time{}
	}
	expiry := mv.observedAt.Add(leaserecord.ClaimDuration(mv.lease, s.leaseDuration))
	if now.Before(expiry) {
		return false, "", expiry
	}
	if mv.absent {
		return true, "", time.Time{}
	}
	return false, name, time.Time{}
}

// live lists, sorted, the members to spread shards over: this member if
// its term is live, and every member whose Lease is held by the identity
// it is named after and has changed within its lease duration by the
// local clock. Only the balance depends on this; no ownership decision
// does.
//
// One hint, against Leases left by members long gone that a new member
// has only just seen: such a Lease is left out when its renewTime, by the
// renewer's clock, is more than twice its duration old. The hint reads
// another member's clock, and absolute offsets must not matter: with a
// clock far ahead, this member would keep a live member out while the
// others keep it in, and the two views would undo each other's targets
// without end. So it applies only to a Lease this member has never seen
// renewed and that the newest assignment does not name; a member that
// owns or is targeted for a shard is judged by its changes alone (its
// shards need its Lease expired by the local clock before a takeover
// anyway).
func (s *state) live(now time.Time) []string {
	var out []string
	if s.term.live && !s.term.leaving && s.selfSeen() {
		out = append(out, s.self)
	}
	var named []string
	if s.asg != nil {
		named = s.asg.referenced()
	}
	for name, mv := range s.members {
		h := leaserecord.Holder(mv.lease)
		if mv.absent || h == "" || h == s.self || s.leaseName(h) != name {
			continue
		}
		dur := leaserecord.ClaimDuration(mv.lease, s.leaseDuration)
		if !now.Before(mv.observedAt.Add(dur)) {
			continue
		}
		if rt := mv.lease.Spec.RenewTime; rt != nil && now.Sub(rt.Time) > 2*dur &&
			!mv.renewed && !slices.Contains(named, h) {
			continue
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// leaseGone reports whether member id's Lease, as last seen, is absent
// (deleted or released), no longer held by id (fenced), or never seen.
func (s *state) leaseGone(id string) bool {
	mv := s.members[s.leaseName(id)]
	return mv == nil || mv.absent || leaserecord.Holder(mv.lease) != id
}

// selfSeen reports whether the others can see this member live: its own
// member Lease, as the group watch last showed it, is present and names
// it holder (or has not been seen yet: a term that just began). A member
// whose Lease was deleted by hand, or fenced, keeps a live term until its
// next renewal fails; meanwhile the others see it gone and move its
// targets away, and it must not write its share back, or the two views
// undo each other's writes without end.
func (s *state) selfSeen() bool {
	mv := s.members[s.leaseName(s.self)]
	return mv == nil || (!mv.absent && leaserecord.Holder(mv.lease) == s.self)
}

// liveExpiry is the earliest instant a live member's claim runs out: the
// live set, and so the targets, may change then.
func (s *state) liveExpiry(now time.Time) time.Time {
	var at time.Time
	for name, mv := range s.members {
		h := leaserecord.Holder(mv.lease)
		if mv.absent || h == "" || h == s.self || s.leaseName(h) != name {
			continue
		}
		e := mv.observedAt.Add(leaserecord.ClaimDuration(mv.lease, s.leaseDuration))
		if e.After(now) && (at.IsZero() || e.Before(at)) {
			at = e
		}
	}
	return at
}

// epochNotAfter reports whether a claim's epoch is no later than
// resourceVersion rv of the same member Lease. An empty epoch (a claim
// without one) counts as the earliest. Versions that cannot be compared
// count as later: the claim is then never taken without an
// acknowledgement.
func epochNotAfter(epoch, rv string) bool {
	if epoch == "" {
		return true
	}
	if rv == "" {
		return false
	}
	c, err := resourceversion.CompareResourceVersion(epoch, rv)
	return err == nil && c <= 0
}
