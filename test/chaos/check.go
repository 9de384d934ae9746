package chaos

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leasehold/leasehold/test/walkthrough"
)

// Interval is one term's work in one candidate incarnation, from START to
// END as the harness received them (walkthrough.Event.Recv: the harness's
// own monotonic clock, the one it stamps signals and kills with); or to
// its SIGKILL.
type Interval struct {
	Proc       string
	Inc        int
	Key        string // "" for the election; the shard in ModeShard
	Start, End time.Time
	Killed     bool // closed by SIGKILL
	Open       bool // never ended
}

// PauseOverlap is an overlap explained by a SIGSTOP: the paused leader
// could not stop its work while stopped; a new leader started meanwhile,
// legally (see Check).
type PauseOverlap struct {
	Paused, Next string
	Key          string        // the shard, in ModeShard
	Window       time.Duration // from Next's START to the paused one's END
	Pause        time.Duration // how long it was stopped
	StopToStart  time.Duration // from SIGSTOP to Next's START
	ResumeToEnd  time.Duration // running time from SIGCONT to its END, later pauses of the same process left out
}

// PauseRule is when an overlap during a SIGSTOP is excused, from the
// run's timings L, D, P (LeaseDuration, RenewDeadline, RetryPeriod).
//
// The paused leader renewed successfully within D before SIGSTOP (else it
// would have stopped its work itself), and a follower takes over no
// earlier than L after it saw that renewal: so no follower may start
// before Stop + (L - D), and a pause shorter than the safety margin
// L - D - P cannot legally let anyone in. The resumed leader's work must
// end within Promptly of SIGCONT (the elector checks its clock first), and
// the follower must have started before SIGCONT + Late.
type PauseRule struct {
	MinPause   time.Duration // L - D - P
	EarliestAt time.Duration // L - D, after SIGSTOP
	Promptly   time.Duration
	Late       time.Duration
}

// NewPauseRule returns the rule for timings t.
func NewPauseRule(t Timings) PauseRule {
	return PauseRule{
		MinPause:   t.LeaseDuration - t.RenewDeadline - t.RetryPeriod,
		EarliestAt: t.LeaseDuration - t.RenewDeadline,
		Promptly:   time.Second,
		Late:       250 * time.Millisecond,
	}
}

// Gap is a time with nobody working.
type Gap struct {
	Key        string // the shard, in ModeShard
	Start, End time.Time
	Raw        time.Duration // End - Start
	AfterHeal  time.Duration // the part after the fault in effect healed
	Fault      int           // that fault's index, 0 if none
	Kind       Kind
}

// Report is the checker's verdict on a Record.
type Report struct {
	Rec      *Record
	Duration time.Duration
	Timings  Timings   // L, D, P of the run
	Pause    PauseRule // derived from Timings

	Faults         map[Kind]int
	FaultsOnLeader map[Kind]int

	Intervals                         []Interval
	Terms                             int
	KilledOpen                        int
	FirstTransitions, LastTransitions int32

	Overlaps      []string // (a): overlaps not explained by a pause
	PauseOverlaps []PauseOverlap
	GapBound      time.Duration
	LongestRaw    Gap
	LongestHealed Gap
	GapViolations []string  // (b)
	Pairing       []string  // (c)
	Transitions   []string  // (d)
	Yields        []string  // (e)
	Compactions   []string  // (f)
	Stale         []string  // (g) stale writes the API server admitted
	FencedWrites  int       // fenced writes admitted
	Refused       int       // fenced writes the API server refused
	Handoffs      []Handoff // one per yield request
	Gone          int64     // real 410 Gone answers the candidates got
	GoneByKind    map[Kind]int64
	Lost          []string      // event lines lost or unreadable
	Problems      []string      // liveness and harness problems, unexpected exits
	MaxLag        time.Duration // longest delivery lag of an event line (Recv's wall time - At)

	Failures []string
}

// Handoff is what followed one yield request.
type Handoff struct {
	Fault   int
	Kind    Kind
	From    string        // the leader asked to yield
	To      string        // the named successor; "" for anyone
	Next    string        // who started next
	Latency time.Duration // from the request to the next START
	// Released: the Lease was released naming To; else the request found
	// the term ending another way, and is not judged.
	Released bool
}

// OK reports whether every check passed.
func (r *Report) OK() bool { return len(r.Failures) == 0 }

