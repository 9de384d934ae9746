package shard

import (
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// This file holds the member's decisions as pure functions of what it has
// seen and its own clock: which shards to stop and start, and which single
// write to make next. No I/O, so the tests call them directly.

// memberView is what this member knows of one member Lease.
type memberView struct {
	// lease is the newest version seen; when absent, the last one seen
	// before (for its leaseDurationSeconds), or nil.
	lease *coordinationv1.Lease
	// absent: the Lease is deleted, or no longer carries the group's
	// label (a member removes it when it releases its Lease), as of
	// resourceVersion rv.
	absent bool
	// rv is lease's resourceVersion, or the one at which it was seen
	// absent (the deletion's, or a list's).
	rv string
	// observedAt is when, on the local clock, this member first saw rv.
	observedAt time.Time
	// renewed: lease came after an earlier version under the same
	// holder, so its holder is renewing it now, whatever its renewTime
	// reads on this member's clock.
	renewed bool
}

// term is this member's current membership term, as the state sees it.
type term struct {
	// running: a term's work function is running (its member Lease was
	// won); from its start until every shard of it returned.
	running bool
	// live: running and its context is not cancelled.
	live bool
	// leaving: the term ended because Run's context was cancelled with
	// ReleaseOnCancel: hand everything over.
	leaving bool
	// epoch is the resourceVersion of this member's Lease read at the
	// start of the term ("" until read). It marks this term's claims.
	epoch string
}

// state is everything a member decides from.
type state struct {
	self, group   string
	shards        int
	leaseDuration time.Duration // this member's, the fallback claim duration

	// asg is the newest assignment seen, nil if none. asgMissing is set
	// when the first list found no assignment Lease: this member may
	// create it.
	asg        *assignment
	asgMissing bool

	// When this member learns that the assignment Lease is gone (deleted,
	// or replaced by another), the record of who owns what is gone with
	// it. Its owners stop their shards as they learn of it; their work
	// has had LeaseDuration to return once that long has passed since
	// this member learned of it: createAfter. Before then it creates no
	// assignment and, if it knew the deleted one (quarantine, the same
	// instant), starts no shard and hands on none it owns, unless no
	// other member could run one (no other member Lease held, or absent
	// for less than its duration). Former shards are exempt: those it
	// owned in the deleted assignment under its current term's epoch
	// (formerEpoch), once their work has returned here: nobody else can
	// run them, so it may create the assignment at once to restart them,
	// owning every shard it may not start yet. last is the deleted
	// assignment, whose targets a new one keeps.
	createAfter time.Time
	quarantine  time.Time
	former      map[int]bool
	formerEpoch string
	last        *assignment

	members map[string]*memberView // by Lease name
	synced  bool                   // the first list arrived
	syncRV  string                 // resourceVersion of the last list
	syncAt  time.Time              // when it arrived

	term term

	running   map[int]bool      // shards whose work has not returned
	cancelled map[int]bool      // of those, the ones already cancelled
	holdOff   map[int]time.Time // a shard whose work ended early restarts after this

	// collected maps member Lease names to the version this member
	// already deleted (or tried to); noCollect is set when RBAC forbids
	// deleting.
	collected map[string]string
	noCollect bool

	names map[string]string // identity -> member Lease name, memoized
}

// leaseName is MemberLeaseName in this group, memoized: decisions look it
// up per shard.
func (s *state) leaseName(id string) string {
	if n, ok := s.names[id]; ok {
		return n
	}
	if s.names == nil {
		s.names = map[string]string{}
	}
	n := MemberLeaseName(s.group, id)
	s.names[id] = n
	return n
}

// claimEpoch is the epoch the assignment records for the member whose
// Lease is name, "" if none.
func (s *state) claimEpoch(name string) string {
	if s.asg == nil {
		return ""
	}
	for id, e := range s.asg.epoch {
		if s.leaseName(id) == name {
			return e
		}
	}
	return ""
}

// decision is what to do next.
type decision struct {
	stop  []int // cancel these shards' work
	start []int // start these shards' work
	// next is the assignment to write (create if create), nil for none.
	next   *assignment
	create bool
	// fence is the member Lease to fence before a claim, "" for none.
	fence string
	// collect is a dead member's Lease to delete, "" for none.
	collect string
	// wake is the earliest instant at which the decision may change
	// without any event; zero for never.
	wake time.Time
}

// allowed reports whether this member may run shard i now: its term is
// live and not leaving, and the newest assignment seen names it as owner
// and target, under this term's epoch (so the claim was made in this
// term, by a write that succeeded).
func (s *state) allowed(i int) bool {
	t := s.term
	return t.live && !t.leaving && t.epoch != "" && s.asg != nil &&
		s.asg.owner[i] == s.self && s.asg.target[i] == s.self && s.asg.epoch[s.self] == t.epoch
}

// decide computes the next decision at now.
func (s *state) decide(now time.Time) decision {
	var d decision
	wake := func(t time.Time) {
		if !t.IsZero() && t.After(now) && (d.wake.IsZero() || t.Before(d.wake)) {
			d.wake = t
		}
	}
	for i := 0; i < s.shards; i++ {
		ok := s.allowed(i)
		switch {
		case s.running[i] && !ok && !s.cancelled[i]:
			d.stop = append(d.stop, i)
		case !s.running[i] && ok:
			switch h := s.holdOff[i]; {
			case h.After(now):
				wake(h)
			case s.held(i, now):
				wake(s.quarantine)
			default:
				d.start = append(d.start, i)
			}
		}
	}
	if !s.mayWrite() {
		return d
	}
	if s.asg == nil {
		if s.asgMissing && !s.term.leaving && s.term.live {
			if s.mayCreate(now) {
				d.next, d.create = s.initial(now), true
			} else {
				wake(s.createAfter)
			}
		}
		return d
	}
	next, fence, at := s.desired(now)
	wake(at)
	wake(s.liveExpiry(now))
	if fence != "" {
		d.fence = fence
	}
	if !next.equal(s.asg) {
		d.next = next
	}
	if live := s.live(now); len(live) > 0 && live[0] == s.self && !s.term.leaving {
		d.collect = s.garbage(now)
	}
	return d
}

// garbage names a member Lease the proposer may delete, "" if none: one
// that no shard, epoch or leaving mark of the assignment refers to, that
// is fenced (no holder) or expired by the local clock, and unchanged for
// its lease duration. Members that crashed leave such Leases; deleting
// them keeps the group's watch small. A member that was only partitioned
// away and comes back creates its Lease again.
func (s *state) garbage(now time.Time) string {
	if s.noCollect || s.asg == nil {
		return ""
	}
	keep := map[string]bool{s.leaseName(s.self): true}
	for _, id := range s.asg.referenced() {
		keep[s.leaseName(id)] = true
	}
	for id := range s.asg.epoch {
		keep[s.leaseName(id)] = true
	}
	for id := range s.asg.leaving {
		keep[s.leaseName(id)] = true
	}
	var names []string
	for name, mv := range s.members {
		if keep[name] || mv.absent || mv.lease == nil || s.collected[name] == mv.rv {
			continue
		}
		if now.Before(mv.observedAt.Add(leaserecord.ClaimDuration(mv.lease, s.leaseDuration))) {
			continue
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return ""
	}
	slices.Sort(names)
	return names[0]
}

// mayWrite: claims need a live term with a known epoch; a leaving term
// may still move its targets away and acknowledge.
func (s *state) mayWrite() bool {
	t := s.term
	return t.running && (t.leaving || (t.live && t.epoch != ""))
}

// initial is the assignment a member creates when the group has none:
// targets over the live members (from those of the deleted assignment,
// if any: stable), and this member's own targets claimed; while other
// members' work may still run (quarantine), every shard it may not start
// yet is claimed too, so that nobody starts it before this member hands it
// on after the quarantine.
func (s *state) initial(now time.Time) *assignment {
	a := newAssignment(s.shards)
	if s.last != nil {
		copy(a.target, s.last.target)
	}
	a.target = balance(a.target, s.live(now))
	for i, t := range a.target {
		if t == s.self || s.held(i, now) {
			a.owner[i] = s.self
		}
	}
	a.epoch[s.self] = s.term.epoch
	return a
}

// assignmentGone records that the assignment Lease is gone as of now:
// the one this member knew was deleted or replaced, or (none known) the
// first list found none. See createAfter.
func (s *state) assignmentGone(now time.Time) {
	knew := s.asg != nil
	if knew {
		s.last = s.asg
		s.former, s.formerEpoch = map[int]bool{}, s.term.epoch
		if s.term.live && s.term.epoch != "" && s.asg.epoch[s.self] == s.term.epoch {
			for i, o := range s.asg.owner {
				if o == s.self {
					s.former[i] = true
				}
			}
		}
	}
	s.asg, s.asgMissing = nil, true
	if !s.othersMayRun(now) {
		return
	}
	s.createAfter = now.Add(s.leaseDuration)
	if knew {
		s.quarantine = s.createAfter
	}
}

// mayCreate: the assignment may be created once createAfter has passed,
// or at once by a former owner whose former shards' work has returned.
func (s *state) mayCreate(now time.Time) bool {
	if !now.Before(s.createAfter) {
		return true
	}
	for i := range s.former {
		if !s.held(i, now) {
			return true
		}
	}
	return false
}

// desired returns the assignment this member wants to write (equal to the
// current one if none), a member Lease to fence first ("" if none), and
// when to decide again if an owner's claim runs out.
func (s *state) desired(now time.Time) (next *assignment, fence string, wake time.Time) {
	self, t := s.self, s.term
	next = s.asg.clone()

	// Targets. The proposer (smallest live identity) balances all of
	// them; a leaving member moves its own away, and is marked leaving
	// so that nobody targets it again before its Lease is released; a
	// member with none takes its share.
	present := s.live(now)
	switch {
	case t.leaving && s.selfSeen():
		next.leaving[self] = true
	case t.leaving:
		// Its Lease is gone or fenced: nobody targets it any more, and
		// the proposer forgets the mark; writing it back would undo
		// the proposer's write without end.
	default:
		delete(next.leaving, self) // a new term: back in the group
	}
	live := slices.DeleteFunc(slices.Clone(present), func(id string) bool { return next.leaving[id] })
	if len(live) > 0 && live[0] == self {
		// The proposer forgets leavers once they are gone: their Lease
		// deleted, released or fenced. A leaver whose Lease is still
		// held keeps its mark even when it renews no more (its term
		// lost while a work hangs): it writes the mark back while it
		// sees its Lease held.
		for id := range next.leaving {
			if !slices.Contains(present, id) && s.leaseGone(id) {
				delete(next.leaving, id)
			}
		}
	}
	want := balance(next.target, live)
	switch {
	case t.leaving:
		for i := range want {
			if next.target[i] == self {
				next.target[i] = want[i]
			}
		}
	case len(live) > 0 && live[0] == self:
		next.target = want
	case !slices.Contains(next.target, self):
		for i := range want {
			if want[i] == self {
				next.target[i] = self
			}
		}
	}

	// Owners.
	mine := t.epoch != "" && next.epoch[self] == t.epoch
	claimed := false
	for i := 0; i < s.shards; i++ {
		o, target := next.owner[i], next.target[i]
		switch {
		case o == self && !mine:
			// Recorded in an earlier term, whose work has all returned
			// (a term starts only after the previous one ended):
			// keep it, re-claimed by this term's epoch, or let it go
			// (not while it is held after a deletion).
			switch {
			case target == self && !t.leaving:
				claimed = true
			case s.held(i, now):
				wake = earliest(wake, s.quarantine)
			default:
				next.owner[i] = ""
			}
		case o == self:
			// Acknowledge a shard moved away once its work returned
			// (and, after a deletion, once it is no longer held). A
			// shard the newest assignment allows here is not running
			// yet only because this very decision starts it: its
			// owner stays until that work has returned.
			switch {
			case (target == self && !t.leaving) || s.running[i] || s.allowed(i):
			case s.held(i, now):
				wake = earliest(wake, s.quarantine)
			default:
				next.owner[i] = ""
			}
		case t.leaving || target != self:
		case o == "":
			next.owner[i] = self
			claimed = true
		default:
			switch ok, f, at := s.ownerGone(o, next.epoch[o], now); {
			case ok:
				next.owner[i] = self
				claimed = true
			case f != "" && fence == "":
				fence = f
			default:
				wake = earliest(wake, at)
			}
		}
	}
	if claimed {
		next.epoch[self] = t.epoch
	}
	return next, fence, wake
}
