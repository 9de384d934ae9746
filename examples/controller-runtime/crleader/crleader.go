// Package crleader runs a controller-runtime manager's leader-only work
// under a leasehold.Elector instead of controller-runtime's own leader
// election.
//
// The manager runs with LeaderElection: false, so that its caches, webhooks,
// metrics and health probes run on every replica. Runnables that need a
// leader (controllers, by default) go to a Gate instead: the Gate starts
// them when this process wins the Lease, with a context that is cancelled
// when the term ends, and the term ends only after all of them have
// returned. So leasehold's safety contract holds for controllers: the old
// leader's reconcilers have stopped before the Lease is released, and are
// cancelled at once when it is lost.
//
// # Why a gate, and not a resourcelock.Interface
//
// controller-runtime accepts a custom lock through
// Options.LeaderElectionResourceLockInterface. That would keep client-go's
// elector in charge, and a lock only answers Get, Create and Update: it
// cannot make the manager wait for its runnables to stop before the Lease
// is released, cannot cancel them the moment a foreign holder is seen, and
// cannot detect that another live process uses the same identity. The gate
// keeps the whole term in leasehold's hands.
//
// # Usage
//
//	mgr, _ := ctrl.NewManager(cfg, ctrl.Options{LeaderElection: false})
//	gate, _ := crleader.New(mgr, leasehold.Config{Lock: lock, ReleaseOnCancel: true})
//	_ = ctrl.NewControllerManagedBy(gate.Manager()).For(&corev1.ConfigMap{}).Complete(r)
//	_ = mgr.AddHealthzCheck("leader-election", crleader.HealthzChecker(gate.Elector(), 20*time.Second))
//	_ = mgr.Start(ctx) // runs the gate too
//
// Build controllers against Gate.Manager(), not against the manager itself:
// a controller added to a manager whose leader election is off runs on
// every replica at once.
//
// # One term per process
//
// A controller-runtime controller cannot be started twice, so a Gate leads
// at most once: when its term ends, Start returns (an error unless the
// manager's context was cancelled), the manager stops, and the process
// should exit and be restarted, as with controller-runtime's own leader
// election. Config.Rejoin is therefore refused.
//
// Controllers' EnableWarmup is not supported: their sources start when the
// term starts.
package crleader

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/leasehold/leasehold"
)

// ErrTermEnded is returned by Gate.Add once the Gate's only term has ended
// (or its Start returned without leading): a runnable added then would
// never run.
var ErrTermEnded = errors.New("crleader: the leader term has ended; restart the process to lead again")

// Registrar is what a Gate needs from the manager: a way to be run by it.
// manager.Manager satisfies it. NewWithRegistrar takes one so that the
// Gate can be used, and tested, without an API server.
type Registrar interface {
	Add(manager.Runnable) error
}

// Gate runs leader-only runnables while its elector holds the Lease. It is
// itself a manager.Runnable that does not need leader election: New adds it
// to the manager, whose Start runs it. Its methods are safe for concurrent
// use.
type Gate struct {
	mgr     manager.Manager // nil when built by NewWithRegistrar
	elector *leasehold.Elector

	started atomic.Bool
	elected chan struct{}

	mu      sync.Mutex
	pending []manager.Runnable // added before the term started
	term    *term              // non-nil while the term's runnables may start
	closed  bool               // no runnable can start any more
	workErr error              // what the term's runnables failed with
}

// New builds a Gate for mgr from cfg and adds the Gate to mgr, so that
// mgr.Start campaigns for the Lease. mgr must have been created with
// LeaderElection: false.
//
// The Gate owns cfg.Callbacks.OnStartedLeading, which must be nil;
// OnStoppedLeading and OnNewLeader are called as usual. cfg.Rejoin must be
// false (see the package documentation). Any other problem with cfg is
// reported as leasehold.New reports it.
func New(mgr manager.Manager, cfg leasehold.Config) (*Gate, error) {
	if mgr == nil {
		return nil, errors.New("crleader: the manager is nil")
	}
	g, err := NewWithRegistrar(mgr, cfg)
	if err != nil {
		return nil, err
	}
	g.mgr = mgr
	return g, nil
}

