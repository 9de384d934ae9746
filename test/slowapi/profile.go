package slowapi

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// z99 is the standard normal quantile of 0.99: a lognormal whose median is
// m and whose p99 is p has sigma ln(p/m)/z99.
const z99 = 2.3263478740408408

// MaxLatency caps every drawn latency (both halves together, stalls
// excluded): kube-apiserver's default --request-timeout is 1m.
const MaxLatency = time.Minute

// Dist is a lognormal latency: Median and P99 of the whole request (both
// halves together).
type Dist struct {
	Median, P99 time.Duration
}

func (d Dist) sigma() float64 {
	return math.Log(float64(d.P99)/float64(d.Median)) / z99
}

// draw returns one latency.
func (d Dist) draw(r *rand.Rand) time.Duration {
	v := float64(d.Median) * math.Exp(d.sigma()*r.NormFloat64())
	return min(time.Duration(v), MaxLatency)
}

func (d Dist) String() string {
	return fmt.Sprintf("lognormal p50 %v, p99 %v (σ %.3f)", d.Median, d.P99, d.sigma())
}

// Profile is one latency profile of the API server. Every request's
// latency is split in two halves: "before", from its send until it lands
// on the server (a write is stored, a read takes its snapshot, a watch is
// registered), and "after", from there until the client has the answer.
// The landing point is drawn uniformly inside the drawn latency. Stalls
// (see StallEvery) pause both halves of every request in flight.
type Profile struct {
	Name string
	// Read is the latency of get, list and watch (the watch's opening;
	// its events are delivered at once, except during a stall).
	Read Dist
	// Write is the latency of create, update and delete.
	Write Dist
	// WriteStallProb is the probability that a write stalls before it
	// lands, for a time drawn uniformly in [WriteStallMin, WriteStallMax],
	// added to its "before" half: an etcd fsync stall. Each write draws
	// on its own (stalls of different writes are not correlated).
	WriteStallProb               float64
	WriteStallMin, WriteStallMax time.Duration
	// StallEvery, when set, makes the whole server stall: the gap from
	// one stall's start to the next is drawn uniformly in
	// [StallEveryMin, StallEveryMax] (the first starts that long after
	// the world's start), and each stall lasts a time drawn uniformly in
	// [StallMin, StallMax]. During a stall no request progresses: one
	// sent or in flight hangs until it ends, and watch events are held.
	StallEveryMin, StallEveryMax time.Duration
	StallMin, StallMax           time.Duration
	// StallWritesOnly limits the stalls to writes, as an etcd fsync stall
	// does: no write lands (so no watch event is sent) until it ends,
	// while reads, served from the API server's cache, stay fast.
	StallWritesOnly bool
}

// Profiles are the four profiles of issue #25, in report order.
var Profiles = []Profile{
	{
		Name:  "healthy",
		Read:  Dist{5 * time.Millisecond, 30 * time.Millisecond},
		Write: Dist{5 * time.Millisecond, 30 * time.Millisecond},
	},
	{
		Name:  "loaded",
		Read:  Dist{100 * time.Millisecond, 2 * time.Second},
		Write: Dist{100 * time.Millisecond, 2 * time.Second},
	},
	{
		Name:          "brownout",
		Read:          Dist{200 * time.Millisecond, 6 * time.Second},
		Write:         Dist{200 * time.Millisecond, 6 * time.Second},
		StallEveryMin: 3 * time.Minute, StallEveryMax: 5 * time.Minute,
		StallMin: 8 * time.Second, StallMax: 12 * time.Second,
	},
	{
		Name:           "write-stalls",
		Read:           Dist{5 * time.Millisecond, 30 * time.Millisecond},
		Write:          Dist{20 * time.Millisecond, 100 * time.Millisecond},
		WriteStallProb: 0.01,
		WriteStallMin:  3 * time.Second, WriteStallMax: 8 * time.Second,
	},
	{
		// The write stalls above, correlated: every write waits for the
		// same stalled disk. Not one of the profiles; no target.
		Name:          "fsync-stalls",
		Read:          Dist{5 * time.Millisecond, 30 * time.Millisecond},
		Write:         Dist{20 * time.Millisecond, 100 * time.Millisecond},
		StallEveryMin: 2 * time.Minute, StallEveryMax: 4 * time.Minute,
		StallMin: 3 * time.Second, StallMax: 8 * time.Second,
		StallWritesOnly: true,
	},
}

// ProfileByName returns the named profile.
func ProfileByName(name string) (Profile, bool) {
	i := slices.IndexFunc(Profiles, func(p Profile) bool { return p.Name == name })
	if i < 0 {
		return Profile{}, false
	}
	return Profiles[i], true
}

// Describe says the profile's parameters in one line.
func (p Profile) Describe() string {
	parts := []string{"reads " + p.Read.String(), "writes " + p.Write.String()}
	if p.WriteStallProb > 0 {
		parts = append(parts, fmt.Sprintf("%.1f%% of writes stall %v–%v before landing", 100*p.WriteStallProb, p.WriteStallMin, p.WriteStallMax))
	}
	switch {
	case p.StallEveryMax > 0 && p.StallWritesOnly:
		parts = append(parts, fmt.Sprintf("write stalls of %v–%v every %v–%v (every write hangs until the stall ends; reads do not)",
			p.StallMin, p.StallMax, p.StallEveryMin, p.StallEveryMax))
	case p.StallEveryMax > 0:
		parts = append(parts, fmt.Sprintf("server stalls of %v–%v every %v–%v (every request hangs until the stall ends)",
			p.StallMin, p.StallMax, p.StallEveryMin, p.StallEveryMax))
	}
	return strings.Join(parts, "; ")
}

// latency is one request's drawn latency.
type latency struct {
	before, after time.Duration
}

func (l latency) total() time.Duration { return l.before + l.after }

// draw draws the two halves of one request.
func (p Profile) draw(r *rand.Rand, write bool) latency {
	d := p.Read
	if write {
		d = p.Write
	}
	total := d.draw(r)
	before := time.Duration(r.Float64() * float64(total))
	l := latency{before: before, after: total - before}
	if write && p.WriteStallProb > 0 && r.Float64() < p.WriteStallProb {
		l.before += p.WriteStallMin + time.Duration(r.Float64()*float64(p.WriteStallMax-p.WriteStallMin))
	}
	return l
}

// window is one server stall, as offsets from the world's start.
type window struct {
	start, end time.Duration
}

// stalls is a world's stall schedule, in order.
type stalls []window

// schedule draws the profile's stalls over d.
func (p Profile) schedule(r *rand.Rand, d time.Duration) stalls {
	if p.StallEveryMax <= 0 {
		return nil
	}
	var s stalls
	at := time.Duration(0)
	for {
		at += p.StallEveryMin + time.Duration(r.Float64()*float64(p.StallEveryMax-p.StallEveryMin))
		if at >= d {
			return s
		}
		length := p.StallMin + time.Duration(r.Float64()*float64(p.StallMax-p.StallMin))
		s = append(s, window{at, at + length})
	}
}

// advance returns when a request at offset t, that needs d of service,
// has had it: service does not progress during a stall.
func (s stalls) advance(t, d time.Duration) time.Duration {
	for _, w := range s {
		switch {
		case w.end <= t:
			continue
		case w.start <= t:
			t = w.end // sent, or still in service, during the stall
		case t+d < w.start:
			return t + d
		default:
			d -= w.start - t
			t = w.end
		}
	}
	return t + d
}

// total returns the summed length of the stalls.
func (s stalls) total() time.Duration {
	var sum time.Duration
	for _, w := range s {
		sum += w.end - w.start
	}
	return sum
}
