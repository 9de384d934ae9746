package chaos

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"time"
)

// Kind is a type of fault.
type Kind string

// The faults at the candidates, proxy faults first, then process faults.
const (
	KindLatency    Kind = "latency"
	Kind5xx        Kind = "http-5xx"
	Kind429        Kind = "http-429"
	KindDropWatch  Kind = "drop-watches"
	KindStallWatch Kind = "stall-watches"
	KindReset      Kind = "reset-connections"
	KindPartition  Kind = "partition"
	KindKill       Kind = "sigkill+restart"
	KindPauseShort Kind = "sigstop<L"
	KindPauseLong  Kind = "sigstop>L"
)

// The faults of the control plane itself (Config.ControlPlane).
const (
	// KindAPIKill SIGKILLs a kube-apiserver and starts it again on the
	// same port after RestartAfter.
	KindAPIKill Kind = "apiserver-sigkill+restart"
	// KindAPIPause SIGSTOPs a kube-apiserver for longer than RenewDeadline.
	KindAPIPause Kind = "apiserver-sigstop>D"
	// KindEtcdKill SIGKILLs etcd and starts it again on the same data.
	KindEtcdKill Kind = "etcd-sigkill+restart"
	// KindEtcdPause SIGSTOPs etcd.
	KindEtcdPause Kind = "etcd-sigstop"
	// KindCompact compacts etcd to its newest revision, after the
	// candidates' watches fall behind, then drops them: with
	// --watch-cache=false their resumptions get a real 410 Gone.
	KindCompact Kind = "etcd-compaction"
)

// The faults of two kube-apiservers behind the proxies (Config.APIServers = 2).
const (
	// KindMove moves a candidate to the other kube-apiserver, as a load
	// balancer fails over: its connections are reset.
	KindMove Kind = "lb-move"
	// KindLag delays one kube-apiserver's watch streams by Lag (a
	// lagging watch cache) for Window.
	KindLag Kind = "watch-lag"
)

// The requests of -mode yield.
const (
	// KindYield makes the leader call Elector.Yield (to a named
	// follower, or to anyone).
	KindYield Kind = "yield"
	// KindAnnotate sets the preferred-holder annotation on the Lease.
	KindAnnotate Kind = "annotation-yield"
)

// CandidateKinds are the faults between candidates and one healthy
// control plane: the kinds of Plan.
var CandidateKinds = []Kind{KindLatency, Kind5xx, Kind429, KindDropWatch, KindStallWatch, KindReset, KindPartition, KindKill, KindPauseShort, KindPauseLong}

// ControlPlaneKinds fail the control plane itself.
var ControlPlaneKinds = []Kind{KindAPIKill, KindAPIPause, KindEtcdKill, KindEtcdPause, KindCompact}

// HAKinds need two kube-apiservers.
var HAKinds = []Kind{KindMove, KindLag}

// YieldKinds need -mode yield (an election with Yield).
var YieldKinds = []Kind{KindYield, KindAnnotate}

// Kinds lists every kind, in report order.
var Kinds = slices.Concat(CandidateKinds, ControlPlaneKinds, HAKinds, YieldKinds, LagKinds)

// DefaultWeights are each kind's relative frequency in a mixed plan.
var DefaultWeights = map[Kind]int{
	KindLatency: 12, Kind5xx: 10, Kind429: 8, KindDropWatch: 8, KindStallWatch: 10,
	KindReset: 10, KindPartition: 12, KindKill: 12, KindPauseShort: 9, KindPauseLong: 9,
	KindAPIKill: 10, KindAPIPause: 10, KindEtcdKill: 10, KindEtcdPause: 10, KindCompact: 10,
	KindMove: 12, KindLag: 12,
	KindYield: 15, KindAnnotate: 15,
}

// Weights returns DefaultWeights restricted to kinds.
func Weights(kinds ...Kind) map[Kind]int {
	w := map[Kind]int{}
	for _, k := range kinds {
		w[k] = DefaultWeights[k]
	}
	return w
}

// Timings are the candidates' election timings.
type Timings struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Fault is one planned fault. The plan is a pure function of the seed;
// which process is the leader when a fault comes is up to the run.
type Fault struct {
	Index    int
	Kind     Kind
	OnLeader bool // aim at the current leader; else at a follower
	Pick     int  // which follower (index among followers, modulo their count)
	// Window is how long a proxy fault or a pause lasts.
	Window time.Duration
	// ReqDelay and RespDelay are the latency fault's delays.
	ReqDelay, RespDelay time.Duration
	// Code is the HTTP status of a Kind5xx or Kind429 fault.
	Code int
	// RestartAfter is how long a SIGKILLed process stays dead.
	RestartAfter time.Duration
	// Settle is how long the leader must have led before the fault.
	Settle time.Duration
	// Lag is a KindLag fault's delay of watch events.
	Lag time.Duration
	// ToAnyone: a yield to whoever comes first, not to the follower
	// that Pick names.
	ToAnyone bool
}