// NewWithRegistrar is New for anything that can run a manager.Runnable,
// not only a manager: reg.Add is called once, with the Gate. A Gate built
// this way has no Manager view; add leader-only runnables with Add.
func NewWithRegistrar(reg Registrar, cfg leasehold.Config) (*Gate, error) {
	if reg == nil {
		return nil, errors.New("crleader: the registrar is nil")
	}
	if cfg.Callbacks.OnStartedLeading != nil {
		return nil, errors.New("crleader: Config.Callbacks.OnStartedLeading must be nil: the Gate runs the leader-only runnables there; add your work with Gate.Add")
	}
	if cfg.Rejoin {
		return nil, errors.New("crleader: Config.Rejoin must be false: controller-runtime controllers cannot be started twice, so a Gate leads once per process")
	}
	g := &Gate{elected: make(chan struct{})}
	cfg.Callbacks.OnStartedLeading = g.lead
	e, err := leasehold.New(cfg)
	if err != nil {
		return nil, err
	}
	g.elector = e
	if err := reg.Add(g); err != nil {
		return nil, fmt.Errorf("crleader: add the gate to the manager: %w", err)
	}
	return g, nil
}

// Elector returns the Gate's elector, for IsLeader, Leader, Check and
// HealthHandler.
func (g *Gate) Elector() *leasehold.Elector {
	return g.elector
}

// Elected is closed when this process starts leading, just after the
// leader-only runnables added so far were started. It plays the part of
// manager.Manager's Elected, which is closed at once when the manager's
// own leader election is off.
func (g *Gate) Elected() <-chan struct{} {
	return g.elected
}

// Add registers r as leader-only, whatever r's NeedLeaderElection says: it
// starts when the term starts, or at once if the term has started. It
// returns ErrTermEnded once the term has ended.
//
// A runnable that returns an error ends the term: the others are cancelled
// and waited for, the Lease is released, and Start returns the error. One
// that returns nil simply stops; the term goes on. A panic in a runnable is
// recovered and treated as an error.
func (g *Gate) Add(r manager.Runnable) error {
	if r == nil {
		return errors.New("crleader: Add: nil runnable")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return ErrTermEnded
	case g.term != nil:
		g.term.start(r)
	default:
		g.pending = append(g.pending, r)
	}
	return nil
}

// NeedLeaderElection reports false: the Gate campaigns on every replica.
// It implements manager.LeaderElectionRunnable.
func (g *Gate) NeedLeaderElection() bool {
	return false
}

// Start campaigns for the Lease and, while this process leads, runs the
// leader-only runnables. It implements manager.Runnable; the manager calls
// it. It returns after at most one term:
//   - nil when ctx is cancelled and no runnable failed (after the
//     runnables returned and, with ReleaseOnCancel, the Lease was released);
//   - an error wrapping leasehold.ErrLeaderLost when the Lease was lost;
//   - the runnables' errors, joined with leasehold.ErrWorkReturned, when a
//     runnable failed;
//   - any other error of leasehold.Elector.Run.
//
// A second call returns an error.
func (g *Gate) Start(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("crleader: Gate.Start called twice; a Gate leads once per process")
	}
	err := g.elector.Run(ctx)
	g.mu.Lock()
	g.closed = true
	g.pending = nil
	workErr := g.workErr
	g.mu.Unlock()
	if workErr == nil && ctx.Err() != nil && errors.Is(err, leasehold.ErrWorkReturned) {
		// The runnables returned because ctx was cancelled (the term's
		// context ends only on cancellation, loss, or a failure, which
		// would have set workErr); the elector merely saw them return
		// before it saw the cancellation. That is a clean stop.
		err = nil
	}
	return errors.Join(workErr, err)
}

