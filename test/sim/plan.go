package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
)

// Kind is a kind of operation or fault in a Plan.
type Kind string

// The operations and faults a plan draws from.
const (
	// KindCancel cancels a candidate's Run (a graceful stop: it releases
	// if its ReleaseOnCancel is set) and starts it again after Dur.
	KindCancel Kind = "cancel"
	// KindCrash stops a candidate without releasing: its client refuses
	// every request from then on, its work dies at once, and a new
	// incarnation starts after Dur.
	KindCrash Kind = "crash"
	// KindYield calls Yield on the leader of the moment (Target -1) or on
	// a named candidate, to a named successor (To) or to anyone (To -1).
	KindYield Kind = "yield"
	// KindAnnotate sets the preferred-holder annotation on the Lease, as
	// an operator would, through a compare-and-swap update.
	KindAnnotate Kind = "annotate"
	// KindDelete deletes the Lease.
	KindDelete Kind = "delete"
	// KindRecreate deletes the Lease and creates it by hand, held by
	// "intruder", who never works.
	KindRecreate Kind = "recreate"
	// KindRefuse answers a candidate's (or everyone's) requests of some
	// verbs with an error status, with probability Prob, for Dur.
	KindRefuse Kind = "refuse"
	// KindLatency delays a client's requests by up to Max before they are
	// served, for Dur.
	KindLatency Kind = "latency"
	// KindStall holds a client's requests until the fault heals or the
	// request times out, for Dur.
	KindStall Kind = "stall"
	// KindCloseWatches ends every open watch, as an API server restart.
	KindCloseWatches Kind = "close-watches"
	// KindExpireWatches ends every watch with 410 Gone and compacts.
	KindExpireWatches Kind = "expire-watches"
	// KindCompact forgets the watch history: resumptions get 410.
	KindCompact Kind = "compact"
	// KindWatchOutage closes a client's watches and refuses new ones with
	// 500 for Dur.
	KindWatchOutage Kind = "watch-outage"
	// KindWatchLag delays each watch event to a client by Max, for Dur.
	KindWatchLag Kind = "watch-lag"
	// KindPartition cuts a client off for Dur: requests hang until they
	// time out (or fail at once, Prob < 0.5), its watches go silent and
	// are closed when it heals.
	KindPartition Kind = "partition"
	// KindHangWork makes the leader's work ignore its context for Dur
	// after it is cancelled (longer than StepDownTimeout, sometimes).
	KindHangWork Kind = "hang-work"
	// KindLoseAnswer loses the answers to a client's writes, with
	// probability Prob, for Dur: the write lands, and the client sees its
	// request time out.
	KindLoseAnswer Kind = "lose-answer"
	// KindWatchDrop accepts a client's watches and ends each at once, for
	// Dur (a proxy or load balancer that cuts long requests).
	KindWatchDrop Kind = "watch-drop"
)

// Kinds lists every kind, in report order.
var Kinds = []Kind{KindCancel, KindCrash, KindYield, KindAnnotate, KindDelete, KindRecreate,
	KindRefuse, KindLatency, KindStall, KindCloseWatches, KindExpireWatches, KindCompact,
	KindWatchOutage, KindWatchLag, KindPartition, KindHangWork, KindLoseAnswer, KindWatchDrop, KindPause}

// focus are the weights of one plan in three: the rare paths that found
// the worst bugs (a Lease deleted or re-created under a working leader,
// step-downs whose work hangs, answers lost, watches late) come up every
// few dozen seeds instead of every few thousand.
var focus = map[Kind]int{
	KindCancel: 8, KindCrash: 6, KindYield: 6, KindAnnotate: 2, KindDelete: 10, KindRecreate: 6,
	KindRefuse: 4, KindLatency: 3, KindStall: 2, KindCloseWatches: 2, KindExpireWatches: 1,
	KindCompact: 1, KindWatchOutage: 3, KindWatchLag: 6, KindPartition: 3, KindHangWork: 8,
	KindLoseAnswer: 6, KindWatchDrop: 1,
}

