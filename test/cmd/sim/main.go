// Command sim runs many seeds of the deterministic simulation of package
// test/sim: leasehold electors on an in-memory API server in synctest
// bubbles, under a seeded schedule of operations and faults, with every
// invariant checked on virtual time. It prints what it ran and what
// failed; a failing seed is shrunk to a shorter schedule that still fails
// and printed with the command that replays it.
//
// With -world shard it runs shard groups instead (package shard): M
// members (-candidates) of one group with K shards drawn per seed.
//
// In the elector world, one seed in four runs coordinated election
// (KEP-4355): candidates made with NewCoordinated and an election
// controller; -coordinated runs every seed so, -coordinated=false none.
//
//	cd test && go run ./cmd/sim [-world elector|shard] [-coordinated[=false]] [-seeds 100] [-start 1] [-duration 10m] [-candidates 3]
//	    [-keep 0,3,7|none] [-shrink=true] [-history] [-stop-at-first]
//
// It exits 1 if any invariant failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/sim"
)

var (
	seeds       = flag.Int("seeds", 100, "number of seeds to run")
	start       = flag.Uint64("start", 1, "first seed")
	duration    = flag.Duration("duration", 10*time.Minute, "virtual duration of each seed's world (its schedule is drawn for it)")
	until       = flag.Duration("until", 0, "cut each world short at this virtual instant, as a shrunk replay prints")
	candidates  = flag.Int("candidates", 3, "candidates per world")
	keep        = flag.String("keep", "", "run only these faults of each seed's schedule (indexes, comma-separated, or none), as a shrunk replay prints")
	shrink      = flag.Bool("shrink", true, "shrink the schedule of a failing seed")
	tries       = flag.Int("tries", 10, "runs of each reduced schedule while shrinking before it counts as passing")
	history     = flag.Bool("history", false, "print the whole history of every seed that fails")
	stopAtFirst = flag.Bool("stop-at-first", false, "stop at the first failing seed")
	repeat      = flag.Int("repeat", 1, "run each seed up to this many times until it fails (interleavings at one virtual instant vary between runs)")
	report      = flag.String("report", "", "rewrite the figures between <!-- sim:begin --> and <!-- sim:end --> in this Markdown file (make sim: docs/reliability.md)")
	world       = flag.String("world", "elector", "what to simulate: elector (leasehold electors of one Lease) or shard (shard.Members of one group)")
	want        = flag.String("want", "", "count only violations of these kinds or signatures (comma-separated) as failures, e.g. overlap or 'request-loop[get:404 update:404]'")
	coordinated optBool
	strict      = flag.Bool("strict", false, "coordinated worlds: an identity conflict after the election controller wrote the Lease naming the identity is a violation (every coordinated plan is strict now; kept for replay commands)")
	preferAssig = flag.Bool("prefer-assigned", false, "coordinated worlds: the election controller also writes spec.preferredHolder on an assignment not taken up yet (kube-apiserver's may; drawn in one coordinated plan in two, forced by this flag)")
)

func init() {
	flag.Var(&coordinated, "coordinated", "elector world: run every seed with coordinated election (KEP-4355: NewCoordinated and an election controller), or none with =false; default: one seed in four, drawn")
}

// optBool is a boolean flag that may be left unset.
type optBool struct{ v *bool }

func (o *optBool) String() string {
	if o.v == nil {
		return ""
	}
	return strconv.FormatBool(*o.v)
}

func (o *optBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	o.v = &b
	return nil
}

func (o *optBool) IsBoolFlag() bool { return true }

func main() {
	flag.Parse()
	if *world != "elector" && *world != sim.WorldShard {
		fmt.Fprintf(os.Stderr, "sim: -world %q: want elector or shard\n", *world)
		os.Exit(2)
	}
	kept, err := parseKeep(*keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(2)
	}
	testing.Main(func(string, string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: "Sim", F: func(t *testing.T) { run(t, kept) }}}, nil, nil)
}

func parseKeep(s string) ([]int, error) {
	switch s {
	case "":
		return nil, nil
	case "none":
		return []int{}, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-keep %q: %v", s, err)
		}
		out = append(out, i)
	}
	return out, nil
}

