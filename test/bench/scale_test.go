package bench

import (
	"strings"
	"testing"
	"time"
)

// fakeScaleRun is a run of n elections of both libraries that held.
func fakeScaleRun(index int, timings Timings, contentType string, n int) *ScaleRun {
	res := func(p50 time.Duration, heap, goroutines, cpu float64) *ScaleResult {
		return &ScaleResult{N: n, Timings: timings, Leading: n, LeadingEnd: n, Window: time.Minute,
			RenewP50: p50, RenewP99: 10 * p50, HeapPerElection: heap, GoroutinesPerEl: goroutines, CPU: cpu, ServerCPU: cpu,
			Counts: Counts{Verbs: map[string]int{"update": 30 * n}}}
	}
	return &ScaleRun{ScaleRunSpec: ScaleRunSpec{timings, contentType}, Index: index, Results: map[Lib]*ScaleResult{
		// Goroutines per election with the work's: leasehold's Run and
		// observer, client-go's Run; the shared watch and connection on top.
		Leasehold: res(5*time.Millisecond, 5000, 3.004, 0.3),
		ClientGo:  res(5*time.Millisecond, 6000, 2.0, 0.3),
	}}
}

func targetsOf(r *Report) map[string]Target {
	out := map[string]Target{}
	for _, t := range r.scaleTargets() {
		for _, key := range []string{"held", "terms lost", "closed", "write p50", "heap", "goroutines"} {
			if strings.Contains(t.What, key) {
				out[key] = t
			}
		}
	}
	return out
}

// TestScaleTargets checks the scale targets on made-up runs: met, missed
// by an amount, and not judged with fewer runs than the target needs.
func TestScaleTargets(t *testing.T) {
	opts := FullOptions()
	var r Report
	r.Opts = opts
	for i, spec := range opts.scalePlan() {
		r.ScaleRuns = append(r.ScaleRuns, fakeScaleRun(i+1, spec.Timings, spec.ContentType, 1000))
	}
	if got := len(r.ScaleRuns); got != 5 {
		t.Fatalf("full plan: %d runs, want 3 JSON + 1 protobuf + 1 comparison", got)
	}
	ts := targetsOf(&r)
	for key, tg := range ts {
		if !tg.Valid || !tg.Met {
			t.Errorf("%s: %s, want MET", key, tg)
		}
	}
	if len(ts) != 6 {
		t.Errorf("got %d scale targets, want 6: %v", len(ts), r.scaleTargets())
	}
	if s := ts["held"].String(); !strings.Contains(s, "4 of 4 runs (3 JSON, 1 protobuf)") {
		t.Errorf("held: %s", s)
	}

	// Run 2 loses 2 terms, the API server closes a watch, its write p50 is
	// 1.5x client-go's and its heap above client-go's: every target but
	// goroutines is missed, by the amount.
	lh := r.ScaleRuns[1].Results[Leasehold]
	lh.LeadingEnd, lh.TermsLost, lh.ServerTerminatedWatches = 998, 2, 1
	lh.RenewP50 = 7500 * time.Microsecond
	lh.HeapPerElection = 7024
	// The comparison run's numbers are not judged.
	r.ScaleRuns[4].Results[Leasehold].TermsLost = 100
	ts = targetsOf(&r)
	want := map[string]string{
		"held":       "3 of 4 runs (3 JSON, 1 protobuf), by 1 run(s): run 2: 1000 → 998 of 1000 leading, 2 terms lost",
		"terms lost": "2 in 4 runs, by 2 (run 2: 2)",
		"closed":     "1 in 4 runs, by 1 (run 2: 1)",
		"write p50":  "missed in 1 of 4 runs, worst run 2: 1.50× (7.5ms vs 5.0ms), by 0.30×",
		"heap":       "worst run 2: 6.9 KiB vs 5.9 KiB, by 1.0 KiB",
	}
	for key, w := range want {
		tg := ts[key]
		if tg.Met || !tg.Valid || !strings.Contains(tg.String(), "MISSED") || !strings.Contains(tg.Detail, w) {
			t.Errorf("%s: %s\nwant MISSED with %q", key, tg, w)
		}
	}
	if tg := ts["goroutines"]; !tg.Met {
		t.Errorf("goroutines: %s, want MET", tg)
	}
	// A third goroutine of the election's own per election misses it.
	r.ScaleRuns[2].Results[Leasehold].GoroutinesPerEl = 4.004
	if tg := targetsOf(&r)["goroutines"]; tg.Met || !strings.Contains(tg.String(), "MISSED") {
		t.Errorf("goroutines at 4.004 per election with the work's: %s, want MISSED", tg)
	}

	// The smoke's one run at the defaults cannot judge "3 of 3".
	smoke := Report{Opts: SmokeOptions()}
	for i, spec := range smoke.Opts.scalePlan() {
		smoke.ScaleRuns = append(smoke.ScaleRuns, fakeScaleRun(i+1, spec.Timings, spec.ContentType, 50))
	}
	if tg := targetsOf(&smoke)["held"]; tg.Valid || !strings.Contains(tg.String(), "NOT MEASURED") {
		t.Errorf("smoke held: %s, want NOT MEASURED", tg)
	}
}

// TestScaleRendering checks the scale table (one row per run and
// library) and the content-type verdict.
func TestScaleRendering(t *testing.T) {
	opts := FullOptions()
	r := &Report{Opts: opts}
	for i, spec := range opts.scalePlan() {
		r.ScaleRuns = append(r.ScaleRuns, fakeScaleRun(i+1, spec.Timings, spec.ContentType, 1000))
	}
	for _, lib := range Libs { // protobuf: less CPU for both
		r.ScaleRuns[1].Results[lib].CPU = 0.2
	}
	secs := r.scaleSections()
	if len(secs) != 2 {
		t.Fatalf("%d scale sections, want the runs and the content types", len(secs))
	}
	if got := len(secs[0].Cells); got != 10 {
		t.Errorf("runs table: %d rows, want 5 runs × 2 libraries", got)
	}
	if got := secs[0].Cells[2][0]; got != "2: 15s/10s/2s, protobuf" {
		t.Errorf("second run's label %q", got)
	}
	if got := secs[0].Cells[8][0]; got != "5: 30s/20s/5s, JSON" {
		t.Errorf("comparison run's label %q", got)
	}
	if note := secs[1].Note; !strings.HasPrefix(note, "protobuf did better") {
		t.Errorf("content verdict: %s", note)
	}
	md := r.Markdown(nil)
	for _, want := range []string{
		"| run | library | leading at window start → end |",
		"| 1: 15s/10s/2s, JSON | leasehold | 1000 → 1000 of 1000 | 0 | 0 | 5.0ms / 50.0ms | 4.9 KiB | 3.00 |",
		"|  | client-go | 1000 → 1000 of 1000 |",
		"MET     leasehold: 1000 of 1000 elections held through the window in every run at the defaults 15s/10s/2s, at least 3 runs",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}

	// A protobuf run that lost terms makes JSON the better one.
	r.ScaleRuns[1].Results[Leasehold].TermsLost = 3
	if note := r.scaleSections()[1].Note; !strings.Contains(note, "leasehold: JSON had fewer failures") {
		t.Errorf("content verdict: %s", note)
	}
}
