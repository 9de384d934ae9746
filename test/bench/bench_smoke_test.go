package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestSmoke runs the smoke version of the benchmark in-process against its
// own control plane (about a minute) and checks that every phase produced
// sane numbers, then renders the table, BENCHMARKS.md and the plots into a
// temporary directory.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the smoke benchmark starts a control plane")
	}
	ctrllog.SetLogger(logr.Discard())
	opts := SmokeOptions()
	opts.Log = testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("\n%s", rep.Table())
	for _, e := range rep.Errors {
		t.Errorf("bench error: %s", e)
	}

	// Real-clock bounds here derive from the timings, with room for a
	// loaded 2-core machine; the exact figures are what the report shows.
	ht := opts.HandoffTimings
	for _, lib := range Libs {
		h := rep.Handoff[lib]
		if h == nil || h.FromRelease.N() != opts.HandoffRounds || h.FromCancel.N() != opts.HandoffRounds {
			t.Errorf("%s handoff: want %d samples, got %+v", lib, opts.HandoffRounds, h)
			continue
		}
		// No follower starts before the leader was told to step down (it
		// renewed until then), whatever the load.
		for i, d := range h.FromCancel.Samples {
			if d < 0 {
				t.Errorf("%s handoff round %d: a follower started %v before the leader was cancelled", lib, i, -d)
			}
		}
		// A follower may start before the release's answer reaches the
		// leader, by at most the release's round trip: not by a whole
		// RetryPeriod, the leader's budget for one write.
		if m := h.FromRelease.Min(); m < -ht.Retry {
			t.Errorf("%s handoff: a follower started %v before the release was answered, more than a RetryPeriod (%v): before the release was sent", lib, -m, ht.Retry)
		}
		if f := rep.Failover[lib]; f == nil || f.N() != opts.FailoverRounds {
			t.Errorf("%s failover: want %d samples, got %+v", lib, opts.FailoverRounds, f)
		}
	}
	// Followers act on the release seen on their watch: a follower polling
	// every RetryPeriod would need about half of one on median.
	if h := rep.Handoff[Leasehold]; h != nil && h.FromRelease.P50() >= ht.Retry/2 {
		t.Errorf("leasehold handoff p50 = %v, want < RetryPeriod/2 = %v (followers act on the release seen on their watch)", h.FromRelease.P50(), ht.Retry/2)
	}
	if rep.Limit.Acquire.N() != opts.LimitRounds || rep.Limit.Acquire.P50() <= 0 {
		t.Errorf("handoff limit: %d samples, p50 %v", rep.Limit.Acquire.N(), rep.Limit.Acquire.P50())
	}
	if f := rep.Failover[Leasehold]; f != nil && f.N() > 0 {
		// Measured from the answer to the leader's last renewal, which a
		// follower may see on its watch a little before the leader does:
		// a follower takes over L after it saw the renewal, so at least
		// L minus that renewal's round trip (under a RetryPeriod) after
		// the answer; and soon after expiry, within the chaos checker's
		// bound L + P + 1s.
		L, P := opts.FailoverTimings.Lease, opts.FailoverTimings.Retry
		if f.Min() < L-P {
			t.Errorf("leasehold failover min = %v < LeaseDuration - RetryPeriod = %v: a follower took over a live claim", f.Min(), L-P)
		}
		if f.P50() > L+P+time.Second {
			t.Errorf("leasehold failover p50 = %v, want within L + P + 1s = %v", f.P50(), L+P+time.Second)
		}
	}

	if len(rep.Steady) != 2*len(opts.SteadyNs) {
		t.Errorf("steady: %d results, want %d", len(rep.Steady), 2*len(opts.SteadyNs))
	}
	for _, s := range rep.Steady {
		renewals := float64(s.Counts.Verbs["update"]) / s.Window.Minutes()
		perRetry := time.Minute.Seconds() / opts.SteadyTimings.Retry.Seconds() // 30/min at 2s
		if renewals < perRetry/2 || renewals > perRetry*1.5 {
			t.Errorf("steady %s N=%d: %.0f updates/min, want about %.0f (one leader renewing every %v)", s.Lib, s.N, renewals, perRetry, opts.SteadyTimings.Retry)
		}
		if s.Lib == Leasehold {
			if s.Counts.WatchesOpen != s.N {
				t.Errorf("steady leasehold N=%d: %d watches open, want one per candidate", s.N, s.Counts.WatchesOpen)
			}
			if other := s.Counts.Total() - s.Counts.Verbs["update"]; other > 2 {
				t.Errorf("steady leasehold N=%d: %d requests besides the leader's renewals: %v", s.N, other, s.Counts.Verbs)
			}
		}
	}

	if len(rep.ScaleRuns) != 1 {
		t.Errorf("scale: %d runs, want the smoke's one", len(rep.ScaleRuns))
	}
	for _, run := range rep.ScaleRuns {
		for _, lib := range Libs {
			s := run.Results[lib]
			if s == nil || s.Leading != opts.ScaleN {
				t.Errorf("scale run %s %s: %+v, want all %d leading", run.Label(), lib, s, opts.ScaleN)
				continue
			}
			if s.HeapPerElection <= 0 || s.Counts.Verbs["update"] == 0 || s.RenewP50 <= 0 {
				t.Errorf("scale run %s %s: heap per election %.0f B, updates %d, write p50 %v", run.Label(), lib, s.HeapPerElection, s.Counts.Verbs["update"], s.RenewP50)
			}
		}
		if s := run.Results[Leasehold]; s != nil && s.Counts.WatchesOpen != 1 {
			t.Errorf("scale run %s leasehold: %d watches open, want the one shared watch", run.Label(), s.Counts.WatchesOpen)
		}
	}

	// Rendering: table, BENCHMARKS.md (twice: the second run keeps the
	// first as the previous run) and the plots.
	dir := t.TempDir()
	md := filepath.Join(dir, "BENCHMARKS.md")
	for i := 0; i < 2; i++ {
		plots, err := rep.WritePlots(filepath.Join(dir, "docs", "bench"), dir)
		if err != nil {
			t.Fatalf("WritePlots: %v", err)
		}
		if len(plots) != 3 {
			t.Errorf("plots: %v, want handoff, failover and steady", plots)
		}
		for _, p := range plots {
			if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Size() < 1000 {
				t.Errorf("plot %s: %v", p, err)
			}
		}
		if err := rep.WriteMarkdown(md, plots); err != nil {
			t.Fatalf("WriteMarkdown: %v", err)
		}
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if strings.Count(text, latestHeading) != 1 || strings.Count(text, previousHeading) != 1 {
		t.Errorf("BENCHMARKS.md: want one latest and one previous run:\n%s", text)
	}
	for _, want := range []string{"Handoff after a clean release", "Targets", "docs/bench/handoff.png", "kube-apiserver v1.37",
		"| 1: 15s/10s/2s, JSON | leasehold |", "held through the window"} {
		if !strings.Contains(text, want) {
			t.Errorf("BENCHMARKS.md lacks %q", want)
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