// Check judges a run, on the harness's clock (events as received):
//
//	(a) no two candidates' work intervals overlap, except where the earlier
//	    one's process was SIGSTOPped for at least L - D - P, the later one
//	    started no earlier than SIGSTOP + (L - D) and before SIGCONT + 250ms,
//	    and the paused work ended within 1s of SIGCONT (see PauseRule;
//	    reported as pause windows);
//	(b) every leaderless gap, counted from the heal of the fault in effect,
//	    is at most LeaseDuration + RetryPeriod + 1s;
//	(c) per incarnation, terms go START, END, OSL (OnStoppedLeading), with
//	    a SIGKILL allowed to cut one short, and none left open;
//	(d) the Lease's leaseTransitions strictly increases from term to term
//	    (each START matched to the Lease version that made it leader) and
//	    never decreases;
//	(e) after a yield to a named follower (Elector.Yield or the
//	    preferred-holder annotation), the next term is that follower's;
//	(f) with --watch-cache=false, every etcd compaction brings at least
//	    one real 410 Gone to the candidates;
//	(g) in ModeFenced, every write of the fenced object the API server
//	    admitted carries the stamp of the Lease's term at that point of
//	    etcd's history (no stale write admitted), pause windows included;
//
// In ModeShard, (a), (b) and (c) hold shard by shard (a term is one run
// of one shard) and (d) does not apply.
//
// and that no event line was lost: every stdout line of a candidate was
// an event, whole, and each incarnation that exited cleanly wrote EXIT
// last.
func Check(rec *Record) *Report {
	t := rec.Config.Timings
	r := &Report{
		Rec: rec, Duration: rec.Ended.Sub(rec.Began),
		Timings: t, Pause: NewPauseRule(t),
		Faults: map[Kind]int{}, FaultsOnLeader: map[Kind]int{}, GoneByKind: map[Kind]int64{},
		GapBound: t.LeaseDuration + t.RetryPeriod + time.Second,
	}
	if t.LeaseDuration <= 0 || t.RenewDeadline <= 0 || t.RetryPeriod <= 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("the record has no timings (%+v): pauses cannot be judged", t))
	}
	r.Lost = append(r.Lost, rec.LostEvents...)
	for _, f := range rec.Faults {
		r.Faults[f.Kind]++
		if f.WasLeader {
			r.FaultsOnLeader[f.Kind]++
		}
		r.Gone += f.Gone
		r.GoneByKind[f.Kind] += f.Gone
	}
	r.intervals()
	r.overlaps()
	r.gaps()
	if rec.Config.Mode != ModeShard {
		r.transitions()
	}
	r.yields()
	r.compactions()
	r.stale()
	for _, e := range rec.Exits {
		if !e.Expected {
			r.Problems = append(r.Problems, fmt.Sprintf("%s (incarnation %d) exited on its own: %s", e.Proc, e.Inc, e.Status))
		} else if e.Status != "0" && !r.killed(e.Proc, e.Inc) {
			r.Problems = append(r.Problems, fmt.Sprintf("%s (incarnation %d) exited with %s after SIGINT, want 0", e.Proc, e.Inc, e.Status))
		}
	}
	r.Problems = append(r.Problems, rec.Problems...)

	add := func(check string, list []string) {
		for _, s := range list {
			r.Failures = append(r.Failures, check+": "+s)
		}
	}
	add("(a) overlap", r.Overlaps)
	add("(b) gap", r.GapViolations)
	add("(c) pairing", r.Pairing)
	add("(d) transitions", r.Transitions)
	add("(e) yield", r.Yields)
	add("(f) compaction", r.Compactions)
	add("(g) stale write", r.Stale)
	add("events", r.Lost)
	add("liveness", r.Problems)
	return r
}

func (r *Report) killed(proc string, inc int) bool {
	for _, k := range r.Rec.Kills {
		if k.Proc == proc && k.Inc == inc {
			return true
		}
	}
	return false
}

type incKey struct {
	proc string
	inc  int
}