// weights are each kind's relative frequency in a plan.
var weights = map[Kind]int{
	KindCancel: 6, KindCrash: 6, KindYield: 6, KindAnnotate: 3, KindDelete: 6, KindRecreate: 3,
	KindRefuse: 10, KindLatency: 5, KindStall: 4, KindCloseWatches: 3, KindExpireWatches: 2,
	KindCompact: 2, KindWatchOutage: 5, KindWatchLag: 5, KindPartition: 5, KindHangWork: 2,
	KindLoseAnswer: 4, KindWatchDrop: 3,
}

// Verbs is a set of request verbs a fault applies to.
type Verbs uint8

// The verbs of the Lease API the electors use.
const (
	VerbGet Verbs = 1 << iota
	VerbCreate
	VerbUpdate
	VerbWatch
	VerbDelete

	VerbWrites = VerbCreate | VerbUpdate
	VerbAll    = VerbGet | VerbCreate | VerbUpdate | VerbWatch | VerbDelete
)

func verbOf(s string) Verbs {
	switch s {
	case "get":
		return VerbGet
	case "create":
		return VerbCreate
	case "update":
		return VerbUpdate
	case "watch":
		return VerbWatch
	case "delete":
		return VerbDelete
	}
	return 0
}

func (v Verbs) String() string {
	switch v {
	case VerbWrites:
		return "writes"
	case VerbAll:
		return "all"
	}
	var s []string
	for _, n := range []string{"get", "create", "update", "watch", "delete"} {
		if v&verbOf(n) != 0 {
			s = append(s, n)
		}
	}
	return strings.Join(s, "+")
}

// Fault is one entry of a Plan: an operation at an instant, or a fault
// from At for Dur.
type Fault struct {
	At   time.Duration // since the world started
	Kind Kind
	// Target is a candidate slot (0-based); -1 is everyone for client
	// faults, the leader of the moment for yield and hang-work.
	Target int
	// To is the successor slot of a yield or annotation, -1 for anyone.
	To int
	// Dur is how long a fault lasts, or how long a stopped candidate
	// stays down.
	Dur time.Duration
	// Code is the HTTP status of a refusal.
	Code int
	// Verbs are the verbs a refusal applies to.
	Verbs Verbs
	// Prob is the probability that a refusal applies to a request; for a
	// partition, below 0.5 means requests fail at once instead of hanging.
	Prob float64
	// Max is the largest latency, or the lag of a watch.
	Max time.Duration
	// Suspend, for a pause, makes it a suspend of the process's machine:
	// its monotonic clock does not count it, its time since boot does.
	Suspend bool
	// OnTakeover, for delete, recreate and crash, waits for the next
	// change of holder after At and acts Delay after it.
	OnTakeover bool
	Delay      time.Duration
}

// String renders a fault for logs and reports.
func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", fmtDur(f.At), f.Kind)
	who := func(i int, all string) string {
		if i < 0 {
			return all
		}
		return slotName(i)
	}
	switch f.Kind {
	case KindCancel, KindCrash:
		fmt.Fprintf(&b, " %s, back after %v", who(f.Target, "leader"), f.Dur)
	case KindYield:
		fmt.Fprintf(&b, " %s to %s", who(f.Target, "leader"), who(f.To, "anyone"))
	case KindAnnotate:
		fmt.Fprintf(&b, " preferred-holder=%s", who(f.To, "*"))
	case KindRefuse:
		fmt.Fprintf(&b, " %d %s of %s p=%.1f for %v", f.Code, f.Verbs, who(f.Target, "everyone"), f.Prob, f.Dur)
	case KindLatency:
		fmt.Fprintf(&b, " up to %v for %s for %v", f.Max, who(f.Target, "everyone"), f.Dur)
	case KindWatchLag:
		fmt.Fprintf(&b, " %v for %s for %v", f.Max, who(f.Target, "everyone"), f.Dur)
	case KindStall, KindWatchOutage, KindWatchDrop:
		fmt.Fprintf(&b, " %s for %v", who(f.Target, "everyone"), f.Dur)
	case KindPartition:
		mode := "hang"
		if f.Prob < 0.5 {
			mode = "refuse"
		}
		fmt.Fprintf(&b, " %s (%s) for %v", who(f.Target, "everyone"), mode, f.Dur)
	case KindHangWork:
		fmt.Fprintf(&b, " %s for %v", who(f.Target, "leader"), f.Dur)
	case KindPause:
		what := "pause"
		if f.Suspend {
			what = "suspend"
		}
		fmt.Fprintf(&b, " %s (%s) for %v", who(f.Target, "leader"), what, f.Dur)
	case KindDeleteMember:
		fmt.Fprintf(&b, " %s's Lease", who(f.Target, "everyone"))
	case KindLoseAnswer:
		fmt.Fprintf(&b, " of writes of %s p=%.1f for %v", who(f.Target, "everyone"), f.Prob, f.Dur)
	}
	if f.OnTakeover {
		fmt.Fprintf(&b, " (at the next takeover + %v)", f.Delay)
	}
	return b.String()
}

