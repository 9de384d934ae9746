package sim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Options tune one run of a world.
type Options struct {
	// StopOn ends the world at the first violation of this kind or
	// signature ("*": any), as shrinking does.
	StopOn string
	// StuckAfter is how long in real time virtual time may stand still
	// before the run is declared stuck (a loop that makes no request).
	// Default one minute.
	StuckAfter time.Duration
	// OnStuck is called, outside the bubble, when the run is stuck. The
	// bubble cannot be stopped then: the default prints msg and exits
	// the process with status 3.
	OnStuck func(msg string)

	progress *atomic.Int64
	// inject, set by tests, runs inside the bubble once the world has
	// started, to make it misbehave on purpose.
	inject func(w *world)
	// onOp, set by tests, runs inside the bubble as each fault of the
	// plan is carried out.
	onOp func(w *world, f Fault)
	// shardInject is inject for a shard world.
	shardInject func(w *shardWorld)
}

// Result is the outcome of one world.
type Result struct {
	Plan Plan
	// Kept lists the indexes of the seed's full plan that Plan keeps;
	// nil when it is the full plan.
	Kept       []int
	Violations []Violation
	// Simulated is the virtual time the world ran; CandidateTime the sum
	// of the virtual lifetimes of its candidate incarnations.
	Simulated     time.Duration
	CandidateTime time.Duration
	Checks        int
	// ExcusedOverdue and ExcusedBlind count overlaps the contract
	// allows: with a work that outlived the safety margin, and with a
	// Lease deleted by hand, then created by a candidate that never saw
	// it.
	ExcusedOverdue, ExcusedBlind int
	// ExcusedPaused counts overlaps with a work whose process was paused
	// at or after its renew deadline (the hole of doc.go: it cannot
	// cancel its work, nor can its work return, while paused).
	ExcusedPaused int
	// CheckSamples counts the calls of Check at a paused leader's
	// resumption (check-stalled).
	CheckSamples int
	// LateFailed counts renewals sent past the renew deadline, their
	// work uncancelled, that did not land (an open finding, not a
	// violation; see client.go): one that lands is a late-renewal.
	LateFailed int
	// ExcusedCrashed counts, in a shard world, overlaps with a work
	// whose process had crashed (the work dies with it).
	ExcusedCrashed int
	// Assignments counts, in a coordinated world, the election
	// controller's assignments of the Lease.
	Assignments int
	// ExcusedAssigned counts identity conflicts after the controller
	// wrote the Lease naming the identity (an open finding).
	ExcusedAssigned int
	// HungReturns counts works that returned past the safety margin
	// after their cancellation, counted as disturbances (their process
	// campaigns only then).
	HungReturns int
	Requests    int
	// BusiestMinute is the most requests one incarnation not caught
	// looping sent in one virtual minute; Budget the most allowed.
	BusiestMinute, Budget int
	FaultsRun             map[Kind]int
	Wall                  time.Duration

	history []entry
	onOp    func(w *world, f Fault) // the Options' test hook, for Shrink
}

// Failed reports whether any invariant failed.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

// Run runs plan p in a synctest bubble and returns what it found.
// Goroutines left behind when the world ends are a violation (synctest
// reports them as a deadlock, recovered here).
func Run(t *testing.T, p Plan, o Options) *Result {
	res := &Result{Plan: p, FaultsRun: map[Kind]int{}, onOp: o.onOp}
	o.progress = new(atomic.Int64)
	o.progress.Store(-1)
	if o.StuckAfter == 0 {
		o.StuckAfter = time.Minute
	}
	hist := &history{}
	stop := make(chan struct{})
	go watchdog(p, o, hist, stop)
	wall := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				msg := fmt.Sprint(r)
				if !strings.HasPrefix(msg, "deadlock") {
					panic(r)
				}
				res.Violations = append(res.Violations, Violation{At: time.Duration(o.progress.Load()), Kind: VLeak, Sig: VLeak, Who: "-",
					Msg: "synctest: " + msg + "\n" + bubbleStacks()})
			}
		}()
		synctest.Test(t, func(*testing.T) {
			if p.World == WorldShard {
				newShardWorld(p, o, res, hist).run()
				return
			}
			w := newWorld(p, o, res, hist)
			w.run()
		})
	}()
	close(stop)
	res.Wall = time.Since(wall)
	res.history = hist.entries()
	return res
}

