package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets from issue 4.
const (
	HandoffP50Target = 15 * time.Millisecond
	HandoffP99Target = 100 * time.Millisecond
	FailoverP50Over  = 50 * time.Millisecond  // over LeaseDuration
	FailoverMaxOver  = 250 * time.Millisecond // over LeaseDuration
)

// row is one line of the results table. A row with only Label is a
// section heading.
type row struct {
	Label, LH, CG, Ratio string
}

type section struct {
	Title string
	Note  string // optional, printed under the title
	Rows  []row
	// Cols and Cells, when Cols is set, replace the leasehold / client-go
	// / ratio columns of Rows with a table of their own (scale_report.go).
	Cols  []string
	Cells [][]string
}

func durRow(label string, lh, cg time.Duration) row {
	return row{label, fmtDur(lh), fmtDur(cg), ratio(float64(lh), float64(cg))}
}

func (r *Report) sections() []section {
	var out []section
	o := r.Opts
	if lh, cg := r.Handoff[Leasehold], r.Handoff[ClientGo]; lh != nil && cg != nil {
		s := section{Title: fmt.Sprintf("Handoff after a clean release (ReleaseOnCancel): leader + 2 followers, %s, %d/%d rounds",
			o.HandoffTimings, lh.FromRelease.N(), cg.FromRelease.N())}
		s.Rows = append(s.Rows,
			durRow("p50, leader's release write answered → follower's OnStartedLeading", lh.FromRelease.P50(), cg.FromRelease.P50()),
			durRow("p99 (nearest rank)", lh.FromRelease.P99(), cg.FromRelease.P99()),
			durRow("min", lh.FromRelease.Min(), cg.FromRelease.Min()),
			durRow("max", lh.FromRelease.Max(), cg.FromRelease.Max()),
			durRow("p50, leader's cancel() → follower's OnStartedLeading", lh.FromCancel.P50(), cg.FromCancel.P50()),
		)
		if l := r.Limit.Acquire; l.N() > 0 {
			s.Rows = append(s.Rows,
				row{fmt.Sprintf("limit, raw calls (%d rounds): release answered → watch event → acquire answered, p50 / p99", l.N()),
					fmtDur(l.P50()) + " / " + fmtDur(l.P99()), "", ""},
				row{"p50 above the limit", fmtDur(lh.FromRelease.P50() - l.P50()), fmtDur(cg.FromRelease.P50() - l.P50()), ""},
				row{"limit parts, p50: release write / watch event after its answer", fmtDur(r.Limit.ReleaseWrite.P50()) + " / " + fmtDur(r.Limit.WatchEvent.P50()), "", ""},
			)
		}
		out = append(out, s)
	}
	if lh, cg := r.Failover[Leasehold], r.Failover[ClientGo]; lh != nil && cg != nil {
		L := o.FailoverTimings.Lease
		s := section{Title: fmt.Sprintf("Failover after a crash (no release; leader's client cut off): leader + 2 followers, %s, %d/%d rounds",
			o.FailoverTimings, lh.N(), cg.N())}
		s.Rows = append(s.Rows,
			row{"p50, leader's last successful renewal answered → follower's OnStartedLeading", fmtDur(lh.P50()), fmtDur(cg.P50()), ratio(float64(lh.P50()), float64(cg.P50()))},
			durRow("p50 − LeaseDuration", lh.P50()-L, cg.P50()-L),
			durRow("min − LeaseDuration", lh.Min()-L, cg.Min()-L),
			durRow("max − LeaseDuration", lh.Max()-L, cg.Max()-L),
		)
		out = append(out, s)
	}
	if len(r.Steady) > 0 {
		s := section{Title: fmt.Sprintf("Steady state: N candidates on one Lease, requests/min over %v after %v warm-up, %s",
			r.Steady[0].Window.Round(time.Second), o.SteadyWarmup, o.SteadyTimings)}
		for _, n := range o.SteadyNs {
			var lh, cg *SteadyResult
			for i := range r.Steady {
				if r.Steady[i].N == n {
					if r.Steady[i].Lib == Leasehold {
						lh = &r.Steady[i]
					} else {
						cg = &r.Steady[i]
					}
				}
			}
			if lh == nil || cg == nil {
				continue
			}
			s.Rows = append(s.Rows,
				row{fmt.Sprintf("N=%d: requests/min (by verb)", n), perMin(lh.Counts, lh.Window), perMin(cg.Counts, cg.Window), ratio(lh.PerMin(), cg.PerMin())},
				row{fmt.Sprintf("N=%d: watch streams open (opened in window)", n),
					fmt.Sprintf("%d (%d)", lh.Counts.WatchesOpen, lh.Counts.WatchesOpened),
					fmt.Sprintf("%d (%d)", cg.Counts.WatchesOpen, cg.Counts.WatchesOpened), ""},
			)
		}
		out = append(out, s)
	}
	out = append(out, r.scaleSections()...)    // scale_report.go
	return append(out, r.handoffSections()...) // handoff.go
}

