package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/walkthrough"
)

// The checker must catch what it claims to: a synthetic run with one true
// overlap, one overlap explained by a pause, one term without
// OnStoppedLeading, a too-long gap after a fault, and a leaseTransitions
// step back.
func TestCheckCatchesViolations(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(kind, proc string, inc, ms int) walkthrough.Event {
		return walkthrough.Event{Kind: kind, Proc: proc, Inc: inc, Fields: []string{proc}, At: at(ms)}
	}
	rec := &Record{
		Config:     Config{N: 3, Timings: DefaultTimings},
		Began:      at(0),
		ShutdownAt: at(60_000),
		Ended:      at(61_000),
		Events: []walkthrough.Event{
			// c1 leads 1s..5s; c2 starts at 4.5s: a true overlap.
			ev("START", "c1", 0, 1_000), ev("START", "c2", 0, 4_500),
			ev("END", "c1", 0, 5_000), ev("OSL", "c1", 0, 5_001),
			ev("END", "c2", 0, 8_000), ev("OSL", "c2", 0, 8_001),
			// c3 leads 9s..; SIGSTOPped 10s..15s; c1 starts at 13s;
			// c3's work ends 2ms after SIGCONT: a pause window.
			ev("START", "c3", 0, 9_000), ev("START", "c1", 0, 13_000),
			ev("END", "c3", 0, 15_002), ev("OSL", "c3", 0, 15_003),
			// c1 ends at 16s but never calls OnStoppedLeading before
			// its next term.
			ev("END", "c1", 0, 16_000),
			// Fault 1 heals at 16s; nobody leads until 30s.
			ev("START", "c1", 0, 30_000), ev("END", "c1", 0, 31_000), ev("OSL", "c1", 0, 31_001),
			ev("START", "c2", 0, 31_100), ev("END", "c2", 0, 59_000), ev("OSL", "c2", 0, 59_001),
		},
		Pauses: []Pause{{Proc: "c3", Inc: 0, Stop: at(10_000), Cont: at(15_000)}},
		Faults: []Injected{{Fault: Fault{Index: 1, Kind: KindPartition}, Start: at(15_500), Heal: at(16_000)}},
		Lease: []LeaseVersion{
			{RV: "1", Holder: "c1", Transitions: 0, Acquire: at(990)},
			{RV: "2", Holder: "c2", Transitions: 1, Acquire: at(4_490)},
			{RV: "3", Holder: "c3", Transitions: 2, Acquire: at(8_990)},
			{RV: "4", Holder: "c1", Transitions: 3, Acquire: at(12_990)},
			{RV: "5", Holder: "c1", Transitions: 4, Acquire: at(29_990)},
			{RV: "6", Holder: "c2", Transitions: 2, Acquire: at(31_090)},
		},
	}
	r := Check(rec)
	if r.OK() {
		t.Fatal("the checker passed a run with violations")
	}
	want := map[string]int{"(a) overlap": 1, "(b) gap": 1, "(c) pairing": 1, "(d) transitions": 2}
	got := map[string]int{}
	for _, f := range r.Failures {
		got[f[:strings.Index(f, ":")]]++
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d failures, want %d; all: %q", k, got[k], n, r.Failures)
		}
	}
	if len(r.PauseOverlaps) != 1 || r.PauseOverlaps[0].Window != 2002*time.Millisecond || r.PauseOverlaps[0].ResumeToEnd != 2*time.Millisecond {
		t.Errorf("pause windows %+v, want one of 2.002s ending 2ms after SIGCONT", r.PauseOverlaps)
	}
	if r.LongestHealed.AfterHeal != 14*time.Second {
		t.Errorf("longest gap after heal %v, want 14s", r.LongestHealed.AfterHeal)
	}
}
