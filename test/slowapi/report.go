package slowapi

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Report is a whole run: every profile with every library.
type Report struct {
	Seed     uint64
	Duration time.Duration // virtual, per world
	Started  time.Time
	Wall     time.Duration
	Results  []*Result
	// Long, if set, is the same worlds run for longer, for the rates
	// too small to show in one hour; rendered after this run's results.
	Long *Report
}

// Result returns the result of one world, nil if it did not run.
func (r *Report) Result(profile string, lib Library) *Result {
	for _, res := range r.Results {
		if res.Profile == profile && res.Library == lib {
			return res
		}
	}
	return nil
}

func (r *Report) profiles() []Profile {
	var ps []Profile
	for _, p := range Profiles {
		if slices.ContainsFunc(r.Results, func(res *Result) bool { return res.Profile == p.Name }) {
			ps = append(ps, p)
		}
	}
	return ps
}

// row is one result's cells, in the order of columns.
func (res *Result) row() []string {
	overrun := fmtMs(res.Overrun)
	if res.TermsLost == 0 {
		overrun += " (no lost term)"
	} else {
		overrun += fmt.Sprintf(" (%d of %d lost terms)", res.Overruns, res.TermsLost)
	}
	overlaps := fmt.Sprintf("%d (%s)", res.Overlaps, fmtMs(res.OverlapTime))
	restarts := "-"
	if res.Library == ControllerRuntime {
		restarts = fmt.Sprint(res.Restarts)
	}
	return []string{
		res.Profile, string(res.Library),
		fmt.Sprintf("%.2f", res.PerHour(float64(res.TermsLost))),
		fmt.Sprintf("%.2f", res.PerHour(float64(res.HolderChanges))),
		fmt.Sprintf("%.1f", res.PerHour(res.Leaderless.Seconds())),
		fmt.Sprintf("%.1f", res.RequestsPerMinute()),
		overrun,
		overlaps,
		fmt.Sprintf("%.1f", res.PerHour(float64(res.TimedOut))),
		restarts,
	}
}

var columns = []string{"profile", "library", "terms lost/h", "holder changes/h", "leaderless s/h", "requests/min",
	"overrun max", "two works at once (starts, time)", "requests timed out/h", "restarts"}

// Table renders the results for a terminal.
func (r *Report) Table() string {
	var sb strings.Builder
	r.textResults(&sb)
	sb.WriteString("\nprofiles:\n")
	for _, p := range r.profiles() {
		fmt.Fprintf(&sb, "  %-12s %s\n", p.Name, p.Describe())
		fmt.Fprintf(&sb, "  %-12s drawn: %s\n", "", r.drawn(p))
	}
	if r.Long != nil {
		sb.WriteString("\n")
		r.Long.textResults(&sb)
	}
	return sb.String()
}

// textResults writes the results table, targets and notes of r.
func (r *Report) textResults(sb *strings.Builder) {
	rows := [][]string{columns}
	for _, p := range r.profiles() {
		for _, l := range Libraries {
			if res := r.Result(p.Name, l); res != nil {
				rows = append(rows, res.row())
			}
		}
	}
	widths := make([]int, len(columns))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	fmt.Fprintf(sb, "slow API server, %v virtual per world, seed %d, %d/%d/%d s, 1 leader + 2 followers, per hour of virtual time (%v of wall time)\n",
		r.Duration, r.Seed, LeaseDuration/time.Second, RenewDeadline/time.Second, RetryPeriod/time.Second, r.Wall.Round(time.Millisecond))
	for i, row := range rows {
		for j, c := range row {
			fmt.Fprintf(sb, "%-*s  ", widths[j], c)
		}
		sb.WriteString("\n")
		if i == 0 {
			for j := range row {
				sb.WriteString(strings.Repeat("-", widths[j]) + "  ")
			}
			sb.WriteString("\n")
		}
	}
	fmt.Fprintf(sb, "\ntargets (issue #25), %v worlds:\n", r.Duration)
	for _, t := range r.Targets() {
		fmt.Fprintf(sb, "  %s\n", t)
	}
	if notes := r.notes(); len(notes) > 0 {
		sb.WriteString("\nnotes:\n")
		for _, n := range notes {
			fmt.Fprintf(sb, "  - %s\n", n)
		}
	}
}

