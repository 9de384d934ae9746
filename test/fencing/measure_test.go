package fencing

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/bench"
)

// measureEnv, set to 1, runs TestMeasure at full size (as `make bench`'s
// fencing phase does, with a second API server). Unset, it runs small, as
// a check of the invariants. Its report is logged: run it with go test -v.
const measureEnv = "LEASEHOLD_FENCE_MEASURE"

// What the stamp policy costs per write, and how long after a takeover the
// API server still admits the old term: the bench's fencing phase
// (bench.RunFence, test/bench/fence.go) on this package's control plane.
// Report only: no timing is asserted. What is asserted holds whatever the
// timing: on one API server, once a write of the old term has been
// refused, no later write of it is admitted; the old term is refused and
// the new term admitted in the end of every takeover.
func TestMeasure(t *testing.T) {
	shared.Get(t)
	o := bench.FenceSmokeOptions()
	if os.Getenv(measureEnv) == "1" {
		o = bench.FenceFullOptions()
	}
	o.Log = testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res := bench.RunFence(ctx, cp, o)
	t.Log("\n" + res.Markdown())
	for _, e := range res.Errors {
		t.Error(e)
	}
	if len(res.Errors) == 0 && (res.Fenced.N() != o.Writes/2 || len(res.Takeovers) != o.Takeovers) {
		t.Errorf("%d fenced writes, %d takeovers; want %d and %d", res.Fenced.N(), len(res.Takeovers), o.Writes/2, o.Takeovers)
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
