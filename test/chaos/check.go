package chaos

import (
	"fmt"
	"io"
	"slices"
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
	Start, End time.Time
	Killed     bool // closed by SIGKILL
	Open       bool // never ended
}

// PauseOverlap is an overlap explained by a SIGSTOP: the paused leader
// could not stop its work while stopped; a new leader started meanwhile,
// legally (see Check).
type PauseOverlap struct {
	Paused, Next string
	Window       time.Duration // from Next's START to the paused one's END
	Pause        time.Duration // how long it was stopped
	StopToStart  time.Duration // from SIGSTOP to Next's START
	ResumeToEnd  time.Duration // from SIGCONT to its END
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
	GapViolations []string      // (b)
	Pairing       []string      // (c)
	Transitions   []string      // (d)
	Lost          []string      // event lines lost or unreadable
	Problems      []string      // liveness and harness problems, unexpected exits
	MaxLag        time.Duration // longest delivery lag of an event line (Recv's wall time - At)

	Failures []string
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
//
// and that no event line was lost: every stdout line of a candidate was
// an event, whole, and each incarnation that exited cleanly wrote EXIT
// last.
func Check(rec *Record) *Report {
	t := rec.Config.Timings
	r := &Report{
		Rec: rec, Duration: rec.Ended.Sub(rec.Began),
		Timings: t, Pause: NewPauseRule(t),
		Faults: map[Kind]int{}, FaultsOnLeader: map[Kind]int{},
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
	}
	r.intervals()
	r.overlaps()
	r.gaps()
	r.transitions()
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

// intervals builds the work intervals and checks (c).
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
	for _, k := range keys {
		const idle, working, ended = 0, 1, 2
		state := idle
		var start time.Time
		bad := func(format string, args ...any) {
			r.Pairing = append(r.Pairing, fmt.Sprintf("%s#%d: ", k.proc, k.inc)+fmt.Sprintf(format, args...))
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
			switch e.Kind {
			case "START":
				switch state {
				case working:
					bad("START at %s while a term's work was running", ts(at))
				case ended:
					bad("START at %s before OnStoppedLeading of the previous term", ts(at))
				}
				state, start = working, at
			case "END":
				if state != working {
					bad("END at %s without a START", ts(at))
					continue
				}
				r.Intervals = append(r.Intervals, Interval{Proc: k.proc, Inc: k.inc, Start: start, End: at})
				state = ended
			case "OSL":
				switch state {
				case idle:
					bad("OnStoppedLeading at %s without a term", ts(at))
				case working:
					bad("OnStoppedLeading at %s before the work returned", ts(at))
				}
				state = idle
			case "EXIT":
				exited[k] = true
				if state != idle {
					bad("exited at %s with a term not finished (state %d)", ts(at), state)
				}
			}
		}
		if state == working {
			if at, ok := kills[k]; ok {
				r.Intervals = append(r.Intervals, Interval{Proc: k.proc, Inc: k.inc, Start: start, End: at, Killed: true})
				r.KilledOpen++
			} else {
				bad("term started at %s never ended", ts(start))
				r.Intervals = append(r.Intervals, Interval{Proc: k.proc, Inc: k.inc, Start: start, End: rec.Ended, Open: true})
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

// overlaps checks (a).
func (r *Report) overlaps() {
	rule := r.Pause
	for i, a := range r.Intervals {
		for _, b := range r.Intervals[i+1:] {
			if !b.Start.Before(a.End) {
				continue
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
				case a.End.Sub(p.Cont) > rule.Promptly:
					why = fmt.Sprintf(" (%s#%d was paused %s..%s and its work ran on %v after SIGCONT, more than %v)",
						a.Proc, a.Inc, ts(p.Stop), ts(p.Cont), a.End.Sub(p.Cont), rule.Promptly)
				default:
					r.PauseOverlaps = append(r.PauseOverlaps, PauseOverlap{
						Paused: a.Proc, Next: b.Proc, Window: earlier(a.End, b.End).Sub(b.Start),
						Pause: pause, StopToStart: stopToStart, ResumeToEnd: a.End.Sub(p.Cont),
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
			r.Overlaps = append(r.Overlaps, fmt.Sprintf("%s#%d worked %s..%s; %s#%d started at %s: %v of overlap%s",
				a.Proc, a.Inc, ts(a.Start), ts(a.End), b.Proc, b.Inc, ts(b.Start), earlier(a.End, b.End).Sub(b.Start), why))
		}
	}
}

// gaps checks (b): leaderless time between the first term and shutdown.
func (r *Report) gaps() {
	rec := r.Rec
	if len(r.Intervals) == 0 {
		r.GapViolations = append(r.GapViolations, "nobody ever led")
		return
	}
	cover := r.Intervals[0].End
	for _, iv := range r.Intervals[1:] {
		if iv.Start.After(cover) && !iv.Start.After(rec.ShutdownAt) {
			g := Gap{Start: cover, End: iv.Start, Raw: iv.Start.Sub(cover)}
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
				r.GapViolations = append(r.GapViolations, fmt.Sprintf("nobody worked %s..%s: %v after fault %d (%s) healed, bound %v",
					ts(g.Start), ts(g.End), g.AfterHeal, g.Fault, g.Kind, r.GapBound))
			}
		}
		if iv.End.After(cover) {
			cover = iv.End
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
// README's Reliability section.
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
	fmt.Fprintf(w, "\n== chaos report: seed %d, %d candidates, LeaseDuration %v, RenewDeadline %v, RetryPeriod %v, took %v\n",
		c.Seed, c.N, t.LeaseDuration, t.RenewDeadline, t.RetryPeriod, r.Duration.Round(time.Second))
	fmt.Fprintf(w, "faults injected: %d: %s\n", total, strings.Join(kinds, ", "))
	fmt.Fprintf(w, "terms (OnStartedLeading): %d, %d of them cut short by SIGKILL; leaseTransitions %d -> %d\n",
		r.Terms, r.KilledOpen, r.FirstTransitions, r.LastTransitions)
	fmt.Fprintf(w, "(a) overlapping work not explained by a pause: %d\n", len(r.Overlaps))
	pw, pr := r.pauseMax()
	fmt.Fprintf(w, "    pause windows (a SIGSTOPped leader's work still 'running' when the next leader started): %d, longest %v; resumed leader's work ended at most %v after SIGCONT\n",
		len(r.PauseOverlaps), pw.Round(time.Millisecond), pr.Round(time.Millisecond))
	if len(r.PauseOverlaps) > 0 {
		fmt.Fprintf(w, "    excused only if paused >= L-D-P = %v and the next START >= SIGSTOP + L-D = %v: shortest such pause %v, earliest such START %v after SIGSTOP\n",
			r.Pause.MinPause, r.Pause.EarliestAt, r.pauseMin().Round(time.Millisecond), r.startMin().Round(time.Millisecond))
	}
	fmt.Fprintf(w, "    times are the harness's, on receipt of each event line; longest delivery lag %v; lost or unreadable event lines: %d\n",
		r.MaxLag.Round(time.Microsecond), len(r.Lost))
	fmt.Fprintf(w, "(b) longest leaderless gap after a fault healed: %v (fault %d, %s; bound L+P+1s = %v); longest leaderless gap overall: %v (fault %d, %s)\n",
		r.LongestHealed.AfterHeal.Round(time.Millisecond), r.LongestHealed.Fault, r.LongestHealed.Kind, r.GapBound,
		r.LongestRaw.Raw.Round(time.Millisecond), r.LongestRaw.Fault, r.LongestRaw.Kind)
	fmt.Fprintf(w, "(c) START/END/OnStoppedLeading pairing violations: %d\n", len(r.Pairing))
	fmt.Fprintf(w, "(d) leaseTransitions violations: %d\n", len(r.Transitions))
	if len(rec.LeaseNotes) > 0 {
		fmt.Fprintf(w, "    lease watch notes: %s\n", strings.Join(rec.LeaseNotes, "; "))
	}
	for _, id := range sortedIDs(rec.Proxies) {
		s := rec.Proxies[id]
		mean := time.Duration(0)
		if n := s.Watches.Load(); n > 0 {
			mean = time.Duration(s.WatchTime.Load() / n)
		}
		fmt.Fprintf(w, "    proxy %s: %d requests (%d watches, open %v on average), %d injected errors, %d resets, %d held, %d watches dropped\n",
			id, s.Requests.Load(), s.Watches.Load(), mean.Round(time.Millisecond), s.Injected.Load(), s.Resets.Load(), s.Held.Load(), s.DroppedWatches.Load())
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
	fmt.Fprintf(w, "| Chaos run (`make chaos`, seed %d) | |\n|---|---|\n", c.Seed)
	fmt.Fprintf(w, "| Setup | %d candidate processes, one Lease, real kube-apiserver + etcd; each candidate behind its own fault-injecting proxy; L/D/P = %v/%v/%v |\n",
		c.N, t.LeaseDuration, t.RenewDeadline, t.RetryPeriod)
	fmt.Fprintf(w, "| Faults injected | %d in %v, one at a time: %s |\n", total, r.Duration.Round(time.Second), strings.Join(kindsShort(r.Faults), ", "))
	fmt.Fprintf(w, "| Leadership terms | %d (leaseTransitions %d → %d, strictly increasing: %s) |\n", r.Terms, r.FirstTransitions, r.LastTransitions, yesNo(len(r.Transitions) == 0))
	fmt.Fprintf(w, "| Overlapping work (two leaders) | %d |\n", len(r.Overlaps))
	fmt.Fprintf(w, "| Pause windows (SIGSTOPped leader, cannot stop while stopped) | %d, longest %v; work ended ≤ %v after SIGCONT |\n",
		len(r.PauseOverlaps), pw.Round(time.Millisecond), pr.Round(time.Millisecond))
	fmt.Fprintf(w, "| Longest leaderless gap after a fault healed | %v (bound L+P+1s = %v) |\n", r.LongestHealed.AfterHeal.Round(time.Millisecond), r.GapBound)
	fmt.Fprintf(w, "| Longest leaderless gap overall | %v (%s) |\n", r.LongestRaw.Raw.Round(time.Millisecond), r.LongestRaw.Kind)
	fmt.Fprintf(w, "| Terms without exactly one OnStoppedLeading | %d (%d cut short by SIGKILL) |\n", len(r.Pairing), r.KilledOpen)
	fmt.Fprintln(w, "```")
}

func (r *Report) pauseMin() time.Duration {
	var m time.Duration
	for i, p := range r.PauseOverlaps {
		if i == 0 || p.Pause < m {
			m = p.Pause
		}
	}
	return m
}

func (r *Report) startMin() time.Duration {
	var m time.Duration
	for i, p := range r.PauseOverlaps {
		if i == 0 || p.StopToStart < m {
			m = p.StopToStart
		}
	}
	return m
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

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
