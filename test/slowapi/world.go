package slowapi

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// The election every world runs.
const (
	Namespace     = "slowapi"
	LeaseName     = "leader"
	Replicas      = 3
	LeaseDuration = 15 * time.Second
	RenewDeadline = 10 * time.Second
	RetryPeriod   = 2 * time.Second
)

// Config is one world: a library on a profile.
type Config struct {
	Profile  Profile
	Library  Library
	Duration time.Duration // virtual
	// Seed seeds the profile's stall schedule (the same for every
	// library) and, with the library, each replica's latency draws.
	Seed uint64
	// Log, if set, receives the libraries' logs (klog), and Trace every
	// request and work, for debugging a world.
	Log   logr.Logger
	Trace func(format string, args ...any)
}

// Result is what one world measured.
type Result struct {
	Profile  string
	Library  Library
	Duration time.Duration // virtual
	Seed     uint64

	// Terms is the number of works started (OnStartedLeading).
	Terms int
	// TermsLost counts the works that ended while the world ran: every
	// replica was alive and never asked to stop, so each is a lost term.
	TermsLost int
	// HolderChanges counts the works started by another replica than the
	// previous work's.
	HolderChanges int
	// FirstLeader is when the first work started.
	FirstLeader time.Duration
	// Leaderless is the time no work ran.
	Leaderless time.Duration
	// Requests counts every request of every replica; TimedOut those
	// that ended with their ctx (the caller's timeout) before the answer.
	Requests, TimedOut int
	// Overrun is the longest time a lost term's work ran past the send
	// time of its replica's last successful write naming it holder plus
	// RenewDeadline (0 if none ran past it). Overruns counts the lost
	// terms whose work ran past it at all.
	Overrun  time.Duration
	Overruns int
	// Overlaps counts works started while another replica's work ran;
	// OverlapTime is the time two or more works ran at once.
	Overlaps    int
	OverlapTime time.Duration
	// Restarts counts process restarts (controller-runtime exits when
	// its election is lost; the kubelet starts it again).
	Restarts int
	// CtxGap is, for controller-runtime, the largest gap between the
	// cancellation of OnStartedLeading's ctx and OnStoppedLeading (the
	// manager's runnables end there).
	CtxGap time.Duration
	// RunErrors lists unexpected ends of a replica's election.
	RunErrors []string
	// Stalled is the total length of the server's stalls.
	Stalled time.Duration
	// Read and Write are the drawn latencies (both halves and any
	// stall-before-landing; server stalls excluded), for the report.
	Read, Write []time.Duration
	Wall        time.Duration
}

// PerHour scales a count of this world to one hour.
func (r *Result) PerHour(n float64) float64 {
	return n * float64(time.Hour) / float64(r.Duration)
}

// RequestsPerMinute is the request rate of all replicas together.
func (r *Result) RequestsPerMinute() float64 {
	return float64(r.Requests) / r.Duration.Minutes()
}

// world is one running world, inside a synctest bubble.
type world struct {
	cfg    Config
	start  time.Time
	stalls stalls
	srv    *leaseholdtest.Server

	mu       sync.Mutex
	res      *Result
	stopping bool
	slots    []*slot
	running  int
	changed  time.Time // when running last changed
	lastSlot int       // slot of the last work started, -1 before

	// override, if set (tests), replaces the profile's latency draws.
	override func(write bool) latency
}

// slot is one replica: a process, restarted in place (controller-runtime).
type slot struct {
	i    int
	name string
	rng  *rand.Rand // guarded by world.mu
	// lastOK is the send time of the replica's last successful write
	// naming it holder, as the wrapper saw it answered.
	lastOK time.Time
}

// work is one term's work.
type work struct {
	s     *slot
	start time.Time
	once  sync.Once
}

// Run runs one world in a synctest bubble and returns what it measured.
func Run(t *testing.T, cfg Config) *Result {
	res := &Result{Profile: cfg.Profile.Name, Library: cfg.Library, Duration: cfg.Duration, Seed: cfg.Seed}
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(cfg, res)
		w.run()
	})
	res.Wall = time.Since(wall)
	return res
}

