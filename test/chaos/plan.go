package chaos

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Kind is a type of fault.
type Kind string

// The faults, proxy faults first, then process faults.
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

// Kinds lists every kind, in report order.
var Kinds = []Kind{KindLatency, Kind5xx, Kind429, KindDropWatch, KindStallWatch, KindReset, KindPartition, KindKill, KindPauseShort, KindPauseLong}

var weights = map[Kind]int{
	KindLatency: 12, Kind5xx: 10, Kind429: 8, KindDropWatch: 8, KindStallWatch: 10,
	KindReset: 10, KindPartition: 12, KindKill: 12, KindPauseShort: 9, KindPauseLong: 9,
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
}

func (f Fault) Params() string {
	switch f.Kind {
	case KindLatency:
		return fmt.Sprintf("%v (request +%v, response +%v) for %v", f.ReqDelay+f.RespDelay, f.ReqDelay, f.RespDelay, f.Window)
	case Kind5xx, Kind429:
		return fmt.Sprintf("%d for %v", f.Code, f.Window)
	case KindDropWatch:
		return "once"
	case KindKill:
		return fmt.Sprintf("restart after %v", f.RestartAfter)
	default:
		return "for " + f.Window.String()
	}
}

// Plan returns n faults drawn from seed. It is deterministic: one seed,
// one plan.
func Plan(seed uint64, n int, t Timings) []Fault {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	total := 0
	for _, k := range Kinds {
		total += weights[k]
	}
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return (lo + time.Duration(r.Int64N(int64(hi-lo)))).Round(time.Millisecond)
	}
	L, D, P := t.LeaseDuration, t.RenewDeadline, t.RetryPeriod
	faults := make([]Fault, n)
	for i := range faults {
		x := r.IntN(total)
		var k Kind
		for _, k = range Kinds {
			if x < weights[k] {
				break
			}
			x -= weights[k]
		}
		f := Fault{
			Index:    i + 1,
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
		case KindKill:
			f.RestartAfter = between(0, 2*time.Second)
		case KindPauseShort:
			f.Window = between(100*time.Millisecond, L-200*time.Millisecond)
		case KindPauseLong:
			f.Window = between(L+200*time.Millisecond, 2*L)
		}
		faults[i] = f
	}
	return faults
}
