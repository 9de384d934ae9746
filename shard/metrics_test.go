package shard

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// metricsRecorder is a Metrics that records what it is told.
type metricsRecorder struct {
	mu       sync.Mutex
	group    string
	shards   int
	owned    map[int]bool
	flips    int // ShardOwned calls
	moves    map[MoveCause]int
	handover map[int]time.Duration // by shard, the last move's
	members  []int                 // every report
	bad      []string              // calls that broke the contract
}

func newMetricsRecorder() *metricsRecorder {
	return &metricsRecorder{owned: map[int]bool{}, moves: map[MoveCause]int{}, handover: map[int]time.Duration{}}
}

func (r *metricsRecorder) ShardGroup(group string, shards int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.group != "" {
		r.bad = append(r.bad, "ShardGroup called twice")
	}
	r.group, r.shards = group, shards
}

func (r *metricsRecorder) ShardOwned(group string, shard int, owned bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owned[shard] == owned {
		r.bad = append(r.bad, fmt.Sprintf("ShardOwned(%d, %v) twice in a row", shard, owned))
	}
	r.flips++
	if owned {
		r.owned[shard] = true
	} else {
		delete(r.owned, shard)
	}
}

func (r *metricsRecorder) ShardMoved(group string, shard int, cause MoveCause, handover time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.owned[shard] {
		r.bad = append(r.bad, fmt.Sprintf("move of shard %d reported before it is owned", shard))
	}
	r.moves[cause]++
	r.handover[shard] = handover
}

func (r *metricsRecorder) ShardMembers(group string, members int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = append(r.members, members)
}

func (r *metricsRecorder) ownedShards() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.owned))
}

func (r *metricsRecorder) movesBy() map[MoveCause]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.moves)
}

func (r *metricsRecorder) lastMembers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.members) == 0 {
		return -1
	}
	return r.members[len(r.members)-1]
}

func (r *metricsRecorder) check(t *testing.T, who string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		t.Errorf("%s: %v", who, r.bad)
	}
}

func withMetrics(r *metricsRecorder) func(*Config) { return func(c *Config) { c.Metrics = r } }

// A member's metrics follow the group through a first member, two joins,
// a graceful leave and a crash: the owned shards are Owned() at every
// step; each move is counted once, by the member it moved to, with its
// cause; a handover waits for the previous owner's work; the members
// seen follow the live members.
func TestMetricsFollowJoinsLeavesAndCrashes(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		ra, rb, rc := newMetricsRecorder(), newMetricsRecorder(), newMetricsRecorder()
		a := h.member("a", k(12), withMetrics(ra))
		b := h.member("b", k(12), withMetrics(rb))
		c := h.member("c", k(12), withMetrics(rc))
		if ra.group != testNS+"/"+testGroup || ra.shards != 12 {
			t.Fatalf("ShardGroup(%q, %d) from New, want (%q, 12)", ra.group, ra.shards, testNS+"/"+testGroup)
		}
		type view struct {
			m *tmember
			r *metricsRecorder
		}
		ownedMatches := func(vs ...view) {
			t.Helper()
			for _, v := range vs {
				if got, want := v.r.ownedShards(), v.m.owned(); !slices.Equal(got, want) {
					t.Errorf("%s: metrics say it owns %v, Owned() says %v", v.m.id, got, want)
				}
			}
		}
		wantMoves := func(v view, want map[MoveCause]int) {
			t.Helper()
			if got := v.r.movesBy(); !maps.Equal(got, want) {
				t.Errorf("%s: moves %v, want %v", v.m.id, got, want)
			}
		}
		wantMembers := func(n int, vs ...view) {
			t.Helper()
			for _, v := range vs {
				if got := v.r.lastMembers(); got != n {
					t.Errorf("%s sees %d members, want %d", v.m.id, got, n)
				}
			}
		}
		va, vb, vc := view{a, ra}, view{b, rb}, view{c, rc}

		a.start()
		h.until(2*time.Second, "a runs all 12 shards", func() bool { return len(a.owned()) == 12 })
		ownedMatches(va)
		wantMoves(va, map[MoveCause]int{MoveJoin: 12})
		wantMembers(1, va)

		b.start()
		h.until(2*time.Second, "balanced over a, b", func() bool { return balanced(12, a, b) })
		c.start()
		h.until(2*time.Second, "balanced over a, b, c", func() bool { return balanced(12, a, b, c) })
		ownedMatches(va, vb, vc)
		wantMoves(va, map[MoveCause]int{MoveJoin: 12})
		wantMoves(vb, map[MoveCause]int{MoveJoin: 6})
		wantMoves(vc, map[MoveCause]int{MoveJoin: 4})
		wantMembers(3, va, vb, vc)

		// c leaves; the work of one of its shards takes 3s to return.
		slow := c.owned()[0]
		release := c.holdShard(slow)
		c.cancel()
		h.advance(3 * time.Second)
		release()
		if err := c.wait(); err != nil {
			t.Fatalf("c.Run = %v", err)
		}
		h.until(time.Second, "balanced over a, b", func() bool { return balanced(12, a, b) })
		ownedMatches(va, vb, vc)
		if got := len(rc.ownedShards()); got != 0 {
			t.Errorf("c owns %d shards by its metrics after leaving", got)
		}
		la, lb := ra.movesBy()[MoveLeave], rb.movesBy()[MoveLeave]
		if la+lb != 4 || !maps.Equal(ra.movesBy(), map[MoveCause]int{MoveJoin: 12, MoveLeave: la}) || !maps.Equal(rb.movesBy(), map[MoveCause]int{MoveJoin: 6, MoveLeave: lb}) {
			t.Errorf("after c left: a's moves %v, b's %v; want c's 4 shards counted as leave, once", ra.movesBy(), rb.movesBy())
		}
		for _, r := range []*metricsRecorder{ra, rb} {
			if d, ok := r.handover[slow]; ok && d < 3*time.Second {
				t.Errorf("handover of shard %d, whose work took 3s to return, is %v", slow, d)
			}
		}
		wantMembers(2, va, vb)

		// b crashes: a takes its 6 shards once b's Lease expired.
		cutOff(h, "b")
		h.until(30*time.Second, "a runs all 12 shards again", func() bool { return len(a.owned()) == 12 })
		ownedMatches(va, vb)
		if got := ra.movesBy()[MoveCrash]; got != 6 {
			t.Errorf("a counted %d crash moves, want b's 6 (moves %v)", got, ra.movesBy())
		}
		wantMembers(1, va)
		for _, r := range []*metricsRecorder{ra, rb, rc} {
			r.check(t, r.group)
		}
		h.works.check(t)
	})
}

