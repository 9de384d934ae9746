package shard

import "time"

// Metrics receives a member's measurements (Config.Metrics). The shard
// package imports no metrics library: metrics/prometheus implements this
// interface for Prometheus. Every method must be cheap and must not block.
// group is Config.Namespace + "/" + Config.Group.
//
// Each member reports what it sees from where it stands: the shards whose
// work runs here, the shards that moved here, the members it sees. Added
// up over the group's members they describe the group: the owned shards
// sum to Shards once every shard runs, and each move is counted once, by
// the member the shard moved to.
type Metrics interface {
	// ShardGroup is called once, by New, with the group's number of
	// shards (Config.Shards): an implementation creates the group's
	// series then, at zero, before the first event.
	ShardGroup(group string, shards int)

	// ShardOwned reports that the work of shard started here (true), or
	// was cancelled or returned (false). The shards this member owns,
	// as Member.Owned lists them, are those started and not stopped
	// since. Each call changes the state: true and false alternate per
	// shard.
	ShardOwned(group string, shard int, owned bool)

	// ShardMoved counts a shard that moved to this member from another
	// one, or from none in a group's first assignment, when its work
	// starts here. cause says why, as far as this member can tell (see
	// MoveCause). handover is the time from this member seeing the shard
	// targeted at it, still owned by another member or by nobody, to its
	// work starting here: for a leave, a join or a rebalance that is
	// the previous owner's work returning plus two writes; after a crash
	// it starts once this member's clock saw the previous owner's Lease
	// expire, so it holds the fence and the claim, not the LeaseDuration
	// waited before. A shard that stops and starts again on the same
	// member (its work returned early, or the membership lapsed and came
	// back before anyone else ran it) did not move.
	ShardMoved(group string, shard int, cause MoveCause, handover time.Duration)

	// ShardMembers reports how many members this member sees in the
	// group: those whose member Lease is held and renewed, by its clock,
	// itself included while its membership term is live. It is reported
	// when the number changes.
	ShardMembers(group string, members int)
}

// MoveCause is why a shard moved, as the member it moved to can tell.
type MoveCause string

// The causes of a move reported to Metrics.ShardMoved.
const (
	// MoveJoin: this member joined the group (it owned and was targeted
	// nothing before) and the shard is part of its share; also every
	// shard of a group's first assignment.
	MoveJoin MoveCause = "join"
	// MoveLeave: the previous owner was leaving the group (Run's context
	// cancelled with ReleaseOnCancel) and handed the shard over.
	MoveLeave MoveCause = "leave"
	// MoveCrash: the previous owner did not hand the shard over; this
	// member took it once the owner's member Lease had expired, or had
	// been deleted, by its clock: the owner crashed, or lost the API
	// server.
	MoveCrash MoveCause = "crash"
	// MoveRebalance: any other move, handed over by a live owner that was
	// not leaving, to a member that already had shards: the targets
	// were spread again, after another member joined, left or crashed.
	MoveRebalance MoveCause = "rebalance"
)

// MoveCauses lists every MoveCause, for implementations that create their
// series up front.
func MoveCauses() []MoveCause { return []MoveCause{MoveJoin, MoveLeave, MoveCrash, MoveRebalance} }

// memberMetrics turns a member's state changes into Metrics calls. A nil
// *memberMetrics (no Config.Metrics) does nothing. owned is called under
// Member.mu; the others only from Run's loop goroutine.
type memberMetrics struct {
	m           Metrics
	group, self string

	members int // last reported, -1 before the first report

	// Per shard: the last owner seen other than now ("" none), and
	// whether it was leaving when it let the shard go; joined: targeted
	// here when this member joined; since: when this member first saw
	// the shard targeted at it while another member, or nobody, owned
	// it (zero: not pending); cause: the move's cause, set by this
	// member's claim and reported when the work starts.
	lastOwner []string
	leaver    []bool
	joined    []bool
	since     []time.Time
	cause     []MoveCause
}

