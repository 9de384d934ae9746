// Command bench measures leasehold against client-go's leaderelection on
// a real kube-apiserver and etcd, and writes BENCHMARKS.md and the plots in
// docs/bench/ at the repository root.
//
//	cd test && go run ./cmd/bench           # full run, about 8 minutes (make bench)
//	cd test && go run ./cmd/bench -smoke    # quick run; writes nothing unless -out
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/bench"
)

func main() {
	smoke := flag.Bool("smoke", false, "quick run: 3 rounds, small N, short windows; writes BENCHMARKS.md only with -out")
	out := flag.String("out", "", "BENCHMARKS.md path (default: <repo root>/BENCHMARKS.md in a full run, none with -smoke)")
	rounds := flag.Int("rounds", 0, "handoff rounds per library (default 20, smoke 3)")
	failoverRounds := flag.Int("failover-rounds", 0, "failover rounds per library (default 5, smoke 3)")
	scaleN := flag.Int("scale", 0, "elections in the scale phase (default 1000, smoke 50)")
	micro := flag.Bool("micro", true, "run the root package's Go benchmarks (go test -bench) first")
	phases := flag.String("phases", "", "comma-separated subset of handoff,failover,steady,scale (default all)")
	scaleTimings := flag.String("scale-timings", "", "LeaseDuration/RenewDeadline/RetryPeriod for the scale phase, e.g. 30s/20s/5s")
	verbose := flag.Bool("v", false, "keep the libraries' and envtest's logs (klog) on stderr")
	flag.Parse()

	if !*verbose {
		klog.SetLogger(logr.Discard())
	}
	ctrllog.SetLogger(logr.Discard())

	opts := bench.FullOptions()
	if *smoke {
		opts = bench.SmokeOptions()
		opts.Micro = *micro
		opts.MicroBenchtime = "200x"
	} else {
		opts.Micro = *micro
	}
	if *rounds > 0 {
		opts.HandoffRounds, opts.LimitRounds = *rounds, *rounds
	}
	if *failoverRounds > 0 {
		opts.FailoverRounds = *failoverRounds
	}
	if *scaleN > 0 {
		opts.ScaleN = *scaleN
	}
	if *phases != "" {
		opts.Phases = strings.Split(*phases, ",")
	}
	if *scaleTimings != "" {
		t, err := parseTimings(*scaleTimings)
		if err != nil {
			fail(err)
		}
		opts.ScaleTimings, opts.ScaleTimingsNote = t, "set with -scale-timings"
	}
	opts.Log = os.Stderr

	root, err := bench.FindRoot()
	if err != nil {
		fail(err)
	}
	opts.RootDir = root
	path := *out
	if path == "" && !*smoke {
		path = filepath.Join(root, "BENCHMARKS.md")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	started := time.Now()
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		fail(err)
	}
	fmt.Println(rep.Table())

	if path != "" {
		dir := filepath.Join(filepath.Dir(path), "docs", "bench")
		plots, err := rep.WritePlots(dir, filepath.Dir(path))
		if err != nil {
			fail(err)
		}
		if err := rep.WriteMarkdown(path, plots); err != nil {
			fail(err)
		}
		fmt.Printf("wrote %s and %v\n", path, plots)
	}
	fmt.Printf("bench took %v\n", time.Since(started).Round(time.Second))
	if len(rep.Errors) > 0 {
		os.Exit(1)
	}
}

func parseTimings(s string) (bench.Timings, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return bench.Timings{}, fmt.Errorf("timings %q: want LeaseDuration/RenewDeadline/RetryPeriod", s)
	}
	var d [3]time.Duration
	for i, p := range parts {
		v, err := time.ParseDuration(p)
		if err != nil {
			return bench.Timings{}, fmt.Errorf("timings %q: %w", s, err)
		}
		d[i] = v
	}
	return bench.Timings{Lease: d[0], Renew: d[1], Retry: d[2]}, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
