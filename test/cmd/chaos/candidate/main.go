// Command candidate is one replica under the chaos harness (test/chaos):
// a leasehold elector with Rejoin and ReleaseOnCancel whose "work" is a
// loop of 10ms steps that checks its ctx at every step, so it stops within
// a few milliseconds of being cancelled.
//
// stdout carries one line per event, times in Unix nanoseconds of this
// machine's wall clock:
//
//	START <id> <unix-nanos>   OnStartedLeading entered (work begins)
//	END <id> <unix-nanos>     OnStartedLeading returns (work has ended)
//	OSL <id> <unix-nanos>     OnStoppedLeading called
//	NEWLEADER <id> <leader> <unix-nanos>
//	EXIT <id> <unix-nanos>    Run returned; the process exits
//
// klog goes to stderr. Exit status: 0 after SIGINT/SIGTERM with Run
// returning nil, 1 otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
)

func main() {
	var (
		kubeconfig, namespace, name, id string
		l, d, p                         time.Duration
	)
	klog.InitFlags(nil)
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (the chaos proxy)")
	flag.StringVar(&namespace, "namespace", "default", "namespace of the Lease")
	flag.StringVar(&name, "name", "chaos", "name of the Lease")
	flag.StringVar(&id, "id", "", "identity (required)")
	flag.DurationVar(&l, "lease-duration", 3*time.Second, "LeaseDuration")
	flag.DurationVar(&d, "renew-deadline", 2*time.Second, "RenewDeadline")
	flag.DurationVar(&p, "retry-period", 500*time.Millisecond, "RetryPeriod")
	flag.Parse()
	os.Exit(run(kubeconfig, namespace, name, id, l, d, p))
}

func run(kubeconfig, namespace, name, id string, l, d, p time.Duration) int {
	defer klog.Flush()
	if id == "" {
		fmt.Fprintln(os.Stderr, "-id is required")
		return 2
	}
	defer emit("EXIT", id)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := klog.Background().WithValues("id", id)
	ctx = klog.NewContext(ctx, log)

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		log.Error(err, "kubeconfig")
		return 1
	}
	// As the README recommends: one hung request cannot use up the
	// renew deadline.
	clientset, err := kubernetes.NewForConfig(leasehold.WithRequestTimeout(cfg, d))
	if err != nil {
		log.Error(err, "clientset")
		return 1
	}
	err = leasehold.Run(ctx, leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: namespace, Name: name, Identity: id,
			Client: clientset.CoordinationV1(),
		},
		LeaseDuration: l, RenewDeadline: d, RetryPeriod: p,
		ReleaseOnCancel: true,
		Rejoin:          true,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				emit("START", id)
				defer emit("END", id)
				work(ctx)
			},
			OnStoppedLeading: func() { emit("OSL", id) },
			OnNewLeader:      func(leader string) { emit("NEWLEADER", id, leader) },
		},
	})
	if err != nil {
		log.Error(err, "Run returned an error")
		return 1
	}
	log.Info("Run returned nil")
	return 0
}

// work runs 10ms steps until ctx is cancelled; it notices a cancellation
// at once (the select), never later than the step in progress.
func work(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

var mu sync.Mutex

// emit writes one event line; the time is taken under the lock, so lines
// of one process are in time order.
func emit(event string, fields ...string) {
	mu.Lock()
	defer mu.Unlock()
	line := event + " " + strings.Join(fields, " ") + " " + fmt.Sprint(time.Now().UnixNano()) + "\n"
	_, _ = os.Stdout.WriteString(line)
}
