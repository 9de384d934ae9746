package slowapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/internal/sleep"
)

// Library is one of the three elections compared.
type Library string

const (
	Leasehold         Library = "leasehold"
	ClientGo          Library = "client-go"
	ControllerRuntime Library = "controller-runtime"
)

// Libraries lists them in report order.
var Libraries = []Library{Leasehold, ClientGo, ControllerRuntime}

// run runs replica s of the world until ctx ends.
func (l Library) run(ctx context.Context, w *world, s *slot) {
	switch l {
	case Leasehold:
		runLeasehold(ctx, w, s)
	case ClientGo:
		runClientGo(ctx, w, s)
	case ControllerRuntime:
		runControllerRuntime(ctx, w, s)
	default:
		panic("slowapi: unknown library " + string(l))
	}
}

// runLeasehold: one Elector, Rejoin so that a lost term is followed by a
// new campaign in the same process; the work blocks until its ctx ends.
func runLeasehold(ctx context.Context, w *world, s *slot) {
	for ctx.Err() == nil {
		err := leasehold.Run(ctx, leasehold.Config{
			Lock: &leasehold.LeaseLock{Namespace: Namespace, Name: LeaseName, Identity: s.name,
				Client: w.client(s, s.name, 0)},
			LeaseDuration:   LeaseDuration,
			RenewDeadline:   RenewDeadline,
			RetryPeriod:     RetryPeriod,
			ReleaseOnCancel: true,
			Rejoin:          true,
			Callbacks: leasehold.Callbacks{
				OnStartedLeading: func(ctx context.Context) {
					wk := w.workStarted(s)
					<-ctx.Done()
					w.workEnded(wk)
				},
			},
		})
		if err != nil && ctx.Err() == nil {
			// With Rejoin, Run returns only on ctx, an identity
			// conflict or a step-down timeout: none should happen.
			w.runError(s, err)
			sleep.For(ctx, RetryPeriod)
		}
	}
}

// clientGoConfig is client-go's LeaderElectionConfig for replica s
// writing as id through cl, with the world's timings and
// ReleaseOnCancel.
func clientGoConfig(id string, cl *client, cb leaderelection.LeaderCallbacks) leaderelection.LeaderElectionConfig {
	return leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: Namespace, Name: LeaseName},
			Client:     cl,
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   LeaseDuration,
		RenewDeadline:   RenewDeadline,
		RetryPeriod:     RetryPeriod,
		ReleaseOnCancel: true,
		Name:            LeaseName,
		Callbacks:       cb,
	}
}

// runClientGo: client-go's leaderelection as a library. Its Run returns
// when a term is lost; the process runs a new LeaderElector at once, under
// the same identity. The work is OnStartedLeading, until its ctx ends.
func runClientGo(ctx context.Context, w *world, s *slot) {
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(clientGoConfig(s.name, w.client(s, s.name, 0), leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				wk := w.workStarted(s)
				<-ctx.Done()
				w.workEnded(wk)
			},
			OnStoppedLeading: func() {},
		}))
		if err != nil {
			panic(fmt.Sprintf("slowapi: client-go: %v", err))
		}
		le.Run(ctx)
	}
}

// Controller-runtime's manager election (sigs.k8s.io/controller-runtime
// v0.25.2), modelled on client-go's leaderelection with what the manager
// sets (see the package documentation for the citations):
const (
	// crRequestTimeout is rest.Config.Timeout of the leader-election
	// client: max(RenewDeadline/2, 1s) (pkg/leaderelection/leader_election.go:105-108).
	crRequestTimeout = max(RenewDeadline/2, time.Second)
	// The kubelet's restart back-off for a container that exited: 10s,
	// doubled after each restart up to 5m, reset once the container ran
	// 10m.
	restartBackoffInitial = 10 * time.Second
	restartBackoffMax     = 5 * time.Minute
	restartBackoffReset   = 10 * time.Minute
)

// runControllerRuntime runs replica s as controller-runtime manager
// processes: one process runs until its election is lost, exits, and the
// kubelet starts a new one after its restart back-off.
func runControllerRuntime(ctx context.Context, w *world, s *slot) {
	backoff := restartBackoffInitial
	for n := 0; ; n++ {
		// A new process, a new identity: hostname + "_" + a new UUID
		// (pkg/leaderelection/leader_election.go:93-97).
		id := fmt.Sprintf("%s_%d", s.name, n)
		started := time.Now()
		if !runManager(ctx, w, s, id) {
			return // the world stops
		}
		if time.Since(started) >= restartBackoffReset {
			backoff = restartBackoffInitial
		}
		if sleep.For(ctx, backoff) != nil {
			return
		}
		backoff = min(2*backoff, restartBackoffMax)
		w.mu.Lock()
		if !w.stopping {
			w.res.Restarts++
		}
		w.mu.Unlock()
	}
}

// runManager is one manager process. It returns true when the process
// exits because its election was lost, false when ctx ended.
func runManager(ctx context.Context, w *world, s *slot, id string) bool {
	var (
		mu       sync.Mutex
		wk       *work
		exited   bool
		ctxEnded time.Time
	)
	lost := make(chan struct{})
	cfg := clientGoConfig(id, w.client(s, id, crRequestTimeout), leaderelection.LeaderCallbacks{
		// The manager ignores this ctx: it starts its leader-election
		// runnables on its internal ctx (pkg/manager/internal.go:624-630).
		OnStartedLeading: func(lctx context.Context) {
			mu.Lock()
			if !exited {
				wk = w.workStarted(s)
			}
			mu.Unlock()
			context.AfterFunc(lctx, func() {
				mu.Lock()
				ctxEnded = time.Now()
				mu.Unlock()
			})
		},
		// The manager sends "leader election lost" to its errChan
		// (internal.go:631-642): Start returns that error, its stop
		// procedure cancels the internal ctx at once (the graceful
		// shutdown timeout was just set to 0; internal.go:503-533), and
		// the binary exits. The runnables, the work, end here.
		OnStoppedLeading: func() {
			mu.Lock()
			exited = true
			if wk != nil {
				w.workEnded(wk)
				if !ctxEnded.IsZero() {
					gap := time.Since(ctxEnded)
					w.mu.Lock()
					if !w.stopping {
						w.res.CtxGap = max(w.res.CtxGap, gap)
					}
					w.mu.Unlock()
				}
			}
			mu.Unlock()
			close(lost)
		},
	})
	le, err := leaderelection.NewLeaderElector(cfg)
	if err != nil {
		panic(fmt.Sprintf("slowapi: controller-runtime: %v", err))
	}
	// Start runs the elector on a ctx of its own, cancelled only when
	// the manager stops (internal.go:460-478).
	leaderCtx, cancelLeader := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLeader()
	done := make(chan struct{})
	go func() {
		defer close(done)
		le.Run(leaderCtx)
	}()
	select {
	case <-lost:
		<-done
		return true
	case <-ctx.Done():
		// The manager stops: its runnables first, then the election
		// (internal.go:549-558), which releases the Lease.
		mu.Lock()
		exited = true
		if wk != nil {
			w.workEnded(wk)
		}
		mu.Unlock()
		cancelLeader()
		<-done
		return false
	}
}
