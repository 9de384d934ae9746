package sim

import (
	"math/rand/v2"
	"time"

	"github.com/leasehold/leasehold"
)

// WorldShard is Plan.World for a shard group's world (NewShardPlan).
const WorldShard = "shard"

// The operations only a shard world draws.
const (
	// KindDeleteAssignment deletes the group's assignment Lease by hand.
	// It is skipped (and logged) while some member's watch is not
	// healthy: the contract (shard/doc.go, "When the assignment Lease is
	// deleted") holds only for members that learn of it promptly.
	KindDeleteAssignment Kind = "delete-assignment"
	// KindDeleteMember deletes a member's Lease by hand.
	KindDeleteMember Kind = "delete-member"
)

// ShardKinds lists the kinds a shard plan draws, in report order.
var ShardKinds = []Kind{KindCancel, KindCrash, KindDeleteAssignment, KindDeleteMember,
	KindRefuse, KindLatency, KindStall, KindCloseWatches, KindExpireWatches, KindCompact,
	KindWatchOutage, KindWatchLag, KindPartition, KindHangWork, KindLoseAnswer, KindWatchDrop}

// shardWeights are each kind's relative frequency in a shard plan.
var shardWeights = map[Kind]int{
	KindCancel: 8, KindCrash: 8, KindDeleteAssignment: 4, KindDeleteMember: 4,
	KindRefuse: 8, KindLatency: 4, KindStall: 3, KindCloseWatches: 3, KindExpireWatches: 2,
	KindCompact: 2, KindWatchOutage: 3, KindWatchLag: 4, KindPartition: 4, KindHangWork: 4,
	KindLoseAnswer: 4, KindWatchDrop: 2,
}

// shardCounts are the numbers of shards a plan draws K from.
var shardCounts = []int{1, 4, 8, 16}

// shardStepDown is how long a member's election waits for its term's
// work (every shard's work) to return after a step-down: shard.Config
// has no StepDownTimeout, so the election's default.
const shardStepDown = leasehold.DefaultStepDownTimeout

// NewShardPlan draws the plan of a seed for a shard group of m members
// and a world of the given virtual duration: K from {1, 4, 8, 16}, the
// timings, ReleaseOnCancel per member, and the schedule. The same
// arguments always give the same plan.
func NewShardPlan(seed uint64, m int, duration time.Duration) Plan {
	rng := rand.New(rand.NewPCG(seed, 0x54a2d5))
	t := profiles[rng.IntN(len(profiles))]
	t.StepDownTimeout = shardStepDown
	p := Plan{Seed: seed, Candidates: m, Duration: duration, Horizon: duration, Timings: t,
		World: WorldShard, Shards: shardCounts[rng.IntN(len(shardCounts))],
		RestartAfter: time.Duration(rng.Int64N(int64(2 * t.LeaseDuration))).Truncate(time.Millisecond),
	}
	skewed := rng.IntN(2) == 0
	for range m {
		p.ReleaseOnCancel = append(p.ReleaseOnCancel, rng.IntN(10) < 7)
		var off time.Duration
		if skewed {
			// As the election's plans: up to four lease durations either
			// way. Safety never compares clocks; only the balance's hint
			// (a member Lease renewed, by its renewer's clock, within
			// twice its duration) reads another member's clock.
			off = time.Duration(rng.Int64N(int64(8*t.LeaseDuration))) - 4*t.LeaseDuration
		}
		p.Skew = append(p.Skew, off.Truncate(time.Millisecond))
	}
	var total int
	for _, k := range ShardKinds {
		total += shardWeights[k]
	}
	pick := func() Kind {
		x := rng.IntN(total)
		for _, k := range ShardKinds {
			if x -= shardWeights[k]; x < 0 {
				return k
			}
		}
		panic("unreachable")
	}
	L, P := t.LeaseDuration, t.RetryPeriod
	durn := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	slot := func(allowAll bool) int {
		if allowAll && rng.IntN(3) == 0 {
			return -1
		}
		return rng.IntN(m)
	}
	quiet := t.ShardLiveBound() + 2*L
	at := L + time.Duration(rng.Int64N(int64(L)))
	for at < duration-quiet {
		f := Fault{At: at.Truncate(time.Millisecond), Kind: pick(), Target: -1, To: -1}
		switch f.Kind {
		case KindCancel, KindCrash:
			f.Target = slot(false)
			f.Dur = durn(0, 3*L)
		case KindDeleteMember:
			f.Target = slot(false)
		case KindRefuse:
			f.Target = slot(true)
			f.Code = []int{409, 422, 403, 429, 500}[rng.IntN(5)]
			f.Verbs = []Verbs{VerbWrites, VerbWrites, VerbUpdate, VerbAll, VerbGet, VerbWatch}[rng.IntN(6)]
			f.Prob = []float64{1, 1, 0.5}[rng.IntN(3)]
			f.Dur = durn(P/2, 3*L)
		case KindLatency:
			f.Target = slot(true)
			f.Max = []time.Duration{P / 10, P / 2, P, 3 * P}[rng.IntN(4)]
			f.Dur = durn(P, 3*L)
		case KindStall, KindWatchOutage, KindWatchDrop:
			f.Target = slot(true)
			f.Dur = durn(P/2, 2*L)
		case KindWatchLag:
			f.Target = slot(true)
			f.Max = []time.Duration{P / 10, P / 2, P, 3 * P}[rng.IntN(4)]
			f.Dur = durn(P, 3*L)
		case KindLoseAnswer:
			f.Target = slot(true)
			f.Prob = []float64{1, 0.5}[rng.IntN(2)]
			f.Dur = durn(P, 2*L)
		case KindPartition:
			f.Target = slot(false)
			f.Prob = rng.Float64()
			f.Dur = durn(P/2, 3*L)
		case KindHangWork:
			// Works cancelled meanwhile ignore their ctx until it heals:
			// sometimes past the safety margin.
			f.Target = slot(true)
			f.Dur = durn(P, 2*L)
		}
		f.Dur = f.Dur.Truncate(time.Millisecond)
		p.Faults = append(p.Faults, f)
		at += time.Duration(rng.ExpFloat64() * float64(L))
	}
	return p
}

// ShardLiveBound is how long after the last disturbance every shard
// must run somewhere again, with no fault active and a member running.
// The slowest path is a member gone without releasing (crashed, or
// partitioned until its term lapsed): the others see its Lease's last
// renewal no earlier than the disturbance and wait LeaseDuration (a
// takeover, case (c) of shard/doc.go); that wait may have begun on a
// claim seen just before the disturbance, hence a second LeaseDuration,
// as the election's LeaderBound. Then the fence, the claim and, as the
// targets settle on the members left, one more handoff: the moved
// shard's work returns (its stop delay, at most half the safety
// margin), is acknowledged and claimed, a few requests each retried
// once after a RetryPeriod's backoff: 2 x RetryPeriod, plus the margin.
func (t Timings) ShardLiveBound() time.Duration {
	return 2*t.LeaseDuration + 2*t.RetryPeriod + t.Margin()
}