func perMin(c Counts, window time.Duration) string {
	m := window.Minutes()
	verbs := make([]string, 0, len(c.Verbs))
	for v := range c.Verbs {
		verbs = append(verbs, v)
	}
	slices.Sort(verbs)
	var parts []string
	for _, v := range verbs {
		parts = append(parts, fmt.Sprintf("%s %.0f", v, float64(c.Verbs[v])/m))
	}
	s := fmt.Sprintf("%.0f", float64(c.Total())/m)
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }
func pct(c float64) string { return fmt.Sprintf("%.1f%%", 100*c) }

// Target is one of the targets, checked.
type Target struct {
	What     string
	Limit    time.Duration
	Measured time.Duration
	Met      bool
	Valid    bool // enough samples to judge
	// Detail, when set, is the measured amount in words, for targets that
	// are not latencies (scale_report.go); Limit and Measured are unused.
	Detail string
}

func (t Target) String() string {
	if t.Detail != "" {
		status := "NOT MEASURED "
		if t.Valid && t.Met {
			status = "MET    "
		} else if t.Valid {
			status = "MISSED "
		}
		return fmt.Sprintf("%s %s: %s", status, t.What, t.Detail)
	}
	if !t.Valid {
		return fmt.Sprintf("NOT MEASURED  %s (target ≤ %s): no samples", t.What, fmtDur(t.Limit))
	}
	if t.Met {
		return fmt.Sprintf("MET     %s: %s ≤ %s (%s to spare)", t.What, fmtDur(t.Measured), fmtDur(t.Limit), fmtDur(t.Limit-t.Measured))
	}
	return fmt.Sprintf("MISSED  %s: %s > %s (by %s)", t.What, fmtDur(t.Measured), fmtDur(t.Limit), fmtDur(t.Measured-t.Limit))
}

// Targets checks leasehold's numbers against the targets.
func (r *Report) Targets() []Target {
	var ts []Target
	add := func(what string, limit, measured time.Duration, n int) {
		ts = append(ts, Target{What: what, Limit: limit, Measured: measured, Met: n > 0 && measured <= limit, Valid: n > 0})
	}
	if h := r.Handoff[Leasehold]; h != nil {
		add("leasehold handoff p50", HandoffP50Target, h.FromRelease.P50(), h.FromRelease.N())
		add("leasehold handoff p99", HandoffP99Target, h.FromRelease.P99(), h.FromRelease.N())
	}
	if f := r.Failover[Leasehold]; f != nil {
		L := r.Opts.FailoverTimings.Lease
		add(fmt.Sprintf("leasehold failover p50 (LeaseDuration %v + %v)", L, FailoverP50Over), L+FailoverP50Over, f.P50(), f.N())
		add(fmt.Sprintf("leasehold failover max (LeaseDuration %v + %v)", L, FailoverMaxOver), L+FailoverMaxOver, f.Max(), f.N())
	}
	ts = append(ts, r.scaleTargets()...)     // scale_report.go
	return append(ts, r.handoffTargets()...) // handoff.go
}

