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
//	YIELD <id> <to> <result> <unix-nanos>   a Yield (SIGUSR1) returned:
//	                          to is the successor or *, result ok or the error
//
// SIGUSR1 asks the leader to yield: to the identity written in the file
// -yield-file, or to anyone if it is empty, missing or "*".
//
// With -shards K, the candidate is instead a member of the shard group
// named -name (package shard), and its work lines name the shard:
//
//	START <id> <shard> <unix-nanos>   OnShardStarted entered
//	END <id> <shard> <unix-nanos>     OnShardStarted returns
//	OSL <id> <shard> <unix-nanos>     OnShardStopped called
//
// With -fenced, the work updates the ConfigMap "fenced" every 20ms,
// stamped with its term (fence.Stamp) and conditioned on the version it
// read; a write paused with the process reaches the API server after a
// takeover, and the fence policy must refuse it. Each refusal is a line:
//
//	REFUSED <id> <term> <unix-nanos>
//
// The client speaks JSON, so that the chaos proxy can read watch events.
//
// klog goes to stderr. Exit status: 0 after SIGINT/SIGTERM with Run
// returning nil, 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/shard"
)

func main() {
	var (
		kubeconfig, namespace, name, id, yieldFile string
		l, d, p                                    time.Duration
		shards                                     int
		fenced                                     bool
	)
	klog.InitFlags(nil)
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (the chaos proxy)")
	flag.StringVar(&namespace, "namespace", "default", "namespace of the Lease")
	flag.StringVar(&name, "name", "chaos", "name of the Lease")
	flag.StringVar(&id, "id", "", "identity (required)")
	flag.DurationVar(&l, "lease-duration", 3*time.Second, "LeaseDuration")
	flag.DurationVar(&d, "renew-deadline", 2*time.Second, "RenewDeadline")
	flag.DurationVar(&p, "retry-period", 500*time.Millisecond, "RetryPeriod")
	flag.StringVar(&yieldFile, "yield-file", "", "file naming the successor of a Yield asked by SIGUSR1")
	flag.IntVar(&shards, "shards", 0, "run as a member of shard group -name with this many shards")
	flag.BoolVar(&fenced, "fenced", false, "the work writes the ConfigMap \"fenced\", stamped with its term")
	flag.Parse()
	os.Exit(run(kubeconfig, namespace, name, id, yieldFile, l, d, p, shards, fenced))
}

func run(kubeconfig, namespace, name, id, yieldFile string, l, d, p time.Duration, shards int, fenced bool) int {
	defer klog.Flush()
	if id == "" {
		fmt.Fprintln(os.Stderr, "-id is required")
		return 2
	}
	// Before anything else: SIGUSR1's default action ends the process.
	usr1 := make(chan os.Signal, 4)
	signal.Notify(usr1, syscall.SIGUSR1)
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
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	// As docs/contract.md recommends: one hung request cannot use up the
	// renew deadline.
	clientset, err := kubernetes.NewForConfig(leasehold.WithRequestTimeout(cfg, d))
	if err != nil {
		log.Error(err, "clientset")
		return 1
	}
	if shards > 0 {
		return runShard(ctx, log, clientset, namespace, name, id, l, d, p, shards)
	}
	// The work's own client: its writes must not queue behind the
	// election's client-side rate limit, nor the election behind them.
	workCfg := rest.CopyConfig(cfg)
	workCfg.QPS, workCfg.Burst = 500, 1000
	workClient, err := kubernetes.NewForConfig(leasehold.WithRequestTimeout(workCfg, d))
	if err != nil {
		log.Error(err, "clientset")
		return 1
	}
	el, err := leasehold.New(leasehold.Config{
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
				if fenced {
					fencedWork(ctx, log, workClient, namespace, id)
					return
				}
				work(ctx)
			},
			OnStoppedLeading: func() { emit("OSL", id) },
			OnNewLeader:      func(leader string) { emit("NEWLEADER", id, leader) },
		},
	})
	if err != nil {
		log.Error(err, "New")
		return 1
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				to := ""
				if b, err := os.ReadFile(yieldFile); err == nil {
					to = strings.TrimSpace(string(b))
				}
				go yield(ctx, el, id, to)
			}
		}
	}()
	if err := el.Run(ctx); err != nil {
		log.Error(err, "Run returned an error")
		return 1
	}
	log.Info("Run returned nil")
	return 0
}