func (f Fault) Params() string {
	switch f.Kind {
	case KindLatency:
		return fmt.Sprintf("%v (request +%v, response +%v) for %v", f.ReqDelay+f.RespDelay, f.ReqDelay, f.RespDelay, f.Window)
	case Kind5xx, Kind429:
		return fmt.Sprintf("%d for %v", f.Code, f.Window)
	case KindDropWatch:
		return "once"
	case KindKill, KindAPIKill, KindEtcdKill:
		return fmt.Sprintf("restart after %v", f.RestartAfter)
	case KindLag:
		return fmt.Sprintf("watch events +%v for %v", f.Lag, f.Window)
	case KindCompact, KindMove:
		return "once"
	case KindLagCrash, KindLagYield:
		return fmt.Sprintf("followers' watch +%v", f.Lag)
	case KindYield, KindAnnotate:
		if f.ToAnyone {
			return "to anyone"
		}
		return "to a follower"
	default:
		return "for " + f.Window.String()
	}
}

// Plan returns n faults at the candidates (CandidateKinds) drawn from
// seed. It is deterministic: one seed, one plan.
func Plan(seed uint64, n int, t Timings) []Fault {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	total := 0
	for _, k := range CandidateKinds {
		total += DefaultWeights[k]
	}
	faults := make([]Fault, n)
	for i := range faults {
		k := pick(r.IntN(total), CandidateKinds, DefaultWeights)
		faults[i] = draw(r, i+1, k, t)
	}
	return faults
}

// PlanMix returns n faults of the kinds in weights, mixed in proportion to
// their weights. Each kind has its own seeded schedule: the parameters of
// a kind's j-th fault come from a random stream of (seed, kind) alone, so
// adding or reweighting another kind changes where a kind's faults fall,
// never what they are. Deterministic: one seed and weights, one plan.
func PlanMix(seed uint64, n int, t Timings, weights map[Kind]int) []Fault {
	mix := rand.New(rand.NewPCG(seed, 0x6d6978))
	streams := map[Kind]*rand.Rand{}
	var kinds []Kind
	total := 0
	for _, k := range Kinds {
		if w := weights[k]; w > 0 {
			kinds = append(kinds, k)
			total += w
			h := fnv.New64a()
			h.Write([]byte(k))
			streams[k] = rand.New(rand.NewPCG(seed, h.Sum64()))
		}
	}
	if total == 0 {
		return nil
	}
	faults := make([]Fault, n)
	for i := range faults {
		k := pick(mix.IntN(total), kinds, weights)
		faults[i] = draw(streams[k], i+1, k, t)
	}
	return faults
}

// pick returns the kind that x, in [0, the sum of the weights of kinds),
// falls on when each kind in turn takes up its weight.
func pick(x int, kinds []Kind, weights map[Kind]int) Kind {
	var k Kind
	for _, k = range kinds {
		if x < weights[k] {
			break
		}
		x -= weights[k]
	}
	return k
}

// draw draws the parameters of fault number i, of kind k, from r.
func draw(r *rand.Rand, i int, k Kind, t Timings) Fault {
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return (lo + time.Duration(r.Int64N(int64(hi-lo)))).Round(time.Millisecond)
	}
	L, D, P := t.LeaseDuration, t.RenewDeadline, t.RetryPeriod
	f := Fault{
		Index:    i,
		Kind:     k,
		OnLeader: r.Float64() < 0.75,
		Pick:     r.IntN(64),
		Settle:   between(200*time.Millisecond, time.Second),
	}
	switch k {
	case KindLatency:
		// Up to past the renew deadline: the leader loses when
		// every renewal times out.
		f.Window = between(time.Second, 2*L)
		delay := between(0, D+time.Second)
		switch r.IntN(3) {
		case 0:
			f.ReqDelay = delay
		case 1:
			f.RespDelay = delay
		default:
			f.ReqDelay, f.RespDelay = delay/2, delay-delay/2
		}
	case Kind5xx:
		f.Code = []int{500, 503}[r.IntN(2)]
		f.Window = between(300*time.Millisecond, D+P+time.Second)
	case Kind429:
		f.Code = 429
		f.Window = between(300*time.Millisecond, D+P+time.Second)
	case KindStallWatch, KindPartition:
		f.Window = between(500*time.Millisecond, 2*L)
	case KindReset:
		f.Window = between(0, time.Second)
	case KindKill, KindAPIKill, KindEtcdKill:
		f.RestartAfter = between(0, 2*time.Second)
	case KindPauseShort:
		f.Window = between(100*time.Millisecond, L-200*time.Millisecond)
	case KindPauseLong:
		f.Window = between(L+200*time.Millisecond, 2*L)
	case KindAPIPause:
		f.Window = between(D+200*time.Millisecond, 2*L)
	case KindEtcdPause:
		f.Window = between(200*time.Millisecond, 2*L)
	case KindLag:
		f.Window = between(time.Second, 3*L)
		f.Lag = between(100*time.Millisecond, 2*L)
	case KindYield, KindAnnotate:
		f.OnLeader = true
		f.ToAnyone = r.IntN(2) == 0
	}
	return f
}