// Timings are the electors' timing knobs in a world.
type Timings struct {
	LeaseDuration, RenewDeadline, RetryPeriod, StepDownTimeout time.Duration
}

// Margin is the safety margin: how long a lost leader's work may take to
// return before another leader may start.
func (t Timings) Margin() time.Duration { return t.LeaseDuration - t.RenewDeadline - t.RetryPeriod }

// RequestTimeout bounds one request of an elector.
func (t Timings) RequestTimeout() time.Duration { return leasehold.RequestTimeout(t.RenewDeadline) }

// LeaderBound is how long after the last disturbance (a fault healing, a
// candidate starting or stopping, a hand edit of the Lease) some
// candidate must be working again: a dead holder's claim runs out one
// LeaseDuration after it was seen, and a second one covers a claim seen
// just before the disturbance, plus a retry period.
func (t Timings) LeaderBound() time.Duration { return 2*t.LeaseDuration + t.RetryPeriod }

// RunBound bounds how long Run may take to return after its ctx is
// cancelled: StepDownTimeout, plus one request that was in flight when
// the cancellation came (its renewal is not cut short).
func (t Timings) RunBound() time.Duration { return t.StepDownTimeout + t.RequestTimeout() }

// YieldBound bounds how long Yield may take to answer: a request in
// flight, the step-down (at most StepDownTimeout), then a release retried
// up to RenewDeadline.
func (t Timings) YieldBound() time.Duration {
	return t.StepDownTimeout + t.RenewDeadline + 2*t.RequestTimeout()
}

func (t Timings) String() string {
	return fmt.Sprintf("LeaseDuration %v, RenewDeadline %v, RetryPeriod %v, StepDownTimeout %v",
		t.LeaseDuration, t.RenewDeadline, t.RetryPeriod, t.StepDownTimeout)
}

// profiles are the timings a plan draws from: the defaults, and shorter
// ones with smaller safety margins.
var profiles = []Timings{
	{15 * time.Second, 10 * time.Second, 2 * time.Second, 20 * time.Second},
	{15 * time.Second, 10 * time.Second, 2 * time.Second, 20 * time.Second},
	{8 * time.Second, 5 * time.Second, time.Second, 12 * time.Second},
	{4 * time.Second, 2500 * time.Millisecond, time.Second, 6 * time.Second},
}