// watchdog declares the run stuck when virtual time has not moved for
// StuckAfter of real time: some goroutine loops without blocking, so the
// bubble's clock cannot advance.
func watchdog(p Plan, o Options, hist *history, stop <-chan struct{}) {
	tick := time.NewTicker(min(time.Second, o.StuckAfter/4))
	defer tick.Stop()
	last, since := int64(-2), time.Now()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if v := o.progress.Load(); v != last {
			last, since = v, time.Now()
			continue
		}
		if time.Since(since) < o.StuckAfter {
			continue
		}
		var b strings.Builder
		at := time.Duration(last)
		fmt.Fprintf(&b, "sim: seed %d: %s: virtual time has stood still at %s for %v of real time: a goroutine loops without blocking\n",
			p.Seed, VStuck, fmtDur(at), o.StuckAfter)
		fmt.Fprintf(&b, "replay: %s\n", ReplayCommand(p, nil, ""))
		fmt.Fprintf(&b, "history around it:\n")
		writeHistory(&b, hist.entries(), at-2*p.Timings.LeaderBound(), at+time.Second)
		buf := make([]byte, 1<<22)
		b.Write(buf[:runtime.Stack(buf, true)])
		if o.OnStuck != nil {
			o.OnStuck(b.String())
			return
		}
		fmt.Fprint(os.Stderr, b.String())
		os.Exit(3)
	}
}

var bubbleRE = regexp.MustCompile(`synctest bubble (\d+)`)

// bubbleStacks returns the stacks of the goroutines of the newest
// synctest bubble: those a deadlocked world left behind.
func bubbleStacks() string {
	buf := make([]byte, 1<<22)
	all := string(buf[:runtime.Stack(buf, true)])
	newest := 0
	for _, m := range bubbleRE.FindAllStringSubmatch(all, -1) {
		if n, _ := strconv.Atoi(m[1]); n > newest {
			newest = n
		}
	}
	var b strings.Builder
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, fmt.Sprintf("synctest bubble %d]", newest)) || strings.Contains(g, fmt.Sprintf("synctest bubble %d,", newest)) {
			b.WriteString(g + "\n\n")
		}
	}
	return b.String()
}

// ReplayCommand is the command that runs plan p again; kept lists the
// faults of the seed's plan it keeps (nil: all). With a violation's kind
// or signature, the command runs the world up to 20 times until it fails
// that way: the schedule is the seed's, but interleavings at one virtual
// instant (and the library's jitter) vary from run to run.
func ReplayCommand(p Plan, kept []int, kind string) string {
	cmd := fmt.Sprintf("cd test && go run ./cmd/sim -start %d -seeds 1 -candidates %d -duration %v", p.Seed, p.Candidates, p.Horizon)
	if p.World != "" {
		cmd = strings.Replace(cmd, " -candidates ", " -world "+p.World+" -candidates ", 1)
	}
	if p.World == "" && p.Coordinated != drawnCoordinated(p.Seed) {
		cmd += fmt.Sprintf(" -coordinated=%v", p.Coordinated)
	}
	if p.CtrlPrefersAssigned {
		cmd += " -prefer-assigned"
	}
	if p.Strict {
		cmd += " -strict"
	}
	if p.Duration < p.Horizon {
		cmd += fmt.Sprintf(" -until %v", p.Duration)
	}
	if kept != nil {
		s := make([]string, len(kept))
		for i, k := range kept {
			s[i] = strconv.Itoa(k)
		}
		keep := strings.Join(s, ",")
		if keep == "" {
			keep = "none"
		}
		cmd += " -keep " + keep
	}
	if kind != "" {
		if strings.ContainsAny(kind, "[ ") {
			kind = "'" + kind + "'"
		}
		cmd += " -repeat 20 -want " + kind
	}
	return cmd
}

