// Command chaos is `make chaos`: a seeded fault-injection run of leasehold
// on a real kube-apiserver and etcd (see package test/chaos). Five
// candidate processes, each behind its own fault-injecting proxy, take 300
// faults one at a time; a checker then verifies that no two ever worked at
// once, that leadership came back within LeaseDuration + RetryPeriod + 1s of
// each healed fault, that every term ended exactly once, and that
// leaseTransitions only grew. It prints a report with a markdown block for
// docs/reliability.md, and exits 1 if any check failed.
//
//	cd test && go run ./cmd/chaos [-faults 300] [-seed 1] [-candidates 5]
//	    [-mode election|yield|shard] [-kinds candidate,controlplane,ha,yield|all|<kind>,...]
//	    [-apiservers 1|2] [-watch-cache auto|true|false] [-shards 64]
//	cd test && go run ./cmd/chaos -measure-lag 0,500ms,1s,2s [-rounds 3]
//
// Without -kinds, the election mode draws the candidates' faults (the
// classic plan, one seed one plan), the yield mode mixes yields with them,
// and the shard mode mixes them. -kinds all adds every control-plane and
// two-server fault: it starts a second kube-apiserver and turns the watch
// cache off, so that etcd compactions bring real 410s.
//
// -measure-lag runs no random faults: three candidates on two
// kube-apiservers, the leader on one and its followers on the other,
// whose watch events are delayed by each lag in turn; the leader is
// SIGKILLed, or yields, -rounds times per lag, and a table of takeover
// times is printed.
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
	"slices"
	"strings"
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
	mode := flag.String("mode", chaos.ModeElection, "election, yield or shard")
	kinds := flag.String("kinds", "", "fault kinds, comma-separated: kind names or the groups candidate, controlplane, ha, yield, all (default: the mode's)")
	apiservers := flag.Int("apiservers", 0, "kube-apiservers on the one etcd, 1 or 2 (default: 2 if an ha kind is drawn)")
	watchCache := flag.String("watch-cache", "auto", "kube-apiserver's --watch-cache: true, false, or auto (false if etcd-compaction is drawn)")
	shards := flag.Int("shards", 64, "K in -mode shard")
	measureLag := flag.String("measure-lag", "", "comma-separated watch lags: measure takeovers through a lagging kube-apiserver instead of injecting random faults")
	rounds := flag.Int("rounds", 3, "with -measure-lag: crashes and yields per lag")
	flag.Parse()
	cfg := chaos.Config{N: *n, Faults: *faults, Seed: *seed, Mode: *mode, Shards: *shards, APIServers: *apiservers,
		Timings: chaos.Timings{LeaseDuration: *l, RenewDeadline: *d, RetryPeriod: *p}}
	if *mode != chaos.ModeShard {
		cfg.Shards = 0
	}
	if *measureLag != "" {
		var lags []time.Duration
		for _, s := range strings.Split(*measureLag, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				os.Exit(fail(fmt.Errorf("-measure-lag: %w", err)))
			}
			lags = append(lags, d)
		}
		cfg.N, cfg.APIServers, cfg.Script = 3, 2, chaos.LagPlan(lags, *rounds)
		os.Exit(run(cfg))
	}
	w, err := weights(*mode, *kinds)
	if err != nil {
		os.Exit(fail(err))
	}
	cfg.Weights = w
	if cfg.APIServers == 0 {
		cfg.APIServers = 1
		for _, k := range chaos.HAKinds {
			if w[k] > 0 {
				cfg.APIServers = 2
			}
		}
	}
	switch *watchCache {
	case "auto":
		cfg.WatchCacheOff = w[chaos.KindCompact] > 0
	case "true", "false":
		cfg.WatchCacheOff = *watchCache == "false"
	default:
		os.Exit(fail(fmt.Errorf("-watch-cache %q: auto, true or false", *watchCache)))
	}
	os.Exit(run(cfg))
}

// weights returns the plan's weights for a mode and a -kinds value; nil
// is the classic plan of the candidates' faults.
func weights(mode, kinds string) (map[chaos.Kind]int, error) {
	if kinds == "" {
		switch mode {
		case chaos.ModeElection:
			return nil, nil
		case chaos.ModeYield:
			kinds = "candidate,yield"
		default:
			kinds = "candidate"
		}
	}
	var ks []chaos.Kind
	for _, name := range strings.Split(kinds, ",") {
		switch name = strings.TrimSpace(name); name {
		case "candidate":
			ks = append(ks, chaos.CandidateKinds...)
		case "controlplane":
			ks = append(ks, chaos.ControlPlaneKinds...)
		case "ha":
			ks = append(ks, chaos.HAKinds...)
		case "yield":
			ks = append(ks, chaos.YieldKinds...)
		case "all":
			ks = slices.Concat(ks, chaos.CandidateKinds, chaos.ControlPlaneKinds, chaos.HAKinds)
			if mode == chaos.ModeYield {
				ks = append(ks, chaos.YieldKinds...)
			}
		default:
			if !slices.Contains(chaos.Kinds, chaos.Kind(name)) {
				return nil, fmt.Errorf("-kinds: unknown kind or group %q (kinds: %v)", name, chaos.Kinds)
			}
			ks = append(ks, chaos.Kind(name))
		}
	}
	return chaos.Weights(ks...), nil
}

func run(cfg chaos.Config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())
	began := time.Now()

	root, err := walkthrough.RepoRoot()
	if err != nil {
		return fail(err)
	}
	dir := filepath.Join(root, "bin", "chaos", fmt.Sprintf("%s-seed-%d", cfg.Mode, cfg.Seed))
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
	var opts []controlplane.Option
	if cfg.WatchCacheOff {
		opts = append(opts, controlplane.WithAPIServerFlag("watch-cache", "false"))
	}
	cp, err := controlplane.Start(opts...)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
		}
	}()
	fmt.Printf("control plane ready in %v\n", cp.StartupTime.Round(time.Millisecond))

	cfg.ControlPlane, cfg.Candidate, cfg.WorkDir = cp, bin, dir
	cfg.Logf = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	rec, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: run ended early:", err)
		if rec == nil || ctx.Err() != nil {
			return 1
		}
	}
	report := chaos.Check(rec)
	report.Print(os.Stdout)
	report.LagTable(os.Stdout)
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