// Plan is everything a seed decides about a world: timings, candidate
// settings, and the schedule of operations and faults.
type Plan struct {
	Seed       uint64
	Candidates int
	// Duration is how long the world runs; Horizon the duration the
	// schedule was drawn for (NewPlan's argument). Shrinking cuts
	// Duration short.
	Duration, Horizon time.Duration
	Timings           Timings
	// Rejoin and ReleaseOnCancel per candidate slot.
	Rejoin, ReleaseOnCancel []bool
	// SameIdentity: a restarted candidate keeps its identity (as a
	// StatefulSet's pod does) instead of taking a new one.
	SameIdentity bool
	// RestartAfter is how long a candidate whose Run returned on its own
	// stays down before its next incarnation starts (a kubelet restart).
	RestartAfter time.Duration
	// Skew is, per candidate slot, how far its clock is set from true
	// time. The contract says absolute skew does not matter at all: a
	// Lease's renewTime, written by another clock, is never compared with
	// this one's.
	Skew []time.Duration
	// Faults is the schedule, in order of At.
	Faults []Fault
	// World is "" for an election, WorldShard for a shard group
	// (NewShardPlan); Shards is then its number of shards, K.
	World  string
	Shards int
	// Coordinated: the candidates run coordinated election
	// (leasehold.NewCoordinated) and the world runs kube-apiserver's
	// election controller, whose clock is set CtrlSkew from true time
	// (coordinated_world.go). Drawn in one plan in four.
	Coordinated bool
	CtrlSkew    time.Duration
	// CtrlPrefersAssigned: the controller also writes spec.preferredHolder
	// on an assignment the assignee has not taken up yet, as
	// kube-apiserver's may (it cannot tell). Off by default: leasehold
	// then returns ErrIdentityConflict from the assignee's Run (an open
	// finding, see coordinated_world.go).
	CtrlPrefersAssigned bool
	// CtrlWait is how long the controller waits for the candidates it
	// pinged to answer (ElectionWait, or less in one coordinated plan in
	// two): it elects among those that answered when all have, or when
	// it runs out.
	CtrlWait time.Duration
	// Strict makes an identity conflict after the controller named this
	// identity a violation (see assignedConflictLocked); every
	// coordinated plan is strict since the library's fix.
	Strict bool
}

// NewPlan draws the plan of a seed for n candidates and a world of the
// given virtual duration. The same arguments always give the same plan.
func NewPlan(seed uint64, n int, duration time.Duration) Plan {
	return newPlan(seed, n, duration, nil)
}