// Shrink looks for a shorter schedule that still fails like res (a
// violation of the same kind as its first). It re-runs the seed's world
// with reduced schedules: first cut short after the violation, without
// the faults after it; then with only the faults of the shortest window
// before the violation that still fails (30s, 1m, 2m, ...); then without
// each remaining fault, one at a time, keeping every drop after which it
// still fails. Interleavings at one virtual instant vary from run to run,
// so a reduced schedule runs up to tries times before it counts as
// passing. It returns the smallest failing result.
func Shrink(t *testing.T, full Plan, res *Result, tries int, logf func(string, ...any)) *Result {
	if !res.Failed() {
		return res
	}
	sig := res.Violations[0].Sig
	at := res.Violations[0].At
	fails := func(keep []int, dur time.Duration) *Result {
		p := full.Keep(keep)
		p.Duration = dur
		for range max(1, tries) {
			r := Run(t, p, Options{StopOn: sig, onOp: res.onOp})
			r.Kept = slices.Clone(keep)
			if i := slices.IndexFunc(r.Violations, func(v Violation) bool { return v.Sig == sig }); i >= 0 {
				// Report the failure shrunk for first.
				v := r.Violations[i]
				r.Violations = append([]Violation{v}, slices.Delete(r.Violations, i, i+1)...)
				return r
			}
		}
		return nil
	}
	cur := res.Kept
	if cur == nil {
		for i := range full.Faults {
			cur = append(cur, i)
		}
	}
	best := res
	// Nothing after the violation caused it.
	dur := min(full.Duration, at+full.Timings.LeaderBound()+full.Timings.RunBound())
	before := slices.DeleteFunc(slices.Clone(cur), func(i int) bool { return full.Faults[i].At > at })
	if r := fails(before, dur); r != nil {
		cur, best = before, r
		logf("shrink: the %d faults up to the violation still fail", len(cur))
	} else {
		dur = full.Duration
	}
	// The shortest window of faults before the violation that fails.
	for win := 30 * time.Second; win < at; win *= 2 {
		in := slices.DeleteFunc(slices.Clone(cur), func(i int) bool { return full.Faults[i].At < at-win })
		if len(in) == len(cur) {
			break
		}
		if r := fails(in, dur); r != nil {
			logf("shrink: the %d faults of the last %v before the violation still fail", len(in), win)
			cur, best = in, r
			break
		}
	}
	for i := len(cur) - 1; i >= 0; i-- {
		try := slices.Delete(slices.Clone(cur), i, i+1)
		if r := fails(try, dur); r != nil {
			logf("shrink: without fault #%d (%s): still fails, %d left", cur[i], full.Faults[cur[i]], len(try))
			cur, best = try, r
		}
	}
	best.Plan.Duration = dur
	return best
}

// Report writes a failed result: its violations, schedule, replay command
// and the history around the first violation.
func (r *Result) Report(w io.Writer) {
	p := r.Plan
	fmt.Fprintf(w, "seed %d: %d candidates, %v, %s; Rejoin %v, ReleaseOnCancel %v, same identity on restart %v, restart after %v, clock skew %v\n",
		p.Seed, p.Candidates, p.Duration, p.Timings, p.Rejoin, p.ReleaseOnCancel, p.SameIdentity, p.RestartAfter, p.Skew)
	if p.World == WorldShard {
		fmt.Fprintf(w, "shard world: %d members of one group, K=%d shards\n", p.Candidates, p.Shards)
	}
	if p.Coordinated {
		fmt.Fprintf(w, "coordinated election: the election controller's clock is set %v from true time, waits %v for pings; %d assignments; no-leader bound %v\n",
			p.CtrlSkew, p.CtrlWait, r.Assignments, p.leaderBound())
	}
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  VIOLATION %s\n", v)
	}
	fmt.Fprintf(w, "schedule (%d faults):\n", len(p.Faults))
	for i, f := range p.Faults {
		idx := i
		if r.Kept != nil {
			idx = r.Kept[i]
		}
		fmt.Fprintf(w, "  #%-3d %s\n", idx, f)
	}
	kind := ""
	if len(r.Violations) > 0 {
		kind = r.Violations[0].Sig
	}
	fmt.Fprintf(w, "replay: %s\n", ReplayCommand(p, r.Kept, kind))
	if len(r.Violations) > 0 {
		at := r.Violations[0].At
		fmt.Fprintf(w, "history from %s to %s (with every operation):\n", fmtDur(max(0, at-2*p.Timings.LeaderBound())), fmtDur(at+2*time.Second))
		writeHistory(w, r.history, at-2*p.Timings.LeaderBound(), at+2*time.Second)
	}
}

// WriteHistory writes the whole history of the run.
func (r *Result) WriteHistory(w io.Writer) {
	writeHistory(w, r.history, 0, r.Simulated+time.Hour)
}

// String summarizes the result on one line.
func (r *Result) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "seed %d: %v simulated, %d faults, %d requests, %d checks, %d violations, %v wall",
		r.Plan.Seed, r.Simulated.Round(time.Second), len(r.Plan.Faults), r.Requests, r.Checks, len(r.Violations), r.Wall.Round(time.Millisecond))
	return b.String()
}