// failure is one distinct kind of failure over the seeds run.
type failure struct {
	first  uint64
	seeds  int
	replay string
}

func run(t *testing.T, kept []int) {
	var (
		ran                 int
		simulated, candTime time.Duration
		checks, requests    int
		busiest             int
		overdue, blind      int
		paused, samples     int
		lateFailed          int
		crashed             int
		coordSeeds, assigns int
		assignedConflicts   int
		hungReturns         int
		busiestShare        float64
		faults              = map[sim.Kind]int{}
		violations          = map[string]int{}
		failing             []string
		distinct            = map[string]*failure{}
		sigs                []string
		wall                = time.Now()
		worldWall           time.Duration
	)
	for seed := *start; seed < *start+uint64(*seeds); seed++ {
		full := sim.NewPlan(seed, *candidates, *duration)
		if coordinated.v != nil {
			full = sim.NewPlanCoordinated(seed, *candidates, *duration, *coordinated.v)
		}
		full.CtrlPrefersAssigned = full.CtrlPrefersAssigned || (*preferAssig && full.Coordinated)
		full.Strict = full.Strict || (*strict && full.Coordinated)
		if *world == sim.WorldShard {
			full = sim.NewShardPlan(seed, *candidates, *duration)
		}
		p := full
		if kept != nil {
			p = full.Keep(kept)
		}
		if *until > 0 && *until < p.Duration {
			p.Duration = *until
		}
		var res *sim.Result
		for range max(1, *repeat) {
			res = sim.Run(t, p, sim.Options{})
			res.Kept = kept
			ran++
			simulated += res.Simulated
			candTime += res.CandidateTime
			checks += res.Checks
			requests += res.Requests
			overdue += res.ExcusedOverdue
			blind += res.ExcusedBlind
			paused += res.ExcusedPaused
			samples += res.CheckSamples
			lateFailed += res.LateFailed
			crashed += res.ExcusedCrashed
			assigns += res.Assignments
			assignedConflicts += res.ExcusedAssigned
			hungReturns += res.HungReturns
			if res.Plan.Coordinated {
				coordSeeds++
			}
			if share := float64(res.BusiestMinute) / float64(res.Budget); share > busiestShare {
				busiest, busiestShare = res.BusiestMinute, share
			}
			worldWall += res.Wall
			for k, n := range res.FaultsRun {
				faults[k] += n
			}
			if *want != "" {
				res.Violations = slices.DeleteFunc(res.Violations, func(v sim.Violation) bool {
					wanted := strings.Split(*want, ",")
					return !slices.Contains(wanted, v.Kind) && !slices.Contains(wanted, v.Sig)
				})
			}
			if res.Failed() {
				break
			}
		}
		if !res.Failed() {
			if ran%10 == 0 {
				fmt.Printf("%d seeds, %d failing, %v\n", ran, len(failing), time.Since(wall).Round(time.Second))
			}
			continue
		}
		seen := map[string]bool{}
		for _, v := range res.Violations {
			violations[v.Kind]++
			if seen[v.Sig] {
				continue
			}
			seen[v.Sig] = true
			d := distinct[v.Sig]
			if d == nil {
				d = &failure{first: seed, replay: sim.ReplayCommand(res.Plan, res.Kept, v.Sig)}
				distinct[v.Sig] = d
				sigs = append(sigs, v.Sig)
			}
			d.seeds++
		}
		fmt.Printf("\n=== FAIL %s\n", res)
		res.Report(os.Stdout)
		if *history {
			fmt.Println("whole history:")
			res.WriteHistory(os.Stdout)
		}
		replay := sim.ReplayCommand(res.Plan, res.Kept, res.Violations[0].Sig)
		if *shrink {
			small := sim.Shrink(t, full, res, *tries, func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
			if small != res {
				fmt.Printf("\n=== SHRUNK seed %d: %d of %d faults still fail\n", seed, len(small.Plan.Faults), len(res.Plan.Faults))
				small.Report(os.Stdout)
				replay = sim.ReplayCommand(small.Plan, small.Kept, small.Violations[0].Sig)
			}
		}
		failing = append(failing, fmt.Sprintf("seed %d: %s: %s", seed, res.Violations[0].Kind, replay))
		if *stopAtFirst {
			break
		}
	}
	el := time.Since(wall)
	var sum strings.Builder
	unit, kinds := "candidate", sim.Kinds
	if *world == sim.WorldShard {
		unit, kinds = "member", sim.ShardKinds
	}
	fmt.Fprintf(&sum, "seeds run: %d (from %d; %d worlds), %d %ss, %v virtual each\n", *seeds, *start, ran, *candidates, unit, *duration)
	fmt.Fprintf(&sum, "simulated: %.0f "+unit+"-minutes, %v of world time, in %v of wall time (%v in the worlds themselves)\n",
		candTime.Minutes(), simulated.Round(time.Second), el.Round(time.Millisecond), worldWall.Round(time.Millisecond))
	if s := worldWall.Seconds(); s > 0 {
		fmt.Fprintf(&sum, "rate: %.0f s of simulated time per wall second, %.0f simulated "+unit+"-minutes per wall minute\n",
			simulated.Seconds()/s, candTime.Minutes()/(s/60))
	}
	fmt.Fprintf(&sum, "requests: %d; busiest "+unit+"-minute: %d requests (%.0f%% of its budget)\n", requests, busiest, 100*busiestShare)
	if *world == sim.WorldShard {
		fmt.Fprintf(&sum, "invariant checks: %d; overlaps the contract allows: %d with a work past the safety margin, %d with a work of a crashed process\n",
			checks, overdue, crashed)
	} else {
		fmt.Fprintf(&sum, "invariant checks: %d; overlaps the contract allows: %d with a work past the safety margin, %d after a hand deletion with a leader that never saw the Lease, %d with a work whose process was paused past its renew deadline\n",
			checks, overdue, blind, paused)
		fmt.Fprintf(&sum, "paused processes: %d pauses; %d calls of Check at a paused leader's resumption; %d renewals sent past the deadline that did not land (counted apart)\n",
			faults[sim.KindPause], samples, lateFailed)
		fmt.Fprintf(&sum, "coordinated election: %d of %d worlds, %d assignments by the election controller; %d identity conflicts after an assignment (counted apart only in plans that are not strict: none since the fixes)\n",
			coordSeeds, ran, assigns, assignedConflicts)
		fmt.Fprintf(&sum, "hung works: %d returned past the safety margin, each counted as a disturbance (its process campaigns only then)\n", hungReturns)
	}
	fmt.Fprintf(&sum, "faults per kind:")
	for _, k := range kinds {
		fmt.Fprintf(&sum, " %s=%d", k, faults[k])
	}
	fmt.Fprintln(&sum)
	vkinds := make([]string, 0, len(violations))
	for k := range violations {
		vkinds = append(vkinds, k)
	}
	slices.Sort(vkinds)
	fmt.Fprintf(&sum, "violations: %d", len(failing))
	for _, k := range vkinds {
		fmt.Fprintf(&sum, " %s=%d", k, violations[k])
	}
	fmt.Fprintln(&sum)
	fmt.Print("\n" + sum.String())
	if *report != "" {
		name, intro := "sim", reportIntro
		if *world == sim.WorldShard {
			name, intro = "simshard", shardIntro
		}
		if err := writeReport(*report, name, intro, sum.String(), len(failing)); err != nil {
			fmt.Fprintln(os.Stderr, "sim: -report:", err)
			t.Fail()
		} else {
			fmt.Println("figures written to", *report)
		}
	}
	for _, f := range failing {
		fmt.Println("  FAILED", f)
	}
	if len(sigs) > 0 {
		fmt.Println("distinct failures (kind[the verbs and answers of the last requests]), in order of first seed:")
		for _, s := range sigs {
			d := distinct[s]
			fmt.Printf("  %s: %d seeds, first seed %d: %s\n", s, d.seeds, d.first, d.replay)
		}
	}
	if len(failing) > 0 {
		t.Fail()
	}
}