func newMemberMetrics(cfg Config) *memberMetrics {
	if cfg.Metrics == nil {
		return nil
	}
	mm := &memberMetrics{
		m: cfg.Metrics, group: cfg.Namespace + "/" + cfg.Group, self: cfg.Identity, members: -1,
		lastOwner: make([]string, cfg.Shards), leaver: make([]bool, cfg.Shards), joined: make([]bool, cfg.Shards),
		since: make([]time.Time, cfg.Shards), cause: make([]MoveCause, cfg.Shards),
	}
	mm.m.ShardGroup(mm.group, cfg.Shards)
	return mm
}

// owned reports a change of Member.owned.
func (mm *memberMetrics) owned(shard int, on bool) {
	if mm != nil {
		mm.m.ShardOwned(mm.group, shard, on)
	}
}

// membersSeen reports the number of live members, when it changed.
func (mm *memberMetrics) membersSeen(s *state, now time.Time) {
	if mm == nil {
		return
	}
	if n := len(s.live(now)); n != mm.members {
		mm.members = n
		mm.m.ShardMembers(mm.group, n)
	}
}

// assignment folds in a newer assignment next, seen at now, before it
// replaces s.asg: it records who let each shard go, and classifies the
// claims this member made in it. An assignment seen first (s.asg nil,
// and not known to be missing, as after Run starts) records without
// classifying: what changed before it is unknown.
func (mm *memberMetrics) assignment(s *state, next *assignment, now time.Time) {
	if mm == nil || next.shards != len(mm.cause) {
		return
	}
	prev := s.asg
	if prev == nil && s.asgMissing {
		prev = newAssignment(next.shards) // the group's first assignment, or one made again
	}
	known := prev != nil
	joining := known && !prev.names(mm.self)
	for i := 0; i < next.shards; i++ {
		o1, t1 := next.owner[i], next.target[i]
		o0 := ""
		if known {
			o0 = prev.owner[i]
		}
		if o0 != "" && o0 != o1 {
			mm.lastOwner[i], mm.leaver[i] = o0, prev.leaving[o0] || next.leaving[o0]
		}
		switch {
		case o1 == mm.self && o0 != mm.self && known:
			mm.joined[i] = mm.joined[i] || joining
			mm.cause[i] = mm.classify(i, o0)
			if mm.since[i].IsZero() {
				mm.since[i] = now
			}
		case o1 == mm.self:
		case o0 == mm.self:
			// Let go: whatever was pending here is over.
			mm.cause[i], mm.since[i], mm.joined[i] = "", time.Time{}, false
		case t1 == mm.self:
			if mm.since[i].IsZero() {
				mm.since[i] = now
				mm.joined[i] = joining
			}
		default:
			mm.since[i], mm.joined[i] = time.Time{}, false
		}
	}
}

// classify names the cause of this member's claim of shard i, owned by o0
// ("" none) in the assignment before; "" if it is no move.
func (mm *memberMetrics) classify(i int, o0 string) MoveCause {
	switch prev := mm.lastOwner[i]; {
	case o0 != "":
		return MoveCrash // claimed from an owner that did not let go
	case prev == mm.self:
		return "" // back before anyone else owned it
	case mm.leaver[i]:
		return MoveLeave
	case prev == "" || mm.joined[i]:
		return MoveJoin
	default:
		return MoveRebalance
	}
}

// started reports the move of shard i, if its claim made one, when its
// work starts here at now.
func (mm *memberMetrics) started(i int, now time.Time) {
	if mm == nil {
		return
	}
	if c := mm.cause[i]; c != "" {
		mm.m.ShardMoved(mm.group, i, c, max(now.Sub(mm.since[i]), 0))
	}
	mm.cause[i], mm.since[i], mm.joined[i] = "", time.Time{}, false
	mm.lastOwner[i], mm.leaver[i] = mm.self, false
}

// names reports whether some shard names id as its owner or target.
func (a *assignment) names(id string) bool {
	for i := 0; i < a.shards; i++ {
		if a.owner[i] == id || a.target[i] == id {
			return true
		}
	}
	return false
}
