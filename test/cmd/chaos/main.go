// Command chaos is `make chaos`: a seeded fault-injection run of leasehold
// on a real kube-apiserver and etcd (see package test/chaos). Five
// candidate processes, each behind its own fault-injecting proxy, take 300
// faults one at a time; a checker then verifies that no two ever worked at
// once, that leadership came back within LeaseDuration + RetryPeriod + 1s of
// each healed fault, that every term ended exactly once, and that
// leaseTransitions only grew. It prints a report with a markdown block for
// the README, and exits 1 if any check failed.
//
//	cd test && go run ./cmd/chaos [-faults 300] [-seed 1] [-candidates 5]
//
// Everything it writes (candidate binary, kubeconfigs, one log per
// candidate incarnation) goes under bin/chaos/ (git-ignored).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/chaos"
	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/walkthrough"
)

func main() {
	faults := flag.Int("faults", 300, "number of faults to inject")
	seed := flag.Uint64("seed", 1, "seed of the fault plan")
	n := flag.Int("candidates", 5, "number of candidate processes")
	l := flag.Duration("lease-duration", chaos.DefaultTimings.LeaseDuration, "LeaseDuration of the candidates")
	d := flag.Duration("renew-deadline", chaos.DefaultTimings.RenewDeadline, "RenewDeadline of the candidates")
	p := flag.Duration("retry-period", chaos.DefaultTimings.RetryPeriod, "RetryPeriod of the candidates")
	flag.Parse()
	os.Exit(run(*faults, *seed, *n, chaos.Timings{LeaseDuration: *l, RenewDeadline: *d, RetryPeriod: *p}))
}

func run(faults int, seed uint64, n int, t chaos.Timings) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())
	began := time.Now()

	root, err := walkthrough.RepoRoot()
	if err != nil {
		return fail(err)
	}
	dir := filepath.Join(root, "bin", "chaos", fmt.Sprintf("seed-%d", seed))
	if err := os.RemoveAll(dir); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	bin, err := chaos.BuildCandidate(filepath.Join(root, "bin", "chaos"))
	if err != nil {
		return fail(err)
	}
	fmt.Printf("built the candidate in %v\n", time.Since(began).Round(time.Millisecond))
	cp, err := controlplane.Start()
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
		}
	}()
	fmt.Printf("control plane ready in %v\n", cp.StartupTime.Round(time.Millisecond))

	rec, err := chaos.Run(ctx, chaos.Config{
		Admin: cp.Config(), Candidate: bin, N: n, Faults: faults, Seed: seed, Timings: t,
		WorkDir: dir,
		Logf:    func(format string, args ...any) { fmt.Printf(format+"\n", args...) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: run ended early:", err)
		if rec == nil || ctx.Err() != nil {
			return 1
		}
	}
	report := chaos.Check(rec)
	report.Print(os.Stdout)
	fmt.Printf("logs: %s\n", dir)
	if err != nil || !report.OK() {
		return 1
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "chaos:", err)
	return 1
}