// drawn says the latencies drawn in a profile's worlds, all libraries
// together, and its stalls.
func (r *Report) drawn(p Profile) string {
	var reads, writes []time.Duration
	var stalled time.Duration
	for _, res := range r.Results {
		if res.Profile == p.Name {
			reads = append(reads, res.Read...)
			writes = append(writes, res.Write...)
			stalled = res.Stalled
		}
	}
	s := fmt.Sprintf("reads p50 %s, p99 %s, max %s (%d); writes p50 %s, p99 %s, max %s (%d)",
		fmtMs(quantile(reads, 0.5)), fmtMs(quantile(reads, 0.99)), fmtMs(quantile(reads, 1)), len(reads),
		fmtMs(quantile(writes, 0.5)), fmtMs(quantile(writes, 0.99)), fmtMs(quantile(writes, 1)), len(writes))
	if p.StallEveryMax > 0 {
		s += fmt.Sprintf("; server stalled %.1f s in all", stalled.Seconds())
	}
	return s
}

func quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	s = slices.Clone(s)
	slices.Sort(s)
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(rank, len(s)-1))]
}

func fmtMs(d time.Duration) string {
	switch {
	case d == 0:
		return "0 ms"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// Target is one of the targets, judged on the measurement.
type Target struct {
	What   string
	Met    bool
	Valid  bool // the worlds it needs ran
	Detail string
}

func (t Target) String() string {
	status := "NOT MEASURED"
	switch {
	case t.Valid && t.Met:
		status = "MET"
	case t.Valid:
		status = "MISSED"
	}
	return fmt.Sprintf("%-7s %s: %s", status, t.What, t.Detail)
}

// Healthy requests/min target: 30 ± 10 %.
const (
	steadyRequests  = 30.0
	steadyTolerance = 0.10
)

// Targets judges leasehold against the targets of issue #25.
func (r *Report) Targets() []Target {
	var ts []Target
	perHour := func(res *Result) float64 { return res.PerHour(float64(res.TermsLost)) }
	for _, name := range []string{"loaded", "write-stalls"} {
		lh, cg, cr := r.Result(name, Leasehold), r.Result(name, ClientGo), r.Result(name, ControllerRuntime)
		t := Target{What: name + ": leasehold's terms lost/h at most half of client-go's"}
		if lh != nil && cg != nil {
			limit, got := perHour(cg)/2, perHour(lh)
			t.Valid, t.Met = true, got <= limit
			t.Detail = fmt.Sprintf("%.2f/h (%d lost) vs half of client-go's %.2f/h (%d lost) = %.2f/h", got, lh.TermsLost, perHour(cg), cg.TermsLost, limit)
			if !t.Met {
				t.Detail += fmt.Sprintf(" (over by %.2f/h)", got-limit)
			}
		}
		ts = append(ts, t)
		t = Target{What: name + ": leasehold's terms lost/h never more than controller-runtime's"}
		if lh != nil && cr != nil {
			limit, got := perHour(cr), perHour(lh)
			t.Valid, t.Met = true, got <= limit
			t.Detail = fmt.Sprintf("%.2f/h (%d lost) vs controller-runtime's %.2f/h (%d lost)", got, lh.TermsLost, limit, cr.TermsLost)
			if !t.Met {
				t.Detail += fmt.Sprintf(" (over by %.2f/h)", got-limit)
			}
		}
		ts = append(ts, t)
	}
	for _, p := range r.profiles() {
		t := Target{What: p.Name + ": leasehold's deposed-leader overrun past lastSent + RenewDeadline is 0 ms"}
		if lh := r.Result(p.Name, Leasehold); lh != nil {
			t.Valid, t.Met = true, lh.Overrun == 0
			t.Detail = fmt.Sprintf("%s over %d lost terms", fmtMs(lh.Overrun), lh.TermsLost)
			if !t.Met {
				t.Detail += fmt.Sprintf(" (over by %s, in %d terms)", fmtMs(lh.Overrun), lh.Overruns)
			}
		}
		ts = append(ts, t)
	}
	for _, p := range r.profiles() {
		t := Target{What: p.Name + ": leasehold never runs two works at once"}
		if lh := r.Result(p.Name, Leasehold); lh != nil {
			t.Valid, t.Met = true, lh.Overlaps == 0 && lh.OverlapTime == 0
			t.Detail = fmt.Sprintf("%d works started while another ran, %s of overlap", lh.Overlaps, fmtMs(lh.OverlapTime))
		}
		ts = append(ts, t)
	}
	t := Target{What: fmt.Sprintf("healthy: leasehold's requests/min %.0f ± %.0f %%", steadyRequests, 100*steadyTolerance)}
	if lh := r.Result("healthy", Leasehold); lh != nil {
		lo, hi := steadyRequests*(1-steadyTolerance), steadyRequests*(1+steadyTolerance)
		got := lh.RequestsPerMinute()
		t.Valid, t.Met = true, got >= lo && got <= hi
		t.Detail = fmt.Sprintf("%.1f/min, within %.0f–%.0f", got, lo, hi)
		switch {
		case got < lo:
			t.Detail = fmt.Sprintf("%.1f/min, under %.0f by %.1f", got, lo, lo-got)
		case got > hi:
			t.Detail = fmt.Sprintf("%.1f/min, over %.0f by %.1f", got, hi, got-hi)
		}
	}
	return append(ts, t)
}

// notes are what the reader should know besides the table.
func (r *Report) notes() []string {
	var ns []string
	gap := time.Duration(-1)
	for _, res := range r.Results {
		for _, e := range res.RunErrors {
			ns = append(ns, fmt.Sprintf("%s/%s: election ended unexpectedly: %s", res.Profile, res.Library, e))
		}
		if res.Library == ControllerRuntime && res.TermsLost > 0 {
			gap = max(gap, res.CtxGap)
		}
	}
	if gap >= 0 {
		ns = append(ns, fmt.Sprintf("controller-runtime: over its lost terms, OnStartedLeading's ctx was cancelled at most %s before OnStoppedLeading (the manager's exit, where its work is counted to end)", fmtMs(gap)))
	}
	return ns
}

// Markers of the section of BENCHMARKS.md this program writes.
const (
	BeginMarker = "<!-- slowapi:begin -->"
	EndMarker   = "<!-- slowapi:end -->"
	Heading     = "## Slow API server (virtual time)"
)

// Markdown renders the section, markers excluded.
func (r *Report) Markdown() string {
	var sb strings.Builder
	sb.WriteString(Heading + "\n\n")
	fmt.Fprintf(&sb, "Generated by `make slowapi` (`cd test && go run ./cmd/slowapi`, code in `test/slowapi`); `make bench` keeps this section as it is. "+
		"Run %s, seed %d: %v of virtual time per world in %v of wall time",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Seed, r.Duration, r.Wall.Round(time.Millisecond))
	if r.Long != nil {
		fmt.Fprintf(&sb, ", then the same worlds for %v each in %v", r.Long.Duration, r.Long.Wall.Round(time.Millisecond))
	}
	sb.WriteString(".\n\n")
	sb.WriteString(methodText)
	sb.WriteString("\n### Profiles\n\n| profile | parameters | drawn in the " + r.Duration.String() + " worlds (all libraries) |\n|---|---|---|\n")
	for _, p := range r.profiles() {
		fmt.Fprintf(&sb, "| %s | %s | %s |\n", p.Name, p.Describe(), r.drawn(p))
	}
	r.mdResults(&sb, "")
	if r.Long != nil {
		r.Long.mdResults(&sb, fmt.Sprintf("Long run: the same worlds for %v each, for the rates too small to show in %v.", r.Long.Duration, r.Duration))
	}
	sb.WriteString(modelText)
	return sb.String()
}

// mdResults writes the results table, targets and notes of r.
func (r *Report) mdResults(sb *strings.Builder, intro string) {
	fmt.Fprintf(sb, "\n### Results, %v worlds, per hour of virtual time (%d/%d/%d s, 1 leader + 2 followers)\n\n%s",
		r.Duration, LeaseDuration/time.Second, RenewDeadline/time.Second, RetryPeriod/time.Second, intro)
	if intro != "" {
		sb.WriteString("\n\n")
	}
	fmt.Fprintf(sb, "| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
	for _, p := range r.profiles() {
		for _, l := range Libraries {
			if res := r.Result(p.Name, l); res != nil {
				fmt.Fprintf(sb, "| %s |\n", strings.Join(res.row(), " | "))
			}
		}
	}
	fmt.Fprintf(sb, "\nTargets (issue #25), judged on the %v worlds:\n\n", r.Duration)
	for _, t := range r.Targets() {
		fmt.Fprintf(sb, "- %s\n", t)
	}
	sb.WriteString("- brownout: no target; losing is right when the server is silent past RenewDeadline.\n")
	if notes := r.notes(); len(notes) > 0 {
		fmt.Fprintf(sb, "\nNotes (%v worlds):\n\n", r.Duration)
		for _, n := range notes {
			fmt.Fprintf(sb, "- %s\n", n)
		}
	}
}

const methodText = `Each world runs one library's election in a ` + "`testing/synctest`" + ` bubble, so that its clocks
are virtual, on leasehold's in-memory API server (` + "`leaseholdtest.Server`" + `, compare-and-swap on
resourceVersion): three replicas (none crashes, none is stopped before the world ends)
campaign for one Lease with LeaseDuration 15s, RenewDeadline 10s, RetryPeriod 2s and
ReleaseOnCancel. Every request of every replica goes through a ` + "`LeasesGetter`" + ` wrapper that
draws its latency from the profile with a seeded ` + "`math/rand/v2`" + ` source per replica, and splits it
in two halves: the request lands on the server (a write is stored) at a point drawn uniformly
inside it, and the answer arrives after the rest. A request whose ctx ends first returns
` + "`ctx.Err()`" + `; a write that had already landed stays. A stall pauses every request in flight, and
holds watch events, until it ends. The brownout stall schedule is the same for the three
libraries; the libraries' own jitter (client-go's ` + "`wait.Jitter`" + `, leasehold's backoff) is not
seeded, so a rerun differs a little.

- **terms lost/h**: works (terms) that ended while the world ran: every replica was alive, so each is a lost term,
  whether another replica or the same one leads next. **holder changes/h**: terms started by another replica than the last.
- **leaderless s/h**: time no work ran (the first election included).
- **requests/min**: every request of every replica (get, create, update, watch), the answered and the abandoned.
- **overrun max**: over the lost terms, the longest time the work kept running after the send time of its replica's
  last successful write naming it holder (as the wrapper saw it answered) plus RenewDeadline; 0 when none ran past it.
- **two works at once**: works started while another replica's work still ran, and the time two or more ran together.
- **requests timed out/h**: requests whose caller's ctx ended before the answer (its timeout, or the renew deadline).
`

const modelText = `
### What runs for each library

- **leasehold**: ` + "`leasehold.Run`" + ` with ` + "`Rejoin: true`" + ` (a lost term is followed by a new campaign in the
  same process); the work is OnStartedLeading, blocked until its ctx ends.
- **client-go** (` + "`k8s.io/client-go/tools/leaderelection`" + ` v0.37.2, ` + "`resourcelock.LeaseLock`" + ` on the wrapper): when a
  term is lost, Run returns and the process runs a new LeaderElector at once under the same identity. The work
  is OnStartedLeading until its ctx is cancelled; Run cancels that ctx only after ` + "`renew`" + ` returns, which with
  ReleaseOnCancel includes the release attempt (leaderelection.go:211-221, 308-311).
- **controller-runtime** (sigs.k8s.io/controller-runtime v0.25.2, the version in test/go.mod), modelled on the same
  client-go leaderelection with what its manager sets:
  - timings 15s/10s/2s (the manager's defaults too, pkg/manager/internal.go:54-56, applied at pkg/manager/manager.go:545-556);
  - the leader-election client's ` + "`rest.Config.Timeout`" + ` = max(RenewDeadline/2, 1s) = 5s
    (pkg/leaderelection/leader_election.go:102-108, RenewDeadline passed at pkg/manager/manager.go:410-416), applied by the
    wrapper to every request as a ctx timeout (client-go's rest client turns Client.Timeout into a per-request ctx timeout,
    rest/request.go:153 and 1060-1064);
  - ` + "`ReleaseOnCancel: LeaderElectionReleaseOnCancel`" + ` (internal.go:644), set to true here;
  - a new identity per process, hostname + "_" + a new UUID (leader_election.go:92-97);
  - OnStartedLeading ignores its ctx and starts the leader-election runnables on the manager's internal ctx
    (internal.go:624-630); OnStoppedLeading sends "leader election lost" to the manager's errChan (internal.go:631-642),
    Start returns it (internal.go:495-496), its stop procedure cancels the internal ctx at once, with the graceful
    shutdown timeout just set to 0 (internal.go:503-533, 637), and the binary exits (manager.go:84-89). The work is counted
    from OnStartedLeading to OnStoppedLeading; the elector runs on a ctx of its own (internal.go:460-478);
  - the exited process is started again by the kubelet after its restart back-off: 10s, doubled at each restart up to 5 min,
    reset once the process ran 10 min; the new process campaigns at once (cache sync and webhooks not modelled).
`

// WriteSection replaces the part of the file at path between BeginMarker
// and EndMarker with body, or appends the markers and body at the end of
// the file if it has no such part (or does not exist).
func WriteSection(path, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(ReplaceSection(string(old), body)), 0o644)
}

// ReplaceSection returns doc with the lines between BeginMarker and
// EndMarker replaced by body, or with the markers and body appended.
func ReplaceSection(doc, body string) string {
	block := BeginMarker + "\n" + strings.TrimRight(body, "\n") + "\n" + EndMarker + "\n"
	lines := strings.SplitAfter(doc, "\n")
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case BeginMarker:
			if begin < 0 {
				begin = i
			}
		case EndMarker:
			if begin >= 0 && end < 0 {
				end = i
			}
		}
	}
	if begin < 0 || end < 0 {
		doc = strings.TrimRight(doc, "\n")
		if doc == "" {
			return block
		}
		return doc + "\n\n" + block
	}
	return strings.Join(lines[:begin], "") + block + strings.Join(lines[end+1:], "")
}