// intervals builds the work intervals and checks (c), per incarnation
// and key (the election, or each shard).
func (r *Report) intervals() {
	rec := r.Rec
	kills := map[incKey]time.Time{}
	for _, k := range rec.Kills {
		kills[incKey{k.Proc, k.Inc}] = k.At
	}
	byInc := map[incKey][]walkthrough.Event{}
	var keys []incKey
	for _, e := range rec.Events {
		k := incKey{e.Proc, e.Inc}
		if _, ok := byInc[k]; !ok {
			keys = append(keys, k)
		}
		byInc[k] = append(byInc[k], e)
	}
	exited := map[incKey]bool{}
	const idle, working, ended = 0, 1, 2
	type term struct {
		state int
		start time.Time
	}
	for _, k := range keys {
		terms := map[string]*term{}
		var order []string
		get := func(key string) *term {
			t, ok := terms[key]
			if !ok {
				t = &term{}
				terms[key] = t
				order = append(order, key)
			}
			return t
		}
		bad := func(key, format string, args ...any) {
			what := fmt.Sprintf("%s#%d", k.proc, k.inc)
			if key != "" {
				what += " shard " + key
			}
			r.Pairing = append(r.Pairing, what+": "+fmt.Sprintf(format, args...))
		}
		for _, e := range byInc[k] {
			at := e.Recv
			if at.IsZero() {
				r.Lost = append(r.Lost, fmt.Sprintf("%s#%d: %s event without a receipt time", k.proc, k.inc, e.Kind))
				continue
			}
			if lag := at.Round(0).Sub(e.At); lag > r.MaxLag {
				r.MaxLag = lag
			}
			if exited[k] {
				r.Lost = append(r.Lost, fmt.Sprintf("%s#%d: %s at %s after its EXIT", k.proc, k.inc, e.Kind, ts(at)))
			}
			key := eventKey(e)
			switch e.Kind {
			case "START":
				t := get(key)
				switch t.state {
				case working:
					bad(key, "START at %s while a term's work was running", ts(at))
				case ended:
					bad(key, "START at %s before OnStoppedLeading of the previous term", ts(at))
				}
				t.state, t.start = working, at
			case "END":
				t := get(key)
				if t.state != working {
					bad(key, "END at %s without a START", ts(at))
					continue
				}
				r.Intervals = append(r.Intervals, Interval{Proc: k.proc, Inc: k.inc, Key: key, Start: t.start, End: at})
				t.state = ended
			case "OSL":
				t := get(key)
				switch t.state {
				case idle:
					bad(key, "OnStoppedLeading at %s without a term", ts(at))
				case working:
					bad(key, "OnStoppedLeading at %s before the work returned", ts(at))
				}
				t.state = idle
			case "EXIT":
				exited[k] = true
				for _, key := range order {
					if t := terms[key]; t.state != idle {
						bad(key, "exited at %s with a term not finished (state %d)", ts(at), t.state)
					}
				}
			}
		}
		for _, key := range order {
			t := terms[key]
			if t.state != working {
				continue
			}
			if at, ok := kills[k]; ok {
				r.Intervals = append(r.Intervals, Interval{Proc: k.proc, Inc: k.inc, Key: key, Start: t.start, End: at, Killed: true})
				r.KilledOpen++
			} else {
				bad(key, "term started at %s never ended", ts(t.start))
				r.Intervals = append(r.Intervals, Interval{Proc: k.proc, Inc: k.inc, Key: key, Start: t.start, End: rec.Ended, Open: true})
			}
		}
	}
	// A clean exit runs the candidate's deferred EXIT line: without it,
	// the incarnation's last lines were lost.
	for _, x := range rec.Exits {
		if x.Status == "0" && !exited[incKey{x.Proc, x.Inc}] {
			r.Lost = append(r.Lost, fmt.Sprintf("%s#%d exited with status 0 at %s but its EXIT line never arrived", x.Proc, x.Inc, ts(x.At)))
		}
	}
	slices.SortFunc(r.Intervals, func(a, b Interval) int { return a.Start.Compare(b.Start) })
	r.Terms = len(r.Intervals)
}

