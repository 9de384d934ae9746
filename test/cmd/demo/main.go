// Command demo is `make demo`: the walk-through of docs/demo.md, live. It
// starts a real etcd and kube-apiserver, runs three copies of
// examples/leader-election on the Lease default/example with the
// walk-through's timings (15s/10s/2s), and narrates what happens:
//
//   - one process is elected and the others follow it;
//   - SIGINT to the leader: its work stops, it releases the Lease, and
//     another process leads within milliseconds;
//   - SIGKILL to the new leader: nobody releases, the last process takes
//     over once the lease has expired, about LeaseDuration later;
//   - the Lease as `kubectl get lease -o yaml` and `kubectl get lease`
//     show it.
//
// Everything it writes goes under bin/demo/ (git-ignored): the example
// binary, the kubeconfig, and each process's log. Every process it starts
// is stopped when it ends, also on Ctrl-C.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/walkthrough"
)

const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())
	began := time.Now()

	root, err := walkthrough.RepoRoot()
	if err != nil {
		return fail(err)
	}
	dir := filepath.Join(root, "bin", "demo")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return fail(err)
	}
	rel := func(p string) string {
		if r, err := filepath.Rel(root, p); err == nil {
			return r
		}
		return p
	}

	fmt.Println("== leasehold demo: three processes, one Lease, one leader at a time")
	t := time.Now()
	bin, err := walkthrough.BuildExample(dir)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("built examples/leader-election into %s in %v\n", rel(bin), since(t))

	t = time.Now()
	cp, err := controlplane.Start()
	if err != nil {
		return fail(err)
	}
	defer func() {
		t := time.Now()
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		fmt.Printf("control plane stopped in %v\n", since(t))
		fmt.Printf("demo took %v in all\n", since(began))
	}()
	fmt.Printf("started etcd + kube-apiserver (%s) in %v\n", rel(cp.BinDir()), since(t))

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, nil); err != nil {
		return fail(err)
	}
	admin, err := kubernetes.NewForConfig(cp.Config())
	if err != nil {
		return fail(err)
	}
	fmt.Printf("kubeconfig: %s; process logs: %s/<id>.log\n", rel(kubeconfig), rel(filepath.Join(dir, "logs")))
	fmt.Printf("each process: %s -kubeconfig=%s -lease-lock-name=example -lease-lock-namespace=default -id=<1|2|3> -lease-duration=%v -renew-deadline=%v -retry-period=%v\n\n",
		rel(bin), rel(kubeconfig), leaseDuration, renewDeadline, retryPeriod)

	res, err := walkthrough.Run(ctx, walkthrough.Options{
		Binary: bin, Kubeconfig: kubeconfig, Namespace: "default", LeaseName: "example",
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
		Admin: admin, LogDir: filepath.Join(dir, "logs"),
		Logf: func(format string, args ...any) { fmt.Printf(format+"\n", args...) },
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Println("\ninterrupted: stopped every process")
			return 130
		}
		return fail(err)
	}

	fmt.Println("\n== the Lease while", res.ThirdLeader, "holds it: kubectl get lease example -o yaml")
	if err := printYAML(res.HeldLease); err != nil {
		return fail(err)
	}
	fmt.Println("\n== kubectl get lease (while held, then after the last SIGINT released it)")
	printTable(res.HeldLease, res.FinalLease)

	fmt.Println("\n== summary")
	terms := walkthrough.Terms(res.Events, res.Kills)
	for _, tm := range terms {
		end := "STOPPED"
		if tm.Killed {
			end = "SIGKILL"
		}
		fmt.Printf("  term of %s: [%7.3fs, %7.3fs] %s\n", tm.ID, tm.Start.Sub(res.Start).Seconds(), tm.End.Sub(res.Start).Seconds(), end)
	}
	if o := walkthrough.Overlaps(terms); len(o) > 0 {
		fmt.Println("  TWO LEADERS AT ONCE:", strings.Join(o, "; "))
	} else {
		fmt.Println("  exactly one leader at a time: no two terms overlap")
	}
	fmt.Printf("  SIGINT handoff:  %v from %s's work stopping to %s leading (%v from the signal)\n",
		res.SIGINTHandoff().Round(time.Microsecond), res.Interrupted, res.SecondLeader, res.SIGINTHandoffFromSignal().Round(time.Microsecond))
	fmt.Printf("  SIGKILL handoff: %v from the kill of %s to %s leading (LeaseDuration %v; expected in [L-P, L] = [%v, %v])\n",
		res.KillHandoff().Round(time.Millisecond), res.Killed, res.ThirdLeader, leaseDuration, leaseDuration-retryPeriod, leaseDuration)
	for _, s := range res.Steps {
		fmt.Printf("  step %-50s %v\n", s.Name, s.Took.Round(time.Millisecond))
	}

	fmt.Println("\n== the operators' view: a real kubectl and the kubectl-leasehold plugin, two processes on Lease default/operated")
	if err := operatorsView(ctx, root, dir, cp.BinDir(), bin, kubeconfig); err != nil {
		return fail(err)
	}
	return 0
}

// printYAML prints the Lease as kubectl get -o yaml would.
func printYAML(l *coordinationv1.Lease) error {
	l = l.DeepCopy()
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	l.ManagedFields = nil
	b, err := yaml.Marshal(l)
	if err != nil {
		return err
	}
	fmt.Print(string(b))
	return nil
}

// printTable prints leases as kubectl get lease does: NAME HOLDER AGE.
func printTable(leases ...*coordinationv1.Lease) {
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tHOLDER\tAGE")
	for _, l := range leases {
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", l.Name, holder, duration.HumanDuration(time.Since(l.CreationTimestamp.Time)))
	}
	_ = w.Flush()
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "demo:", err)
	return 1
}
