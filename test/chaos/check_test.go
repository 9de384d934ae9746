package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/walkthrough"
)

// The checker must catch what it claims to: a synthetic run with one true
// overlap, one overlap explained by a (long enough) pause, one term without
// OnStoppedLeading, a too-long gap after a fault, and a leaseTransitions
// step back.
func TestCheckCatchesViolations(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(kind, proc string, inc, ms int) walkthrough.Event {
		return walkthrough.Event{Kind: kind, Proc: proc, Inc: inc, Fields: []string{proc}, At: at(ms), Recv: at(ms)}
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

// pauseRecord is a synthetic run in which c1 leads from 1s, is SIGSTOPped
// at 5s for pause, and c2 starts startAfter the SIGSTOP; c1's work ends
// resumeToEnd after SIGCONT. All times in the harness's clock.
func pauseRecord(tm Timings, pause, startAfter, resumeToEnd time.Duration, pausedProc string) *Record {
	base := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	ev := func(kind, proc string, t time.Time) walkthrough.Event {
		return walkthrough.Event{Kind: kind, Proc: proc, Fields: []string{proc}, At: t, Recv: t}
	}
	stop := at(5 * time.Second)
	cont := stop.Add(pause)
	c2Start := stop.Add(startAfter)
	c1End := cont.Add(resumeToEnd)
	c2End := later(c1End, c2Start).Add(2 * time.Second)
	return &Record{
		Config:     Config{N: 2, Timings: tm},
		Began:      at(0),
		ShutdownAt: c2End.Add(time.Second),
		Ended:      c2End.Add(2 * time.Second),
		Events: []walkthrough.Event{
			ev("START", "c1", at(time.Second)), ev("START", "c2", c2Start),
			ev("END", "c1", c1End), ev("OSL", "c1", c1End.Add(time.Millisecond)),
			ev("END", "c2", c2End), ev("OSL", "c2", c2End.Add(time.Millisecond)),
		},
		Pauses: []Pause{{Proc: pausedProc, Stop: stop, Cont: cont}},
		Faults: []Injected{{Fault: Fault{Index: 1, Kind: KindPauseShort}, Target: pausedProc, Start: stop, Heal: cont}},
		Lease: []LeaseVersion{
			{RV: "1", Holder: "c1", Transitions: 0, Acquire: at(990 * time.Millisecond)},
			{RV: "2", Holder: "c2", Transitions: 1, Acquire: c2Start.Add(-time.Millisecond)},
		},
	}
}

// An overlap during a SIGSTOP is excused only when the pause lasted at
// least L-D-P and the follower started no earlier than SIGSTOP + (L-D)
// (and before SIGCONT + 250ms, with the resumed work ending within 1s of
// SIGCONT). Each bound is tested on both sides.
func TestCheckPauseRule(t *testing.T) {
	const ms = time.Millisecond
	std := DefaultTimings // L-D-P = 500ms, L-D = 1s
	// With P = 100ms, L-D-P = 900ms binds before the 250ms lateness does:
	// a pause of 750..900ms could otherwise excuse a START at SIGSTOP+1s.
	shortP := Timings{LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 100 * ms}
	cases := []struct {
		name                           string
		tm                             Timings
		pause, startAfter, resumeToEnd time.Duration
		paused                         string
		excused                        bool
	}{
		// The history: c2 starts 10ms into a 150ms pause of c1.
		{"early takeover in a 150ms pause", std, 150 * ms, 10 * ms, 2 * ms, "c1", false},
		{"legal takeover in a long pause", std, 3500 * ms, 3200 * ms, 2 * ms, "c1", true},
		{"early takeover in a long pause", std, 3500 * ms, 10 * ms, 2 * ms, "c1", false},
		// The earliest legal START: SIGSTOP + (L-D).
		{"START at SIGSTOP+(L-D)", std, 1200 * ms, 1000 * ms, 2 * ms, "c1", true},
		{"START 1ms before SIGSTOP+(L-D)", std, 1200 * ms, 999 * ms, 2 * ms, "c1", false},
		// The shortest pause: L-D-P.
		{"pause of L-D-P", shortP, 900 * ms, 1000 * ms, 150 * ms, "c1", true},
		{"pause 1ms under L-D-P", shortP, 899 * ms, 1000 * ms, 150 * ms, "c1", false},
		// The resumed leader's work ends within 1s of SIGCONT.
		{"work ends 1s after SIGCONT", std, 3500 * ms, 3200 * ms, 1000 * ms, "c1", true},
		{"work ends 1.001s after SIGCONT", std, 3500 * ms, 3200 * ms, 1001 * ms, "c1", false},
		// The follower starts before SIGCONT + 250ms.
		{"START at SIGCONT+250ms", std, 1200 * ms, 1450 * ms, 300 * ms, "c1", true},
		{"START at SIGCONT+251ms", std, 1200 * ms, 1451 * ms, 300 * ms, "c1", false},
		// Only a pause of the earlier leader explains an overlap.
		{"the follower was paused, not the leader", std, 3500 * ms, 3200 * ms, 2 * ms, "c2", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Check(pauseRecord(c.tm, c.pause, c.startAfter, c.resumeToEnd, c.paused))
			if c.excused {
				if len(r.Overlaps) != 0 || len(r.PauseOverlaps) != 1 {
					t.Fatalf("want the overlap excused as one pause window; overlaps %q, pause windows %+v", r.Overlaps, r.PauseOverlaps)
				}
				if !r.OK() {
					t.Errorf("run with a legal pause window failed: %q", r.Failures)
				}
				if p := r.PauseOverlaps[0]; p.Pause != c.pause || p.StopToStart != c.startAfter || p.ResumeToEnd != c.resumeToEnd {
					t.Errorf("pause window %+v, want pause %v, START %v after SIGSTOP, END %v after SIGCONT", p, c.pause, c.startAfter, c.resumeToEnd)
				}
				return
			}
			if len(r.Overlaps) != 1 || len(r.PauseOverlaps) != 0 || r.OK() {
				t.Fatalf("want one overlap flagged; overlaps %q, pause windows %+v, failures %q", r.Overlaps, r.PauseOverlaps, r.Failures)
			}
			t.Logf("flagged: %s", r.Overlaps[0])
		})
	}
}

// A run whose event lines were not all read must fail: a lost START or
// END would hide an overlap.
func TestCheckFailsOnLostEvents(t *testing.T) {
	const ms = time.Millisecond
	legal := func() *Record { return pauseRecord(DefaultTimings, 3500*ms, 3200*ms, 2*ms, "c1") }
	if r := Check(legal()); !r.OK() {
		t.Fatalf("the base record fails: %q", r.Failures)
	}
	cases := map[string]func(*Record){
		"an unreadable line": func(rec *Record) {
			rec.LostEvents = []string{`c2#0 stdout: line 3 is not an event: "STA"`}
		},
		"a clean exit without its EXIT line": func(rec *Record) {
			rec.Exits = append(rec.Exits, Exit{Proc: "c2", Status: "0", Expected: true, At: rec.ShutdownAt})
		},
		"an event after EXIT": func(rec *Record) {
			e := rec.Events[len(rec.Events)-1]
			exit := e
			exit.Kind = "EXIT"
			rec.Events = append(rec.Events, exit, e)
		},
		"an event not stamped on receipt": func(rec *Record) {
			rec.Events[1].Recv = time.Time{}
		},
	}
	for name, mutate := range cases {
		rec := legal()
		mutate(rec)
		r := Check(rec)
		if r.OK() || len(r.Lost) == 0 {
			t.Errorf("%s: the check passed (failures %q)", name, r.Failures)
			continue
		}
		if !slices.ContainsFunc(r.Failures, func(f string) bool { return strings.HasPrefix(f, "events: ") }) {
			t.Errorf("%s: failures %q, want an events failure", name, r.Failures)
		}
	}
}

// The harness reads real processes' stdout strictly: a line that is not
// an event, a last line cut short, or a missing EXIT is recorded and fails
// the check; every event is stamped on receipt with the harness's
// monotonic clock. The process here is a shell script standing in for a
// third candidate, c3, next to a legal synthetic run of c1 and c2.
func TestLostEventLinesFailTheRun(t *testing.T) {
	run := func(script string) (*walkthrough.Timeline, time.Time) {
		t.Helper()
		tl := walkthrough.NewTimeline()
		before := time.Now()
		p, err := walkthrough.StartProcess(walkthrough.ProcessOptions{
			Name: "c3", Path: "/bin/sh", Args: []string{"-c", script}, Timeline: tl, Strict: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		return tl, before
	}
	record := func(tl *walkthrough.Timeline) *Record {
		rec := pauseRecord(DefaultTimings, 3500*time.Millisecond, 3200*time.Millisecond, 2*time.Millisecond, "c1")
		rec.Events = append(rec.Events, tl.Events()...)
		rec.LostEvents = tl.Problems()
		rec.Exits = append(rec.Exits, Exit{Proc: "c3", Inc: 0, Status: "0", Expected: true, At: rec.ShutdownAt})
		return rec
	}
	line := func(kind string, fields ...string) string {
		return strings.Join(append(append([]string{kind}, fields...), fmt.Sprint(time.Now().UnixNano())), " ")
	}
	newLeader, exit := line("NEWLEADER", "c3", "c1"), line("EXIT", "c3")

	tl, before := run(fmt.Sprintf("echo '%s'; echo '%s'", newLeader, exit))
	if p := tl.Problems(); len(p) != 0 {
		t.Fatalf("clean output: problems %q", p)
	}
	evs := tl.Events()
	if len(evs) != 2 || evs[0].Kind != "NEWLEADER" || evs[1].Kind != "EXIT" {
		t.Fatalf("clean output: events %+v, want NEWLEADER and EXIT", evs)
	}
	for _, e := range evs {
		if e.Recv.Before(before) || !strings.Contains(e.Recv.String(), "m=") {
			t.Errorf("event %s stamped %v on receipt; want the harness's monotonic clock, after %v", e, e.Recv, before)
		}
	}
	if r := Check(record(tl)); !r.OK() {
		t.Errorf("clean output fails the check: %q", r.Failures)
	}

	for name, script := range map[string]string{
		"a line that is not an event": fmt.Sprintf("echo '%s'; echo 'STA'; echo '%s'", newLeader, exit),
		"a time that is not a number": fmt.Sprintf("echo '%s'; echo 'EXIT c3 12:00'", newLeader),
		"a last line cut short":       fmt.Sprintf("echo '%s'; printf '%s'", newLeader, exit),
		"no EXIT line":                fmt.Sprintf("echo '%s'", newLeader),
	} {
		tl, _ := run(script)
		r := Check(record(tl))
		if r.OK() || len(r.Lost) == 0 {
			t.Errorf("%s: the check passed; problems read %q, failures %q", name, tl.Problems(), r.Failures)
			continue
		}
		t.Logf("%s: %q", name, r.Lost)
	}
}

// In ModeShard the checks hold shard by shard: two members running
// different shards at once is the point; one shard in two members is an
// overlap; a shard whose run never pairs START, END, OnShardStopped is a
// pairing failure; a shard left without a member after a fault healed is
// a gap; and the Lease's transitions are not checked.
func TestCheckShards(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(kind, proc, shard string, ms int) walkthrough.Event {
		return walkthrough.Event{Kind: kind, Proc: proc, Fields: []string{proc, shard}, At: at(ms), Recv: at(ms)}
	}
	run := func(shard0, shard1 string, extra ...walkthrough.Event) *Report {
		evs := []walkthrough.Event{
			ev("START", "c1", shard0, 1_000), ev("START", "c2", shard1, 1_100),
			ev("END", "c1", shard0, 9_000), ev("OSL", "c1", shard0, 9_001),
			ev("END", "c2", shard1, 9_000), ev("OSL", "c2", shard1, 9_001),
		}
		return Check(&Record{
			Config:     Config{N: 2, Mode: ModeShard, Shards: 2, Timings: DefaultTimings},
			Began:      at(0),
			ShutdownAt: at(9_500),
			Ended:      at(10_000),
			Events:     append(evs, extra...),
		})
	}
	if r := run("0", "1"); !r.OK() || r.Terms != 2 {
		t.Fatalf("two members on two shards: terms %d, failures %q", r.Terms, r.Failures)
	}
	r := run("0", "0")
	if len(r.Overlaps) != 1 || !strings.HasPrefix(r.Overlaps[0], "shard 0: ") {
		t.Errorf("one shard in two members: overlaps %q", r.Overlaps)
	}
	if !slices.ContainsFunc(r.Failures, func(f string) bool { return strings.Contains(f, "only 1 of 2 shards ever ran") }) {
		t.Errorf("shard 1 never ran, yet no failure says so: %q", r.Failures)
	}
	// c1, running shard 0, reports OnShardStopped for shard 1, which it
	// never ran.
	r = run("0", "1", ev("OSL", "c1", "1", 5_000))
	if len(r.Pairing) != 1 || !strings.HasPrefix(r.Pairing[0], "c1#0 shard 1: OnStoppedLeading") {
		t.Errorf("pairing failures %q, want one for c1's shard 1", r.Pairing)
	}
	// A gap on one shard only: shard 1 restarts 6s after c2's END,
	// though the fault healed at once.
	rec := run("0", "1").Rec
	rec.Events = append(rec.Events[:2], ev("END", "c2", "1", 2_000), ev("OSL", "c2", "1", 2_001),
		ev("START", "c2", "1", 8_000), ev("END", "c1", "0", 9_000), ev("OSL", "c1", "0", 9_001),
		ev("END", "c2", "1", 9_000), ev("OSL", "c2", "1", 9_001))
	rec.Faults = []Injected{{Fault: Fault{Index: 1, Kind: KindPartition}, Start: at(1_900), Heal: at(2_000)}}
	r = Check(rec)
	if len(r.GapViolations) != 1 || !strings.HasPrefix(r.GapViolations[0], "shard 1: ") || r.LongestHealed.Key != "1" {
		t.Errorf("gap violations %q (longest %+v), want one on shard 1", r.GapViolations, r.LongestHealed)
	}
	if len(r.Transitions) != 0 {
		t.Errorf("Lease transitions checked in ModeShard: %q", r.Transitions)
	}
}

// (e): after a yield to a named follower, the next term must be that
// follower's; a yield to anyone may go to anyone. (f): with the watch
// cache off, a compaction that brought no 410 fails.
func TestCheckYieldsAndCompactions(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(kind, proc string, ms int) walkthrough.Event {
		return walkthrough.Event{Kind: kind, Proc: proc, Fields: []string{proc}, At: at(ms), Recv: at(ms)}
	}
	rec := func(next string, to string, kind Kind) *Record {
		preferred := to
		if to == "" {
			preferred = "*"
		}
		return &Record{
			Config:     Config{N: 3, Mode: ModeYield, Timings: DefaultTimings},
			Began:      at(0),
			ShutdownAt: at(9_000),
			Ended:      at(10_000),
			Events: []walkthrough.Event{
				ev("START", "c1", 1_000), ev("END", "c1", 5_010), ev("OSL", "c1", 5_011),
				ev("START", next, 5_030), ev("END", next, 9_500), ev("OSL", next, 9_501),
			},
			Faults: []Injected{{Fault: Fault{Index: 1, Kind: kind}, Target: "c1", WasLeader: true, To: to, Start: at(5_000), Heal: at(5_000)}},
			Lease: []LeaseVersion{
				{RV: "1", Holder: "c1", Transitions: 0, Acquire: at(990), Seen: at(991)},
				{RV: "2", Holder: "c1", Transitions: 0, Acquire: at(990), Seen: at(5_005)},
				{RV: "3", Transitions: 0, Acquire: at(990), Seen: at(5_012), Preferred: preferred, HasPreferred: true},
				{RV: "4", Holder: next, Transitions: 1, Acquire: at(5_020), Seen: at(5_021)},
			},
		}
	}
	for _, k := range YieldKinds {
		if r := Check(rec("c2", "c2", k)); !r.OK() || len(r.Handoffs) != 1 || r.Handoffs[0].Latency != 30*time.Millisecond {
			t.Errorf("%s to c2, taken by c2: failures %q, handoffs %+v", k, r.Failures, r.Handoffs)
		}
		if r := Check(rec("c3", "", k)); !r.OK() {
			t.Errorf("%s to anyone, taken by c3: failures %q", k, r.Failures)
		}
		if r := Check(rec("c3", "c2", k)); len(r.Yields) != 1 || r.OK() {
			t.Errorf("%s to c2, taken by c3: yield failures %q", k, r.Yields)
		}
		// The request found c1's term ending another way (no release
		// naming c2): not judged.
		lost := rec("c3", "c2", k)
		lost.Lease = append(lost.Lease[:2], lost.Lease[3])
		if r := Check(lost); !r.OK() || len(r.Handoffs) != 1 || r.Handoffs[0].Released {
			t.Errorf("%s to c2, c1's term lost, c3 next: failures %q, handoffs %+v", k, r.Failures, r.Handoffs)
		}
	}

	compaction := func(gone int64, off bool) *Report {
		r := rec("c2", "c2", KindYield)
		r.Config.WatchCacheOff = off
		r.Faults = append(r.Faults, Injected{Fault: Fault{Index: 2, Kind: KindCompact}, Target: "etcd", Start: at(7_000), Heal: at(7_000), Gone: gone, Revision: 42})
		return Check(r)
	}
	if r := compaction(3, true); !r.OK() || r.Gone != 3 || r.GoneByKind[KindCompact] != 3 {
		t.Errorf("a compaction with 3 410s: failures %q, gone %d", r.Failures, r.Gone)
	}
	if r := compaction(0, true); len(r.Compactions) != 1 || r.OK() {
		t.Errorf("a compaction without a 410, watch cache off: %q", r.Failures)
	}
	if r := compaction(0, false); !r.OK() {
		t.Errorf("a compaction without a 410, watch cache on (it serves from memory): %q", r.Failures)
	}
}

// (g): in ModeFenced, a write admitted with the stamp of a term other than
// the Lease's at that point of etcd's history, or while the Lease had no
// holder, is a stale write admitted; writes of the current term are not.
func TestCheckStaleWrites(t *testing.T) {
	rec := pauseRecord(DefaultTimings, 3500*time.Millisecond, 3200*time.Millisecond, 2*time.Millisecond, "c1")
	rec.Config.Mode = ModeFenced
	// Lease versions: rv 1 c1/0, rv 2 c2/1 (pauseRecord); then released at 10.
	rec.Lease = append(rec.Lease, LeaseVersion{RV: "10", Transitions: 1})
	w := func(rv, holder, term string) FencedWrite {
		return FencedWrite{RV: rv, Writer: holder, Holder: holder, Term: term}
	}
	cases := []struct {
		name   string
		writes []FencedWrite
		stale  int
	}{
		{"each write in its term", []FencedWrite{w("2", "c1", "0"), w("5", "c2", "1"), w("9", "c2", "1")}, 0},
		{"a deposed term's write after the takeover", []FencedWrite{w("2", "c1", "0"), w("5", "c1", "0")}, 1},
		{"a write while released", []FencedWrite{w("11", "c2", "1")}, 1},
		{"a write before any Lease version", []FencedWrite{w("1", "c1", "0")}, 1},
	}
	for _, c := range cases {
		rec.Writes = c.writes
		r := Check(rec)
		if len(r.Stale) != c.stale || r.FencedWrites != len(c.writes) {
			t.Errorf("%s: stale %q (%d writes counted), want %d stale", c.name, r.Stale, r.FencedWrites, c.stale)
		}
		if c.stale > 0 && !slices.ContainsFunc(r.Failures, func(f string) bool { return strings.HasPrefix(f, "(g) stale write") }) {
			t.Errorf("%s: no (g) failure: %q", c.name, r.Failures)
		}
	}
}

// CI seed 1, mode fenced: c5 was SIGSTOPped as leader, c2 took over, and
// 4ms after SIGCONT the next fault SIGSTOPped c5 again (now "a follower")
// for 4.1s. Its work ended 1ms after the second SIGCONT. The resumed work
// had 5ms of running time, not 4.1s: excused. With 1.2s of running time
// between the pauses it is not.
func TestCheckPauseRuleCountsRunningTimeOnly(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		name     string
		between  time.Duration // SIGCONT to the second SIGSTOP
		excused  bool
		resumeTo time.Duration // running time reported
	}{
		{"stopped again 4ms after SIGCONT", 4 * ms, true, 5 * ms},
		{"stopped again 1.2s after SIGCONT", 1200 * ms, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			second := 4100 * ms
			rec := pauseRecord(DefaultTimings, 4280*ms, 3000*ms, c.between+second+ms, "c1")
			p := rec.Pauses[0]
			stop2 := p.Cont.Add(c.between)
			rec.Pauses = append(rec.Pauses, Pause{Proc: "c1", Stop: stop2, Cont: stop2.Add(second)})
			r := Check(rec)
			if !c.excused {
				if len(r.Overlaps) != 1 || r.OK() {
					t.Fatalf("want one overlap flagged; overlaps %q, pause windows %+v", r.Overlaps, r.PauseOverlaps)
				}
				if !strings.Contains(r.Overlaps[0], "not counting 4.1s stopped again") {
					t.Errorf("overlap %q does not say what it left out", r.Overlaps[0])
				}
				return
			}
			if len(r.Overlaps) != 0 || len(r.PauseOverlaps) != 1 || !r.OK() {
				t.Fatalf("want the overlap excused as one pause window; overlaps %q, pause windows %+v, failures %q", r.Overlaps, r.PauseOverlaps, r.Failures)
			}
			if got := r.PauseOverlaps[0].ResumeToEnd; got != c.resumeTo {
				t.Errorf("running time after SIGCONT %v, want %v", got, c.resumeTo)
			}
		})
	}
}

func TestCountedNotes(t *testing.T) {
	got := counted([]string{"a", "b", "a", "a", "c"})
	if want := []string{"a (×3)", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("counted = %q, want %q", got, want)
	}
}