// Table renders the results for a terminal.
func (r *Report) Table() string {
	var sb strings.Builder
	for _, s := range r.sections() {
		sb.WriteString(s.Title + "\n")
		if s.Note != "" {
			sb.WriteString("  note: " + s.Note + "\n")
		}
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		if s.Cols != nil {
			for _, cells := range append([][]string{s.Cols}, s.Cells...) {
				fmt.Fprintf(tw, "  %s\n", strings.Join(cells, "\t"))
			}
		} else {
			fmt.Fprintf(tw, "  \t%s\t%s\t%s\n", "leasehold", "client-go", "client-go/leasehold")
		}
		for _, rw := range s.Rows {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", rw.Label, rw.LH, rw.CG, rw.Ratio)
		}
		tw.Flush()
		sb.WriteString("\n")
	}
	sb.WriteString(r.ownSections() + "\n") // shard.go, fence.go (Markdown)
	sb.WriteString("Targets:\n")
	for _, t := range r.Targets() {
		sb.WriteString("  " + t.String() + "\n")
	}
	for _, t := range r.MoreTargets() { // phases.go
		sb.WriteString("  " + t.String() + "\n")
	}
	if len(r.Errors) > 0 {
		sb.WriteString("\nErrors:\n")
		for _, e := range r.Errors {
			sb.WriteString("  " + e + "\n")
		}
	}
	return sb.String()
}

const mdHeader = `# Benchmarks: leasehold vs client-go leaderelection

Generated by ` + "`make bench`" + ` (` + "`cd test && go run ./cmd/bench`" + `, code in
` + "`test/bench`" + `). Do not edit by hand: each run replaces "Latest run" and
moves the run before it under "Previous run". The numbers are only what the
program measured on the machine named in each run.

How it measures: one real etcd + kube-apiserver (built from source, see
` + "`test/controlplane`" + `); both libraries in the same run, against the same server,
with the same timings; client-go is ` + "`k8s.io/client-go/tools/leaderelection`" + `
with ` + "`resourcelock.LeaseLock`" + `. Every candidate has its own clientset with its own
HTTP transport (TCP connection), QPS 5000 / Burst 10000, JSON bodies (the
scale phase also protobuf), and a
` + "`rest.Config.WrapTransport`" + ` that counts its requests by verb and timestamps
the answers of its writes.

- **Handoff**: a leader and 2 followers (followers started once the leader
  leads, and ready: leasehold's watch open, client-go's first attempt made);
  after a random delay (up to one RetryPeriod) the leader's ctx is
  cancelled with ReleaseOnCancel. Measured from the moment the leader's
  release write (an UPDATE clearing holderIdentity, recognised in the
  request body) was answered, to the entry of a follower's
  OnStartedLeading. The "limit" does the same with raw client calls: release
  UPDATE, the watch event it causes, acquire UPDATE.
- **Failover**: as handoff, but the leader's transport is cut off (every
  request fails unsent) and its ctx cancelled with ReleaseOnCancel=false.
  Measured from the answer of its last successful write to the entry of a
  follower's OnStartedLeading. Both libraries run their rounds at the same
  time, on different Leases.
- **Steady state**: N candidates on one Lease; requests counted over the
  window after a warm-up. All groups (both libraries, every N) run at the
  same time, each on its own Lease.
- **Scale**: N elections, each one candidate on its own Lease, all in this
  process with one shared clientset; leasehold with one ` + "`NewSharedWatch`" + `.
  A run is leasehold, then client-go, each in a fresh namespace: warm-up,
  then a window in which it counts requests, samples every write's round
  trip and reads kube-apiserver's ` + "`apiserver_terminated_watchers_total`" + `.
  Several runs at the defaults with JSON bodies, protobuf runs at the
  defaults (` + "`ContentType`" + ` ` + "`application/vnd.kubernetes.protobuf`" + `, accepting
  protobuf then JSON) among them, and one run at longer timings. Memory is
  the HeapInuse delta after GC divided by N, CPU is getrusage of the bench
  process (and /proc of kube-apiserver + etcd) over the window.
`

