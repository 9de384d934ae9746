package bench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
)

// Lib is one of the two libraries compared.
type Lib int

const (
	Leasehold Lib = iota
	ClientGo
)

// Libs lists both, in report order.
var Libs = []Lib{Leasehold, ClientGo}

func (l Lib) String() string {
	if l == Leasehold {
		return "leasehold"
	}
	return "client-go"
}

// verboseElectors sends the electors' logs to klog (BENCH_ELECTOR_LOGS=1).
var verboseElectors = os.Getenv("BENCH_ELECTOR_LOGS") == "1"

// Timings are LeaseDuration / RenewDeadline / RetryPeriod.
type Timings struct {
	Lease, Renew, Retry time.Duration
}

func (t Timings) String() string {
	return fmt.Sprintf("%v/%v/%v", t.Lease, t.Renew, t.Retry)
}

// DefaultTimings are both libraries' defaults.
var DefaultTimings = Timings{15 * time.Second, 10 * time.Second, 2 * time.Second}

// electorSpec describes one candidate.
type electorSpec struct {
	lib       Lib
	namespace string
	lease     string
	id        string
	timings   Timings
	release   bool // ReleaseOnCancel
	client    kubernetes.Interface
	rec       *Recorder
	shared    *leasehold.SharedWatch // leasehold only, optional
	// onStart is called first thing in OnStartedLeading, with the time.
	onStart func(e *elector, at time.Time)
}

// elector is one running candidate of either library.
type elector struct {
	spec    electorSpec
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // leasehold's Run error, or client-go's construction error
	leading atomic.Bool
	terms   atomic.Int32 // OnStartedLeading calls
	stopped atomic.Int32 // OnStoppedLeading calls after a term

	mu        sync.Mutex
	startedAt time.Time // last OnStartedLeading entry
}

func (e *elector) StartedAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.startedAt
}

func (e *elector) work(ctx context.Context) {
	now := time.Now()
	e.mu.Lock()
	e.startedAt = now
	e.mu.Unlock()
	e.terms.Add(1)
	e.leading.Store(true)
	if e.spec.onStart != nil {
		e.spec.onStart(e, now)
	}
	<-ctx.Done()
	e.leading.Store(false)
}

// startElector starts a candidate; stop it with stop.
func startElector(parent context.Context, spec electorSpec) *elector {
	logger := logr.Discard()
	if verboseElectors {
		logger = klog.Background().WithValues("bench", spec.id)
	}
	ctx, cancel := context.WithCancel(klog.NewContext(parent, logger))
	e := &elector{spec: spec, cancel: cancel, done: make(chan struct{})}
	t := spec.timings
	switch spec.lib {
	case Leasehold:
		cfg := leasehold.Config{
			Lock: &leasehold.LeaseLock{
				Namespace: spec.namespace,
				Name:      spec.lease,
				Identity:  spec.id,
				Client:    spec.client.CoordinationV1(),
			},
			LeaseDuration:   t.Lease,
			RenewDeadline:   t.Renew,
			RetryPeriod:     t.Retry,
			ReleaseOnCancel: spec.release,
			SharedWatch:     spec.shared,
			Callbacks: leasehold.Callbacks{
				OnStartedLeading: e.work,
				OnStoppedLeading: func() { e.stopped.Add(1) },
			},
		}
		go func() {
			defer close(e.done)
			e.err = leasehold.Run(ctx, cfg)
		}()
	case ClientGo:
		lock := &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: spec.namespace, Name: spec.lease},
			Client:     spec.client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: spec.id},
		}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   t.Lease,
			RenewDeadline:   t.Renew,
			RetryPeriod:     t.Retry,
			ReleaseOnCancel: spec.release,
			Name:            spec.namespace + "/" + spec.lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: e.work,
				OnStoppedLeading: func() {
					// client-go calls this also in a process that never
					// led; count only ends of terms.
					if e.terms.Load() > 0 {
						e.stopped.Add(1)
					}
				},
			},
		})
		if err != nil {
			e.err = err
			close(e.done)
			return e
		}
		go func() {
			defer close(e.done)
			le.Run(ctx)
		}()
	}
	return e
}

// ready reports whether a follower has made its first contact: leasehold
// has its watch open (or its shared subscription's GET done), client-go
// has made its first attempt.
func (e *elector) ready() bool {
	switch {
	case e.spec.lib == Leasehold && e.spec.shared == nil:
		return e.spec.rec.WatchesOpen() > 0
	default:
		return e.spec.rec.Requests("get")+e.spec.rec.Requests("create") > 0
	}
}

// stop cancels the candidate and waits for Run to return.
func (e *elector) stop(timeout time.Duration) error {
	e.cancel()
	select {
	case <-e.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s %s: Run did not return %v after cancel", e.spec.lib, e.spec.id, timeout)
	}
}

// stopAll cancels all candidates at once, then waits for each.
func stopAll(es []*elector, timeout time.Duration) error {
	for _, e := range es {
		e.cancel()
	}
	var first error
	deadline := time.Now().Add(timeout)
	for _, e := range es {
		select {
		case <-e.done:
		case <-time.After(time.Until(deadline)):
			if first == nil {
				first = fmt.Errorf("%s %s: Run did not return %v after cancel", e.spec.lib, e.spec.id, timeout)
			}
		}
	}
	return first
}

// waitFor polls cond every 2ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}