func newWorld(cfg Config, res *Result) *world {
	w := &world{cfg: cfg, start: time.Now(), srv: leaseholdtest.NewServer(), res: res, lastSlot: -1}
	w.changed = w.start
	w.stalls = cfg.Profile.schedule(rand.New(rand.NewPCG(cfg.Seed, hash(cfg.Profile.Name))), cfg.Duration)
	res.Stalled = w.stalls.total()
	for i := range Replicas {
		w.slots = append(w.slots, &slot{
			i:    i,
			name: fmt.Sprintf("replica-%d", i),
			rng:  rand.New(rand.NewPCG(cfg.Seed^hash(cfg.Profile.Name), hash(string(cfg.Library))+uint64(i))),
		})
	}
	return w
}

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// run starts the replicas, lets the world run for its duration, stops
// them and waits until each has returned.
func (w *world) run() {
	log := w.cfg.Log
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), log))
	var wg sync.WaitGroup
	for _, s := range w.slots {
		wg.Go(func() { w.cfg.Library.run(ctx, w, s) })
	}
	time.Sleep(w.cfg.Duration)
	w.mu.Lock()
	w.account(time.Now())
	w.stopping = true
	w.mu.Unlock()
	cancel()
	wg.Wait()
}

// client returns a new client of slot s's process, writing as id.
func (w *world) client(s *slot, id string, timeout time.Duration) *client {
	return &client{w: w, s: s, id: id, inner: w.srv.Client(id), timeout: timeout}
}

// request counts a request of s and draws its latency.
func (w *world) request(s *slot, write bool) latency {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.cfg.Profile.draw(s.rng, write)
	if w.override != nil {
		l = w.override(write)
	}
	if !w.stopping {
		w.res.Requests++
		if write {
			w.res.Write = append(w.res.Write, l.total())
		} else {
			w.res.Read = append(w.res.Read, l.total())
		}
	}
	return l
}

func (w *world) timedOut(*slot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopping {
		w.res.TimedOut++
	}
}

// renewed records a successful write of s naming it holder, sent at sent.
func (w *world) renewed(s *slot, sent time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sent.After(s.lastOK) {
		s.lastOK = sent
	}
}

// account adds the time since the last change of running works to the
// leaderless or overlap totals. w.mu must be held.
func (w *world) account(now time.Time) {
	if w.stopping {
		return
	}
	d := now.Sub(w.changed)
	switch {
	case w.running == 0:
		w.res.Leaderless += d
	case w.running > 1:
		w.res.OverlapTime += d
	}
	w.changed = now
}

// workStarted records that slot s's work started, now.
func (w *world) workStarted(s *slot) *work {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	wk := &work{s: s, start: now}
	if w.stopping {
		return wk
	}
	w.account(now)
	if w.res.Terms == 0 {
		w.res.FirstLeader = now.Sub(w.start)
	}
	w.res.Terms++
	if w.running > 0 {
		w.res.Overlaps++
	}
	if w.lastSlot >= 0 && w.lastSlot != s.i {
		w.res.HolderChanges++
	}
	w.lastSlot = s.i
	w.running++
	w.trace("%s: work starts", s.name)
	return wk
}

// workEnded records that wk ended, now. Only the first call counts.
func (w *world) workEnded(wk *work) {
	wk.once.Do(func() {
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopping {
			return
		}
		w.account(now)
		w.running--
		w.res.TermsLost++
		w.trace("%s: work ends (last renewal sent %v ago)", wk.s.name, now.Sub(wk.s.lastOK).Round(time.Millisecond))
		if over := now.Sub(wk.s.lastOK.Add(RenewDeadline)); over > 0 {
			w.res.Overruns++
			w.res.Overrun = max(w.res.Overrun, over)
		}
	})
}

// runError records an unexpected end of a replica's election.
func (w *world) runError(s *slot, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopping {
		w.res.RunErrors = append(w.res.RunErrors, fmt.Sprintf("%v %s: %v", time.Since(w.start).Round(time.Millisecond), s.name, err))
	}
}

// trace reports an event of the world to Config.Trace, if set.
func (w *world) trace(format string, args ...any) {
	if w.cfg.Trace != nil {
		w.cfg.Trace("%9s "+format, append([]any{time.Since(w.start).Round(time.Millisecond).String()}, args...)...)
	}
}