// newPlan is NewPlan, with coordinated election drawn (coordinated nil) or
// forced.
func newPlan(seed uint64, n int, duration time.Duration, coordinated *bool) Plan {
	rng := rand.New(rand.NewPCG(seed, 0x5eed5eed))
	t := profiles[rng.IntN(len(profiles))]
	p := Plan{Seed: seed, Candidates: n, Duration: duration, Horizon: duration, Timings: t,
		SameIdentity: rng.IntN(3) == 0,
		RestartAfter: time.Duration(rng.Int64N(int64(2 * t.LeaseDuration))),
	}
	skewed := rng.IntN(2) == 0
	for range n {
		p.Rejoin = append(p.Rejoin, rng.IntN(10) < 7)
		p.ReleaseOnCancel = append(p.ReleaseOnCancel, rng.IntN(10) < 7)
		var off time.Duration
		if skewed {
			off = time.Duration(rng.Int64N(int64(8*t.LeaseDuration))) - 4*t.LeaseDuration
		}
		p.Skew = append(p.Skew, off.Truncate(time.Millisecond))
	}
	if coordinated == nil {
		coordinated = ptr.To(drawnCoordinated(seed))
	}
	p.coordinate(*coordinated)
	weight := weights
	if rng.IntN(3) == 0 {
		weight = focus
	}
	var total int
	for _, k := range Kinds {
		total += weight[k]
	}
	pick := func() Kind {
		x := rng.IntN(total)
		for _, k := range Kinds {
			if x -= weight[k]; x < 0 {
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
		return rng.IntN(n)
	}
	// The last fault heals well before the end, so that the world is
	// seen to recover.
	quiet := p.leaderBound() + 2*L
	at := L + time.Duration(rng.Int64N(int64(L)))
	for at < duration-quiet {
		f := Fault{At: at.Truncate(time.Millisecond), Kind: pick(), Target: -1, To: -1}
		switch f.Kind {
		case KindCancel, KindCrash:
			f.Target = slot(true)
			f.Dur = durn(0, 3*L)
			if f.Kind == KindCrash && f.Target >= 0 && rng.IntN(3) == 0 {
				f.OnTakeover, f.Delay = true, durn(0, 2*P)
			}
		case KindYield:
			f.Target = slot(true)
			f.To = slot(true)
		case KindAnnotate:
			f.To = slot(true)
		case KindDelete, KindRecreate:
			if rng.IntN(2) == 0 {
				f.OnTakeover, f.Delay = true, durn(0, 2*P)
			}
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
		case KindWatchLag:
			f.Target = slot(true)
			f.Max = []time.Duration{P / 10, P / 2, P, 3 * P}[rng.IntN(4)]
			f.Dur = durn(P, 3*L)
		case KindStall, KindWatchOutage, KindWatchDrop:
			f.Target = slot(true)
			f.Dur = durn(P/2, 2*L)
		case KindPartition:
			f.Target = slot(false)
			f.Prob = rng.Float64()
			f.Dur = durn(P/2, 3*L)
		case KindHangWork:
			f.Dur = durn(P, t.StepDownTimeout+2*L)
		case KindLoseAnswer:
			f.Target = slot(true)
			f.Prob = []float64{1, 0.5}[rng.IntN(2)]
			f.Dur = durn(P, 2*L)
		}
		f.Dur = f.Dur.Truncate(time.Millisecond)
		f.Delay = f.Delay.Truncate(time.Millisecond)
		p.Faults = append(p.Faults, f)
		at += time.Duration(rng.ExpFloat64() * float64(L))
	}
	p.Faults = mergeFaults(p.Faults, drawPauses(seed, t, n, duration-quiet, !p.Coordinated))
	return p
}

// drawPauses draws the pauses of a plan from a stream of their own, so
// that the rest of a seed's schedule is what it was before pauses were
// drawn: in two plans in three, a pause every 3 x LeaseDuration on
// average until before, of the leader of the moment (two in three) or of
// a candidate, for RetryPeriod/2 to 2 x LeaseDuration; one in three is a
// suspend, unless suspends is false (coordinated plans): the simulated
// clock has one reading, so the suspend leaves it behind for good, which
// the election controller, judging renewTime by its own clock, would take
// for a skew past the LeaseDuration/2 it assumes.
func drawPauses(seed uint64, t Timings, n int, before time.Duration, suspends bool) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x9a05e5))
	if rng.IntN(3) == 0 {
		return nil
	}
	L, P := t.LeaseDuration, t.RetryPeriod
	var out []Fault
	at := L + time.Duration(rng.Int64N(int64(2*L)))
	for at < before {
		f := Fault{At: at.Truncate(time.Millisecond), Kind: KindPause, Target: -1, To: -1,
			Dur:     (P/2 + time.Duration(rng.Int64N(int64(2*L-P/2)))).Truncate(time.Millisecond),
			Suspend: rng.IntN(3) == 0 && suspends,
		}
		if rng.IntN(3) == 0 {
			f.Target = rng.IntN(n)
		}
		out = append(out, f)
		at += time.Duration(rng.ExpFloat64() * float64(3*L))
	}
	return out
}

// mergeFaults merges two schedules in order of At, a's first at one
// instant.
func mergeFaults(a, b []Fault) []Fault {
	out := make([]Fault, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && b[0].At >= a[0].At) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// Keep returns the plan with only the faults at the given indexes.
func (p Plan) Keep(idx []int) Plan {
	q := p
	q.Faults = nil
	for _, i := range idx {
		if i >= 0 && i < len(p.Faults) {
			q.Faults = append(q.Faults, p.Faults[i])
		}
	}
	return q
}

func slotName(i int) string { return fmt.Sprintf("c%d", i+1) }

// fmtDur renders a virtual instant since the start, as +1m02.345s.
func fmtDur(d time.Duration) string {
	m := d / time.Minute
	s := d - m*time.Minute
	if m > 0 {
		return fmt.Sprintf("+%dm%06.3fs", m, s.Seconds())
	}
	return fmt.Sprintf("+%.3fs", s.Seconds())
}