// yield asks el to yield to to ("" or "*": anyone) and reports the result.
func yield(ctx context.Context, el *leasehold.Elector, id, to string) {
	if to == "" {
		to = "*"
	}
	result := "ok"
	if err := el.Yield(ctx, to); err != nil {
		switch {
		case errors.Is(err, leasehold.ErrNotLeading):
			result = "not-leading"
		case errors.Is(err, leasehold.ErrLeaderLost):
			result = "lost"
		case errors.Is(err, leasehold.ErrStepDownTimeout):
			result = "step-down-timeout"
		case ctx.Err() != nil:
			result = "cancelled"
		default:
			result = "error"
		}
		klog.FromContext(ctx).Info("Yield returned an error", "to", to, "err", err)
	}
	emit("YIELD", id, to, result)
}

// runShard runs a member of shard group name.
func runShard(ctx context.Context, log klog.Logger, cs kubernetes.Interface, namespace, name, id string, l, d, p time.Duration, shards int) int {
	m, err := shard.New(shard.Config{
		Namespace: namespace, Group: name, Identity: id,
		Client: cs.CoordinationV1(), Shards: shards,
		LeaseDuration: l, RenewDeadline: d, RetryPeriod: p,
		ReleaseOnCancel: true,
		OnShardStarted: func(ctx context.Context, i int) {
			s := strconv.Itoa(i)
			emit("START", id, s)
			defer emit("END", id, s)
			work(ctx)
		},
		OnShardStopped: func(i int) { emit("OSL", id, strconv.Itoa(i)) },
	})
	if err != nil {
		log.Error(err, "shard.New")
		return 1
	}
	if err := m.Run(ctx); err != nil {
		log.Error(err, "Run returned an error")
		return 1
	}
	log.Info("Run returned nil")
	return 0
}

// fencedWork updates the ConfigMap "fenced" every 20ms until ctx ends:
// read, set this candidate as writer, stamp with the term, update
// conditioned on the version read (create it if missing), with ctx, as a
// controller does. A write sent before the process is paused, or sent on
// resume before the elector has cancelled ctx, reaches the API server
// after another replica took over: the fence must refuse it.
func fencedWork(ctx context.Context, log klog.Logger, cs kubernetes.Interface, namespace, id string) {
	cms := cs.CoreV1().ConfigMaps(namespace)
	term := "?"
	if t, ok := leasehold.TermFromContext(ctx); ok {
		term = strconv.Itoa(int(t.Transitions))
	}
	var admitted, refused, conflicts, failed int
	defer func() {
		log.V(2).Info("Fenced work returned", "term", term, "admitted", admitted, "refused", refused, "conflicts", conflicts, "failed", failed)
	}()
	write := func(seq int) error {
		cm, err := cms.Get(ctx, "fenced", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm, err = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "fenced", Namespace: namespace}}, nil
		}
		if err != nil {
			return err
		}
		cm.Data = map[string]string{"writer": id, "term": term, "seq": strconv.Itoa(seq)}
		if err := fence.Stamp(ctx, cm); err != nil {
			return err
		}
		if cm.ResourceVersion == "" {
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		} else {
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seq := 0; ctx.Err() == nil; seq++ {
		switch err := write(seq); {
		case err == nil:
			admitted++
		case fence.IsFenced(err):
			refused++
			emit("REFUSED", id, term)
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			conflicts++
		case ctx.Err() != nil:
		default:
			failed++
			if failed <= 3 || failed%100 == 0 {
				log.V(2).Info("Fenced write failed", "term", term, "err", err, "failed", failed)
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
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