// lead is the elector's OnStartedLeading: it starts every leader-only
// runnable with the term's context and returns only after all of them have
// returned. It returns early (ending the term) when a runnable fails.
func (g *Gate) lead(ctx context.Context) {
	logger := klog.FromContext(ctx)
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := &term{ctx: tctx, cancel: cancel, logger: logger}

	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.term = t
	for _, r := range g.pending {
		t.start(r)
	}
	n := len(g.pending)
	g.pending = nil
	g.mu.Unlock()
	logger.Info("Leading; started the leader-only runnables", "count", n)
	close(g.elected)

	<-tctx.Done()

	// No runnable may start from now on, so the wait below is final.
	g.mu.Lock()
	g.term, g.closed = nil, true
	g.mu.Unlock()
	logger.Info("Term ending; waiting for the leader-only runnables to return", "cause", context.Cause(tctx).Error())
	t.wg.Wait()
	logger.Info("All leader-only runnables returned")

	g.mu.Lock()
	g.workErr = t.err()
	g.mu.Unlock()
}

// term is the set of runnables started in one term.
type term struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	logger klog.Logger
	wg     sync.WaitGroup

	mu   sync.Mutex
	errs []error
}

// start runs r in its own goroutine. Callers hold Gate.mu, so that no
// runnable starts after lead has begun waiting.
func (t *term) start(r manager.Runnable) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		err := runRecovering(t.ctx, r)
		if err == nil || (t.ctx.Err() != nil && errors.Is(err, context.Canceled)) {
			return
		}
		t.logger.Error(err, "Leader-only runnable failed; ending the term", "runnable", fmt.Sprintf("%T", r))
		t.mu.Lock()
		t.errs = append(t.errs, err)
		t.mu.Unlock()
		t.cancel(fmt.Errorf("leader-only runnable %T failed: %w", r, err))
	}()
}

// err is what the term's runnables failed with, nil if none did.
func (t *term) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.errs) == 0 {
		return nil
	}
	return fmt.Errorf("crleader: leader-only runnable failed: %w", errors.Join(t.errs...))
}

// runRecovering calls r.Start, turning a panic into an error.
func runRecovering(ctx context.Context, r manager.Runnable) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return r.Start(ctx)
}

// Manager returns a view of the manager for building controllers: its Add
// sends the runnables that need a leader (NeedsLeader) to the Gate and the
// others to the manager, and its Elected is the Gate's. Everything else is
// the manager's. Pass it to ctrl.NewControllerManagedBy or controller.New.
// It returns nil for a Gate built by NewWithRegistrar.
func (g *Gate) Manager() manager.Manager {
	if g.mgr == nil {
		return nil
	}
	return &gatedManager{Manager: g.mgr, gate: g}
}

// gatedManager is the view Manager returns.
type gatedManager struct {
	manager.Manager
	gate *Gate
}

// Add sends leader-only runnables to the Gate, others to the manager.
func (m *gatedManager) Add(r manager.Runnable) error {
	if NeedsLeader(r) {
		return m.gate.Add(r)
	}
	return m.Manager.Add(r)
}

// Elected is the Gate's Elected.
func (m *gatedManager) Elected() <-chan struct{} {
	return m.gate.Elected()
}

// NeedsLeader reports whether the manager would run r only on the leader,
// following controller-runtime's grouping: caches (anything with
// GetCache) and webhook servers run everywhere; a LeaderElectionRunnable
// says for itself; anything else needs a leader.
func NeedsLeader(r manager.Runnable) bool {
	switch r := r.(type) {
	case interface{ GetCache() cache.Cache }:
		return false
	case webhook.Server:
		return false
	case manager.LeaderElectionRunnable:
		return r.NeedLeaderElection()
	default:
		return true
	}
}

// HealthzChecker adapts e.Check(tolerance) to a controller-runtime health
// check, for mgr.AddHealthzCheck. Use it for liveness, not readiness:
// followers are healthy, and gating readiness on leadership keeps all but
// one replica unready.
func HealthzChecker(e *leasehold.Elector, tolerance time.Duration) healthz.Checker {
	return func(*http.Request) error {
		return e.Check(tolerance)
	}
}
