// Command bench measures leasehold against client-go's leaderelection on
// a real kube-apiserver and etcd, and writes BENCHMARKS.md and the plots in
// docs/bench/ at the repository root.
//
//	cd test && go run ./cmd/bench           # full run (make bench), about 35 minutes; the scale phase about 10
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
	phases := flag.String("phases", "", "comma-separated subset of handoff,failover,steady,scale,handoffs,sharding,fencing (default all)")
	scaleTimings := flag.String("scale-timings", "", "LeaseDuration/RenewDeadline/RetryPeriod of the scale phase's main runs (default the defaults, 15s/10s/2s)")
	scaleRuns := flag.Int("scale-runs", -1, "scale runs at -scale-timings with JSON bodies, each leasehold then client-go (default 3, smoke 1)")
	scaleProtobuf := flag.Int("scale-protobuf-runs", -1, "scale runs at -scale-timings with protobuf bodies (default 1, smoke 0)")
	scaleCompare := flag.String("scale-compare", "", `timings of one more JSON scale run, for comparison, or "off" (default 30s/20s/5s, smoke off)`)
	scaleWindow := flag.Duration("scale-window", 0, "measured window of each scale run (default 45s, smoke 6s)")
	scaleWarmup := flag.Duration("scale-warmup", 0, "warm-up before each scale run's window (default 10s, smoke 2s)")
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
		opts.ScaleTimings = t
	}
	if *scaleRuns >= 0 {
		opts.ScaleRuns = *scaleRuns
	}
	if *scaleProtobuf >= 0 {
		opts.ScaleProtobufRuns = *scaleProtobuf
	}
	switch *scaleCompare {
	case "":
	case "off":
		opts.ScaleCompare = bench.Timings{}
	default:
		t, err := parseTimings(*scaleCompare)
		if err != nil {
			fail(err)
		}
		opts.ScaleCompare = t
	}
	if *scaleWindow > 0 {
		opts.ScaleWindow = *scaleWindow
	}
	if *scaleWarmup > 0 {
		opts.ScaleWarmup = *scaleWarmup
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