// Markdown renders the "Latest run" section (without its heading).
func (r *Report) Markdown(plots []string) string {
	var sb strings.Builder
	m, v := r.Machine, r.Versions
	fmt.Fprintf(&sb, "- Date: %s (took %v in all)\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Ended.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(&sb, "- Machine: %d CPUs (nproc), %s, %s RAM, %s\n", m.CPUs, m.CPUModel, m.MemTotal, m.Kernel)
	fmt.Fprintf(&sb, "- Versions: %s, kube-apiserver %s, etcd %s, client-go %s\n", v.Go, v.Kubernetes, v.Etcd, v.ClientGo)
	mode := "full"
	if r.Opts.Smoke {
		mode = "smoke (-smoke: few rounds, short windows)"
	}
	fmt.Fprintf(&sb, "- Mode: %s; control plane started in %v\n", mode, r.ControlPlaneUp.Round(100*time.Millisecond))
	var phases []string
	for _, p := range r.PhaseDurations {
		phases = append(phases, fmt.Sprintf("%s %v", p.Name, p.Took.Round(time.Second)))
	}
	fmt.Fprintf(&sb, "- Phases: %s\n", strings.Join(phases, "; "))

	sb.WriteString("\n### Results\n\nRatio is client-go / leasehold.\n")
	for _, s := range r.sections() {
		fmt.Fprintf(&sb, "\n#### %s\n\n", s.Title)
		if s.Note != "" {
			fmt.Fprintf(&sb, "Note: %s.\n\n", s.Note)
		}
		if s.Cols != nil {
			fmt.Fprintf(&sb, "| %s |\n|%s\n", strings.Join(s.Cols, " | "), strings.Repeat("---|", len(s.Cols)))
			for _, cells := range s.Cells {
				fmt.Fprintf(&sb, "| %s |\n", strings.Join(cells, " | "))
			}
			continue
		}
		sb.WriteString("| | leasehold | client-go | ratio |\n|---|---|---|---|\n")
		for _, rw := range s.Rows {
			fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", rw.Label, rw.LH, rw.CG, rw.Ratio)
		}
	}

	sb.WriteString(r.ownSections()) // shard.go, fence.go

	sb.WriteString("\n### Targets\n\n")
	for _, t := range r.Targets() {
		fmt.Fprintf(&sb, "- %s\n", t.String())
	}
	for _, t := range r.MoreTargets() { // phases.go
		fmt.Fprintf(&sb, "- %s\n", t.String())
	}
	if len(plots) > 0 {
		sb.WriteString("\n### Plots\n\n")
		for _, p := range plots {
			fmt.Fprintf(&sb, "![%s](%s)\n\n", strings.TrimSuffix(filepath.Base(p), ".png"), p)
		}
	}
	if r.Micro != "" {
		sb.WriteString("\n### Micro-benchmarks (`go test -run '^$' -bench . -benchmem` in the repository root)\n\n```text\n")
		sb.WriteString(strings.TrimSpace(r.Micro))
		sb.WriteString("\n```\n")
	}
	if len(r.Errors) > 0 {
		sb.WriteString("\n### Errors\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&sb, "- %s\n", e)
		}
	}
	if len(r.Notes) > 0 {
		sb.WriteString("\n### Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&sb, "- %s\n", n)
		}
	}
	return sb.String()
}

const (
	latestHeading   = "## Latest run"
	previousHeading = "## Previous run"
)

// WriteMarkdown writes path (BENCHMARKS.md): the header, this run as
// "Latest run", and the former latest run, if any, as "Previous run"
// (its plot links dropped: the PNGs now show this run).
func (r *Report) WriteMarkdown(path string, plots []string) error {
	prev := ""
	if old, err := os.ReadFile(path); err == nil {
		s := string(old)
		if i := strings.Index(s, "\n"+latestHeading+"\n"); i >= 0 {
			body := s[i+len(latestHeading)+2:]
			if j := strings.Index(body, "\n"+previousHeading+"\n"); j >= 0 {
				body = body[:j]
			}
			prev = dropImages(strings.TrimSpace(body))
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	var sb strings.Builder
	sb.WriteString(mdHeader)
	sb.WriteString("\n" + latestHeading + "\n\n")
	sb.WriteString(r.Markdown(plots))
	if prev != "" {
		sb.WriteString("\n" + previousHeading + "\n\n")
		sb.WriteString(prev)
		sb.WriteString("\n")
	}
	return os.WriteFile(path, []byte(keepSlowAPI(path, sb.String())), 0o644) // preserve.go
}

func dropImages(s string) string {
	var out []string
	dropped := false
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "![") {
			dropped = true
			continue
		}
		if line == "### Plots" && !dropped {
			out = append(out, line, "", "(The plot files now show the latest run.)")
			continue
		}
		if line == "" && len(out) > 0 && out[len(out)-1] == "" {
			continue // collapse the blank lines the images leave
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
