//go:build simsample

// TestSample runs under the simsample build tag, which the Makefile's
// unit target sets (make test), so that the integration target's
// go test ./... does not run it a second time:
//
//	cd test && go test -race -count=1 -tags simsample ./sim/

package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// sample is the fixed set of worlds TestSample runs: 216 worlds, about
// 41 hours of virtual time, 20 to 30 seconds under -race on 2 cores.
var sample = []struct {
	first, seeds uint64
	candidates   int
	duration     time.Duration
}{
	{1, 150, 3, 10 * time.Minute},
	{1001, 30, 5, 10 * time.Minute},
	{2001, 30, 2, 10 * time.Minute},
	{3001, 6, 3, time.Hour},
}

// shardSample is the fixed set of shard worlds TestSample runs after
// sample: 3 members, K drawn per seed.
var shardSample = struct {
	first, seeds uint64
	members      int
	duration     time.Duration
}{1, 30, 3, 10 * time.Minute}

// TestSample runs a fixed sample of seeds, as make test does, and fails
// on any violation, with the history around the first ones and the
// command that replays each. go run ./cmd/sim runs many more, and
// shrinks what fails.
func TestSample(t *testing.T) {
	var worlds, failed int
	var simulated, cand, wall time.Duration
	for _, b := range sample {
		n := b.seeds
		if testing.Short() {
			n = max(1, n/10)
		}
		for seed := b.first; seed < b.first+n; seed++ {
			r := Run(t, NewPlan(seed, b.candidates, b.duration), Options{})
			worlds++
			simulated += r.Simulated
			cand += r.CandidateTime
			wall += r.Wall
			if !r.Failed() {
				continue
			}
			failed++
			var out strings.Builder
			if failed <= 3 {
				r.Report(&out)
			} else {
				for _, v := range r.Violations {
					fmt.Fprintf(&out, "  VIOLATION %s\n", v)
				}
				fmt.Fprintf(&out, "replay: %s\n", ReplayCommand(r.Plan, nil, r.Violations[0].Sig))
			}
			t.Errorf("%s\n%s", r, out.String())
		}
	}
	t.Logf("%d worlds, %d failed: %v of virtual time, %.0f candidate-minutes, in %v of wall time",
		worlds, failed, simulated.Round(time.Second), cand.Minutes(), wall.Round(time.Millisecond))
	testShardSample(t)
}

// testShardSample runs shardSample as TestSample runs sample.
func testShardSample(t *testing.T) {
	var worlds, failed int
	var simulated, members, wall time.Duration
	b := shardSample
	n := b.seeds
	if testing.Short() {
		n = max(1, n/10)
	}
	for seed := b.first; seed < b.first+n; seed++ {
		r := Run(t, NewShardPlan(seed, b.members, b.duration), Options{})
		worlds++
		simulated += r.Simulated
		members += r.CandidateTime
		wall += r.Wall
		if !r.Failed() {
			continue
		}
		failed++
		var out strings.Builder
		r.Report(&out)
		t.Errorf("shard %s\n%s", r, out.String())
	}
	t.Logf("shard: %d worlds, %d failed: %v of virtual time, %.0f member-minutes, in %v of wall time",
		worlds, failed, simulated.Round(time.Second), members.Minutes(), wall.Round(time.Millisecond))
}
