package chaos

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/controlplane"
)

// TestPlanDeterministic: one seed, one plan.
func TestPlanDeterministic(t *testing.T) {
	a, b := Plan(42, 200, DefaultTimings), Plan(42, 200, DefaultTimings)
	seen := map[Kind]bool{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("fault %d differs between two plans of one seed: %+v vs %+v", i, a[i], b[i])
		}
		seen[a[i].Kind] = true
	}
	for _, k := range Kinds {
		if !seen[k] {
			t.Errorf("200 faults without a single %s", k)
		}
	}
	if c := Plan(43, 200, DefaultTimings); c[0] == a[0] && c[1] == a[1] && c[2] == a[2] {
		t.Errorf("seeds 42 and 43 start with the same faults")
	}
}

// TestChaos is the short version of `make chaos`: 40 faults on 5
// candidate processes and a real control plane, about 2 minutes. Set
// LEASEHOLD_CHAOS_SEED and LEASEHOLD_CHAOS_FAULTS to vary it.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	seed, faults := uint64(1), 40
	if s := os.Getenv("LEASEHOLD_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	if s := os.Getenv("LEASEHOLD_CHAOS_FAULTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		faults = v
	}
	ctrllog.SetLogger(logr.Discard())

	// Candidate logs are kept when the test fails.
	dir, err := os.MkdirTemp("", "leasehold-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("candidate logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	began := time.Now()
	bin, err := BuildCandidate(dir)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start()
	if err != nil {
		t.Fatalf("the chaos test needs a real control plane: %v", err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	t.Logf("candidate built and control plane ready in %v", time.Since(began).Round(time.Millisecond))

	rec, err := Run(context.Background(), Config{
		Admin: cp.Config(), Candidate: bin, Faults: faults, Seed: seed, WorkDir: dir,
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	r := Check(rec)
	var b strings.Builder
	r.Print(&b)
	t.Log(b.String())
	for _, f := range r.Failures {
		t.Error(f)
	}
	if len(r.Faults) < 8 {
		t.Errorf("only %d kinds of fault injected in %d faults", len(r.Faults), faults)
	}
}