// byKey returns the intervals of each key, each in START order.
func (r *Report) byKey() (map[string][]Interval, []string) {
	m := map[string][]Interval{}
	var keys []string
	for _, iv := range r.Intervals {
		if _, ok := m[iv.Key]; !ok {
			keys = append(keys, iv.Key)
		}
		m[iv.Key] = append(m[iv.Key], iv)
	}
	slices.SortFunc(keys, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return m, keys
}

// overlaps checks (a), key by key.
func (r *Report) overlaps() {
	m, keys := r.byKey()
	for _, k := range keys {
		r.overlapsOf(m[k])
	}
}

func (r *Report) overlapsOf(ivs []Interval) {
	rule := r.Pause
	for i, a := range ivs {
		for _, b := range ivs[i+1:] {
			if !b.Start.Before(a.End) {
				break // sorted by START: no later one starts before a's END
			}
			if a.Proc == b.Proc && a.Inc == b.Inc {
				continue // reported by (c)
			}
			excused, why := false, ""
			for _, p := range r.Rec.Pauses {
				if p.Proc != a.Proc || p.Inc != a.Inc || !p.Stop.After(a.Start) || !p.Stop.Before(b.Start) {
					continue
				}
				pause, stopToStart := p.Cont.Sub(p.Stop), b.Start.Sub(p.Stop)
				switch {
				case b.Start.After(p.Cont.Add(rule.Late)):
					continue // a had resumed well before b started
				case pause < rule.MinPause:
					why = fmt.Sprintf(" (%s#%d was paused %s..%s, %v: shorter than L-D-P = %v, too short for a legal takeover)",
						a.Proc, a.Inc, ts(p.Stop), ts(p.Cont), pause, rule.MinPause)
				case stopToStart < rule.EarliestAt:
					why = fmt.Sprintf(" (%s#%d was paused %s..%s; %s started %v after SIGSTOP, before L-D = %v: an early takeover)",
						a.Proc, a.Inc, ts(p.Stop), ts(p.Cont), b.Proc, stopToStart, rule.EarliestAt)
				case r.running(a.Proc, a.Inc, p.Cont, a.End) > rule.Promptly:
					why = fmt.Sprintf(" (%s#%d was paused %s..%s and its work ran on %v after SIGCONT%s, more than %v)",
						a.Proc, a.Inc, ts(p.Stop), ts(p.Cont), r.running(a.Proc, a.Inc, p.Cont, a.End), r.stoppedNote(a.Proc, a.Inc, p.Cont, a.End), rule.Promptly)
				default:
					r.PauseOverlaps = append(r.PauseOverlaps, PauseOverlap{
						Paused: a.Proc, Next: b.Proc, Key: a.Key, Window: earlier(a.End, b.End).Sub(b.Start),
						Pause: pause, StopToStart: stopToStart, ResumeToEnd: r.running(a.Proc, a.Inc, p.Cont, a.End),
					})
					excused = true
				}
				break
			}
			if excused {
				continue
			}
			for _, p := range r.Rec.Pauses {
				if p.Proc == b.Proc && p.Inc == b.Inc && p.Cont.Before(b.Start) && b.Start.Sub(p.Cont) < r.Timings.LeaseDuration {
					why += fmt.Sprintf(" (%s had been paused %s..%s, %v before its START)", b.Proc, ts(p.Stop), ts(p.Cont), b.Start.Sub(p.Cont))
				}
			}
			shard := ""
			if a.Key != "" {
				shard = "shard " + a.Key + ": "
			}
			r.Overlaps = append(r.Overlaps, fmt.Sprintf("%s%s#%d worked %s..%s; %s#%d started at %s: %v of overlap%s",
				shard, a.Proc, a.Inc, ts(a.Start), ts(a.End), b.Proc, b.Inc, ts(b.Start), earlier(a.End, b.End).Sub(b.Start), why))
		}
	}
}

// stopped is how long incarnation proc#inc spent SIGSTOPped between from
// and to.
func (r *Report) stopped(proc string, inc int, from, to time.Time) time.Duration {
	var d time.Duration
	for _, p := range r.Rec.Pauses {
		if p.Proc != proc || p.Inc != inc {
			continue
		}
		if s, e := later(p.Stop, from), earlier(p.Cont, to); e.After(s) {
			d += e.Sub(s)
		}
	}
	return d
}

// running is how long incarnation proc#inc could run between from and
// to: the wall time less any later SIGSTOP. A leader resumed and stopped
// again a few milliseconds later has had those milliseconds, not the
// second pause, to notice that its term is over.
func (r *Report) running(proc string, inc int, from, to time.Time) time.Duration {
	return to.Sub(from) - r.stopped(proc, inc, from, to)
}

// stoppedNote names the time running leaves out, if any.
func (r *Report) stoppedNote(proc string, inc int, from, to time.Time) string {
	if d := r.stopped(proc, inc, from, to); d > 0 {
		return fmt.Sprintf(" not counting %v stopped again", d)
	}
	return ""
}

// gaps checks (b): leaderless time between the first term and shutdown,
// key by key.
func (r *Report) gaps() {
	if len(r.Intervals) == 0 {
		r.GapViolations = append(r.GapViolations, "nobody ever led")
		return
	}
	m, keys := r.byKey()
	if n := r.Rec.Config.Shards; r.Rec.Config.Mode == ModeShard && len(keys) < n {
		r.GapViolations = append(r.GapViolations, fmt.Sprintf("only %d of %d shards ever ran", len(keys), n))
	}
	for _, k := range keys {
		r.gapsOf(k, m[k])
	}
}

func (r *Report) gapsOf(key string, ivs []Interval) {
	rec := r.Rec
	cover := ivs[0].End
	for _, iv := range ivs[1:] {
		if iv.Start.After(cover) && !iv.Start.After(rec.ShutdownAt) {
			g := Gap{Key: key, Start: cover, End: iv.Start, Raw: iv.Start.Sub(cover)}
			g.AfterHeal = g.Raw
			for _, f := range rec.Faults {
				if f.Start.IsZero() || f.Start.After(g.End) {
					continue
				}
				g.Fault, g.Kind = f.Index, f.Kind
				switch {
				case !f.Heal.Before(g.End):
					g.AfterHeal = 0 // still in effect
				case f.Heal.After(g.Start):
					g.AfterHeal = g.End.Sub(f.Heal)
				default:
					g.AfterHeal = g.Raw
				}
			}
			if g.Raw > r.LongestRaw.Raw {
				r.LongestRaw = g
			}
			if g.AfterHeal > r.LongestHealed.AfterHeal {
				r.LongestHealed = g
			}
			if g.AfterHeal > r.GapBound {
				shard := ""
				if key != "" {
					shard = "shard " + key + ": "
				}
				r.GapViolations = append(r.GapViolations, fmt.Sprintf("%snobody worked %s..%s: %v after fault %d (%s) healed, bound %v",
					shard, ts(g.Start), ts(g.End), g.AfterHeal, g.Fault, g.Kind, r.GapBound))
			}
		}
		if iv.End.After(cover) {
			cover = iv.End
		}
	}
}

// yields checks (e) and measures each yield's handoff. A request is
// judged only if it was carried out: the Lease's history shows, after the
// request, a release (no holder) naming the requested successor ("" or
// "*" for anyone), before any other holder. A request that found the
// term ending another way (its renew deadline passing) is counted, not
// judged.
func (r *Report) yields() {
	for _, f := range r.Rec.Faults {
		if f.Kind != KindYield && f.Kind != KindAnnotate || !f.WasLeader {
			continue
		}
		h := Handoff{Fault: f.Index, Kind: f.Kind, From: f.Target, To: f.To}
		for _, iv := range r.Intervals {
			if iv.Key == "" && iv.Start.After(f.Start) {
				h.Next, h.Latency = iv.Proc, iv.Start.Sub(f.Start)
				break
			}
		}
		h.Released = r.releasedTo(f)
		r.Handoffs = append(r.Handoffs, h)
		switch {
		case h.Next == "":
			r.Yields = append(r.Yields, fmt.Sprintf("fault %d (%s from %s): nobody led after it", f.Index, f.Kind, f.Target))
		case h.Released && h.To != "" && h.Next != h.To:
			r.Yields = append(r.Yields, fmt.Sprintf("fault %d (%s from %s to %s): %s started next, %v later", f.Index, f.Kind, f.Target, f.To, h.Next, h.Latency))
		}
	}
}

// releasedTo reports whether the Lease was released after f's request
// naming f.To, before it had another holder.
func (r *Report) releasedTo(f Injected) bool {
	for _, v := range r.Rec.Lease {
		if v.Seen.Before(f.Start) || v.Deleted {
			continue
		}
		if v.Holder != "" {
			if v.Holder == f.Target {
				continue // still the yielder's, renewing until its work returns
			}
			return false
		}
		want := f.To
		got := v.Preferred
		if got == "*" {
			got = ""
		}
		return want == got
	}
	return false
}

// compactions checks (f).
func (r *Report) compactions() {
	if !r.Rec.Config.WatchCacheOff {
		return
	}
	for _, f := range r.Rec.Faults {
		if f.Kind == KindCompact && f.Gone == 0 {
			r.Compactions = append(r.Compactions, fmt.Sprintf("fault %d compacted etcd to revision %d, and no candidate got a 410 Gone", f.Index, f.Revision))
		}
	}
}

// transitions checks (d).
func (r *Report) transitions() {
	rec := r.Rec
	var prev *LeaseVersion
	first := true
	for i := range rec.Lease {
		v := &rec.Lease[i]
		if v.Deleted {
			continue
		}
		if first {
			r.FirstTransitions, first = v.Transitions, false
		}
		if prev != nil && v.Transitions < prev.Transitions {
			r.Transitions = append(r.Transitions, fmt.Sprintf("leaseTransitions went from %d (rv %s) down to %d (rv %s)", prev.Transitions, prev.RV, v.Transitions, v.RV))
		}
		r.LastTransitions = v.Transitions
		prev = v
	}
	last, lastWho := int32(-1), ""
	for _, iv := range r.Intervals {
		var match *LeaseVersion
		for i := range rec.Lease {
			v := &rec.Lease[i]
			if v.Deleted || v.Holder != iv.Proc || v.Acquire.After(iv.Start) {
				continue
			}
			if match == nil || !v.Acquire.Before(match.Acquire) {
				match = v
			}
		}
		if match == nil {
			r.Transitions = append(r.Transitions, fmt.Sprintf("no Lease version names %s as holder with an acquireTime before its START at %s", iv.Proc, ts(iv.Start)))
			continue
		}
		if match.Transitions <= last {
			r.Transitions = append(r.Transitions, fmt.Sprintf("term of %s#%d (START %s) has leaseTransitions %d, not above the previous term's (%s: %d)",
				iv.Proc, iv.Inc, ts(iv.Start), match.Transitions, lastWho, last))
		}
		last, lastWho = match.Transitions, iv.Proc
	}
}

func ts(t time.Time) string { return t.Format("15:04:05.000000") }

// Print writes the report for humans, then a markdown block for the
// Reliability page (docs/reliability.md).
func (r *Report) Print(w io.Writer) {
	rec := r.Rec
	c := rec.Config
	t := c.Timings
	total := 0
	var kinds []string
	for _, k := range Kinds {
		if n := r.Faults[k]; n > 0 {
			total += n
			kinds = append(kinds, fmt.Sprintf("%s %d (%d on the leader)", k, n, r.FaultsOnLeader[k]))
		}
	}
	fmt.Fprintf(w, "\n== chaos report: mode %s, seed %d, %d candidates, %d kube-apiserver(s), LeaseDuration %v, RenewDeadline %v, RetryPeriod %v, took %v\n",
		r.mode(), c.Seed, c.N, max(c.APIServers, 1), t.LeaseDuration, t.RenewDeadline, t.RetryPeriod, r.Duration.Round(time.Second))
	fmt.Fprintf(w, "faults injected: %d: %s\n", total, strings.Join(kinds, ", "))
	if c.Mode == ModeShard {
		fmt.Fprintf(w, "shard runs (OnShardStarted) over %d shards: %d, %d of them cut short by SIGKILL\n", c.Shards, r.Terms, r.KilledOpen)
	} else {
		fmt.Fprintf(w, "terms (OnStartedLeading): %d, %d of them cut short by SIGKILL; leaseTransitions %d -> %d\n",
			r.Terms, r.KilledOpen, r.FirstTransitions, r.LastTransitions)
	}
	if down := r.downtimes(); len(down) > 0 {
		fmt.Fprintf(w, "control plane not answering, longest per kind: %s\n", strings.Join(down, ", "))
	}
	fmt.Fprintf(w, "real 410 Gone answers to the candidates (read at the proxies): %d%s\n", r.Gone, r.goneByKind())
	fmt.Fprintf(w, "(a) overlapping work not explained by a pause: %d\n", len(r.Overlaps))
	pw, pr := r.pauseMax()
	fmt.Fprintf(w, "    pause windows (a SIGSTOPped leader's work still 'running' when the next leader started): %d, longest %v; resumed leader's work ran at most %v after SIGCONT\n",
		len(r.PauseOverlaps), pw.Round(time.Millisecond), pr.Round(time.Millisecond))
	if len(r.PauseOverlaps) > 0 {
		pause, start := r.pauseMin()
		fmt.Fprintf(w, "    excused only if paused >= L-D-P = %v and the next START >= SIGSTOP + L-D = %v: shortest such pause %v, earliest such START %v after SIGSTOP\n",
			r.Pause.MinPause, r.Pause.EarliestAt, pause.Round(time.Millisecond), start.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "    times are the harness's, on receipt of each event line; longest delivery lag %v; lost or unreadable event lines: %d\n",
		r.MaxLag.Round(time.Microsecond), len(r.Lost))
	fmt.Fprintf(w, "(b) longest leaderless gap after a fault healed: %v (fault %d, %s; bound L+P+1s = %v); longest leaderless gap overall: %v (fault %d, %s)\n",
		r.LongestHealed.AfterHeal.Round(time.Millisecond), r.LongestHealed.Fault, r.LongestHealed.Kind, r.GapBound,
		r.LongestRaw.Raw.Round(time.Millisecond), r.LongestRaw.Fault, r.LongestRaw.Kind)
	fmt.Fprintf(w, "(c) START/END/OnStoppedLeading pairing violations: %d\n", len(r.Pairing))
	fmt.Fprintf(w, "(d) leaseTransitions violations: %d\n", len(r.Transitions))
	if len(r.Handoffs) > 0 {
		fmt.Fprintf(w, "(e) yields: %s; violations: %d\n", r.handoffSummary(), len(r.Yields))
	}
	if c.Mode == ModeFenced {
		fmt.Fprintf(w, "(g) fenced writes admitted: %d, of them stale (not the Lease's term at that revision): %d; stale writes refused by the API server: %d\n", r.FencedWrites, len(r.Stale), r.Refused)
	}
	if c.WatchCacheOff && r.Faults[KindCompact] > 0 {
		fmt.Fprintf(w, "(f) etcd compactions without a real 410: %d of %d\n", len(r.Compactions), r.Faults[KindCompact])
	}
	if len(rec.LeaseNotes) > 0 {
		fmt.Fprintf(w, "    lease watch notes: %s\n", strings.Join(counted(rec.LeaseNotes), "; "))
	}
	for _, id := range sortedIDs(rec.Proxies) {
		s := rec.Proxies[id]
		mean := time.Duration(0)
		if n := s.Watches.Load(); n > 0 {
			mean = time.Duration(s.WatchTime.Load() / n)
		}
		fmt.Fprintf(w, "    proxy %s: %d requests (%d watches, open %v on average), %d injected errors, %d resets, %d held, %d watches dropped, %d watch ERROR events (%d real 410s), %d moves\n",
			id, s.Requests.Load(), s.Watches.Load(), mean.Round(time.Millisecond), s.Injected.Load(), s.Resets.Load(), s.Held.Load(), s.DroppedWatches.Load(),
			s.WatchErrors.Load(), s.Gone.Load(), s.Moves.Load())
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAIL", f)
	}
	if r.OK() {
		fmt.Fprintln(w, "verdict: PASS")
	} else {
		fmt.Fprintf(w, "verdict: FAIL (%d)\n", len(r.Failures))
	}

	fmt.Fprintln(w, "\n```markdown")
	fmt.Fprintf(w, "| Chaos run (`make chaos`, mode %s, seed %d) | |\n|---|---|\n", r.mode(), c.Seed)
	what := "one Lease"
	if c.Mode == ModeShard {
		what = fmt.Sprintf("one shard group of K = %d shards", c.Shards)
	}
	servers := "real kube-apiserver + etcd"
	if c.APIServers > 1 {
		servers = fmt.Sprintf("%d real kube-apiservers on one etcd", c.APIServers)
	}
	if c.WatchCacheOff {
		servers += " (--watch-cache=false)"
	}
	fmt.Fprintf(w, "| Setup | %d candidate processes, %s, %s; each candidate behind its own fault-injecting proxy; L/D/P = %v/%v/%v |\n",
		c.N, what, servers, t.LeaseDuration, t.RenewDeadline, t.RetryPeriod)
	fmt.Fprintf(w, "| Faults injected | %d in %v, one at a time: %s |\n", total, r.Duration.Round(time.Second), strings.Join(kindsShort(r.Faults), ", "))
	if c.Mode == ModeShard {
		fmt.Fprintf(w, "| Shard runs | %d over %d shards |\n", r.Terms, c.Shards)
		fmt.Fprintf(w, "| Overlapping work (one shard in two members) | %d |\n", len(r.Overlaps))
	} else {
		fmt.Fprintf(w, "| Leadership terms | %d (leaseTransitions %d → %d, strictly increasing: %s) |\n", r.Terms, r.FirstTransitions, r.LastTransitions, yesNo(len(r.Transitions) == 0))
		fmt.Fprintf(w, "| Overlapping work (two leaders) | %d |\n", len(r.Overlaps))
	}
	if len(r.Handoffs) > 0 {
		fmt.Fprintf(w, "| Yields | %s |\n", r.handoffSummary())
	}
	if c.Mode == ModeFenced {
		fmt.Fprintf(w, "| Fenced writes (stamped, conditional updates of one ConfigMap) | %d admitted, %d stale admitted; %d refused by the API server (a deposed term's writes) |\n", r.FencedWrites, len(r.Stale), r.Refused)
	}
	if down := r.downtimes(); len(down) > 0 {
		fmt.Fprintf(w, "| Control plane not answering (longest) | %s |\n", strings.Join(down, ", "))
	}
	if r.Gone > 0 || r.Faults[KindCompact] > 0 {
		fmt.Fprintf(w, "| Real 410 Gone answers handled | %d%s |\n", r.Gone, r.goneByKind())
	}
	fmt.Fprintf(w, "| Pause windows (SIGSTOPped leader, cannot stop while stopped) | %d, longest %v; work ran ≤ %v after SIGCONT |\n",
		len(r.PauseOverlaps), pw.Round(time.Millisecond), pr.Round(time.Millisecond))
	fmt.Fprintf(w, "| Longest leaderless gap after a fault healed | %v (bound L+P+1s = %v) |\n", r.LongestHealed.AfterHeal.Round(time.Millisecond), r.GapBound)
	fmt.Fprintf(w, "| Longest leaderless gap overall | %v (%s) |\n", r.LongestRaw.Raw.Round(time.Millisecond), r.LongestRaw.Kind)
	fmt.Fprintf(w, "| Terms without exactly one OnStoppedLeading | %d (%d cut short by SIGKILL) |\n", len(r.Pairing), r.KilledOpen)
	fmt.Fprintln(w, "```")
}

func (r *Report) mode() string {
	if m := r.Rec.Config.Mode; m != "" {
		return m
	}
	return ModeElection
}

// downtimes lists, per control-plane kind, the longest time the control
// plane did not answer.
func (r *Report) downtimes() []string {
	longest := map[Kind]time.Duration{}
	for _, f := range r.Rec.Faults {
		longest[f.Kind] = max(longest[f.Kind], f.Down)
	}
	var out []string
	for _, k := range ControlPlaneKinds {
		if d, ok := longest[k]; ok && d > 0 {
			out = append(out, fmt.Sprintf("%s %v", k, d.Round(time.Millisecond)))
		}
	}
	return out
}

func (r *Report) goneByKind() string {
	var parts []string
	for _, k := range Kinds {
		if n := r.GoneByKind[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (after " + strings.Join(parts, ", ") + ")"
}

// handoffSummary sums up the yields: how many, how many went to the named
// follower, and the time from the request to the next START.
func (r *Report) handoffSummary() string {
	var lat []time.Duration
	named, toNamed, anyone, self, skipped := 0, 0, 0, 0, 0
	for _, h := range r.Handoffs {
		if h.Next == "" {
			continue
		}
		if !h.Released {
			skipped++
			continue
		}
		lat = append(lat, h.Latency)
		if h.To != "" {
			named++
			if h.Next == h.To {
				toNamed++
			}
		} else {
			anyone++
			if h.Next == h.From {
				self++
			}
		}
	}
	slices.Sort(lat)
	s := fmt.Sprintf("%d requests; to a named follower %d (%d taken by it), to anyone %d (%d retaken by the yielder); %d found the term ending another way", len(r.Handoffs), named, toNamed, anyone, self, skipped)
	if len(lat) > 0 {
		s += fmt.Sprintf("; request to next START p50 %v, max %v", lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	}
	return s
}

// pauseMin returns the shortest pause and the shortest SIGSTOP to next
// START of the pause windows (0 for none).
func (r *Report) pauseMin() (pause, start time.Duration) {
	for i, p := range r.PauseOverlaps {
		if i == 0 || p.Pause < pause {
			pause = p.Pause
		}
		if i == 0 || p.StopToStart < start {
			start = p.StopToStart
		}
	}
	return pause, start
}

func (r *Report) pauseMax() (window, resume time.Duration) {
	for _, p := range r.PauseOverlaps {
		window = max(window, p.Window)
		resume = max(resume, p.ResumeToEnd)
	}
	return
}

func kindsShort(m map[Kind]int) []string {
	var out []string
	for _, k := range Kinds {
		if n := m[k]; n > 0 {
			out = append(out, fmt.Sprintf("%s %d", k, n))
		}
	}
	return out
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sortedIDs[V any](m map[string]V) []string {
	var ids []string
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// counted lists each distinct note once, in first-seen order, with "(×n)"
// when it came n > 1 times.
func counted(notes []string) []string {
	n := map[string]int{}
	var order []string
	for _, s := range notes {
		if n[s] == 0 {
			order = append(order, s)
		}
		n[s]++
	}
	for i, s := range order {
		if n[s] > 1 {
			order[i] = fmt.Sprintf("%s (×%d)", s, n[s])
		}
	}
	return order
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