// The classification of moves on assignments built by hand: a rebalance
// (handed over by a live owner that was not leaving, to a member that had
// shards), a shard that comes back before anyone else owned it (no move),
// a leave, a crash, and the handover measured from the target.
func TestMoveCauses(t *testing.T) {
	rec := newMetricsRecorder()
	mm := newMemberMetrics(Config{Namespace: "ns", Group: "g", Identity: "a", Shards: 4, Metrics: rec})
	s := &state{self: "a"}
	t0 := time.Unix(1000, 0)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	// see applies an assignment given as owner/target strings, one letter
	// per shard ('.' for none), and the leaving members.
	see := func(sec int, owner, target string, leaving ...string) {
		a := newAssignment(4)
		for i := range 4 {
			if owner[i] != '.' {
				a.owner[i] = owner[i : i+1]
			}
			if target[i] != '.' {
				a.target[i] = target[i : i+1]
			}
		}
		for _, id := range leaving {
			a.leaving[id] = true
		}
		mm.assignment(s, a, at(sec))
		s.asg = a
	}
	start := func(sec, shard int) {
		rec.ShardOwned("ns/g", shard, true)
		mm.started(shard, at(sec))
	}

	see(0, "abbc", "abbc") // first sighting: nothing is classified
	start(0, 0)
	see(1, "abbc", "aabc") // shard 1 targeted here: pending from 1s
	see(3, "a.bc", "aabc") // b acknowledged
	see(3, "aabc", "aabc") // a claims it
	start(4, 1)
	if got := rec.movesBy(); !maps.Equal(got, map[MoveCause]int{MoveRebalance: 1}) || rec.handover[1] != 3*time.Second {
		t.Fatalf("moves %v, handover %v; want one rebalance of 3s", got, rec.handover[1])
	}

	see(5, ".abc", "babc") // a let shard 0 go ...
	see(6, "aabc", "aabc") // ... and has it back: no move
	start(6, 0)
	if got := rec.movesBy(); !maps.Equal(got, map[MoveCause]int{MoveRebalance: 1}) {
		t.Fatalf("moves %v after shard 0 came back before anyone else owned it", got)
	}

	see(7, "aabc", "aaba", "c") // c leaves
	see(8, "aab.", "aaba", "c")
	see(8, "aaba", "aaba", "c")
	start(9, 3)
	see(10, "aaaa", "aaaa") // b crashed: a claims shard 2 from it
	start(10, 2)
	want := map[MoveCause]int{MoveRebalance: 1, MoveLeave: 1, MoveCrash: 1}
	if got := rec.movesBy(); !maps.Equal(got, want) {
		t.Fatalf("moves %v, want %v", got, want)
	}
	if rec.handover[3] != 2*time.Second || rec.handover[2] != 0 {
		t.Errorf("handovers %v: want 2s for the leave (targeted at 7s, started at 9s), 0 for the crash (claimed and started at 10s)", rec.handover)
	}

	// A member that had nothing joins a group: its shards are joins.
	rd := newMetricsRecorder()
	md := newMemberMetrics(Config{Namespace: "ns", Group: "g", Identity: "d", Shards: 4, Metrics: rd})
	sd := &state{self: "d", asg: s.asg}
	next := s.asg.clone()
	next.target[0], next.target[1] = "d", "d"
	md.assignment(sd, next, at(20))
	sd.asg = next
	next = next.clone()
	next.owner[0] = ""
	md.assignment(sd, next, at(21))
	sd.asg = next
	next = next.clone()
	next.owner[0] = "d"
	md.assignment(sd, next, at(21))
	sd.asg = next
	rd.ShardOwned("ns/g", 0, true)
	md.started(0, at(22))
	if got := rd.movesBy(); !maps.Equal(got, map[MoveCause]int{MoveJoin: 1}) || rd.handover[0] != 2*time.Second {
		t.Errorf("joiner's moves %v, handover %v; want one join of 2s", got, rd.handover[0])
	}
}

// Without Config.Metrics nothing is recorded, and nothing fails.
func TestNoMetrics(t *testing.T) {
	var mm *memberMetrics = newMemberMetrics(Config{Shards: 2})
	if mm != nil {
		t.Fatal("memberMetrics without Config.Metrics")
	}
	mm.owned(0, true)
	mm.started(0, time.Now())
	mm.membersSeen(&state{}, time.Now())
	mm.assignment(&state{}, newAssignment(2), time.Now())
}
