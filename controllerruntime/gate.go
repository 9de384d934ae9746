package controllerruntime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/leasehold/leasehold"
)

// ErrTermEnded is returned by Gate.Add once the Gate's only term has ended
// (or its Start returned without leading): a runnable added then would
// never run. Gate.Start wraps it when the term was handed over by
// Elector.Yield while the manager kept running.
var ErrTermEnded = errors.New("leasehold/controllerruntime: the leader term has ended; restart the process to lead again")

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
	check   *startCheck // nil when built by NewWithRegistrar

	started atomic.Bool
	elected chan struct{}

	mu      sync.Mutex
	pending []manager.Runnable      // added before the term started
	term    *term                   // non-nil while the term's runnables may start
	closed  bool                    // no runnable can start any more
	workErr error                   // what the term's runnables failed with
	endRun  context.CancelCauseFunc // ends the elector's Run; set by Start
}

// New builds a Gate for mgr from cfg and adds the Gate to mgr, so that
// mgr.Start campaigns for the Lease. mgr must have been created with
// LeaderElection: false, and New called before mgr.Start: the Gate checks
// the manager as it starts (see the package documentation).
//
// The Gate owns cfg.Callbacks.OnStartedLeading, which must be nil;
// OnStoppedLeading and OnNewLeader are called as usual (OnStoppedLeading
// once the term's runnables returned and the Lease was released, and the
// Gate is closed by then). cfg.Rejoin must be false (see the package
// documentation). Any other problem with cfg is reported as leasehold.New
// reports it.
func New(mgr manager.Manager, cfg leasehold.Config) (*Gate, error) {
	if mgr == nil {
		return nil, errors.New("leasehold/controllerruntime: the manager is nil")
	}
	return newGate(mgr, mgr, cfg)
}

// NewWithRegistrar is New for anything that can run a manager.Runnable,
// not only a manager: reg.Add is called once, with the Gate. A Gate built
// this way has no Manager view; add leader-only runnables with Add.
func NewWithRegistrar(reg Registrar, cfg leasehold.Config) (*Gate, error) {
	if reg == nil {
		return nil, errors.New("leasehold/controllerruntime: the registrar is nil")
	}
	return newGate(reg, nil, cfg)
}

// newGate builds the Gate, with mgr's start check if mgr is not nil, and
// then adds it to reg: a running manager starts it at once.
func newGate(reg Registrar, mgr manager.Manager, cfg leasehold.Config) (*Gate, error) {
	if cfg.Callbacks.OnStartedLeading != nil {
		return nil, errors.New("leasehold/controllerruntime: Config.Callbacks.OnStartedLeading must be nil: the Gate runs the leader-only runnables there; add your work with Gate.Add")
	}
	if cfg.Rejoin {
		return nil, errors.New("leasehold/controllerruntime: Config.Rejoin must be false: controller-runtime controllers cannot be started twice, so a Gate leads once per process")
	}
	g := &Gate{mgr: mgr, elected: make(chan struct{})}
	cfg.Callbacks.OnStartedLeading = g.lead
	userStopped := cfg.Callbacks.OnStoppedLeading
	cfg.Callbacks.OnStoppedLeading = func() {
		// The only term has ended (runnables returned, Lease released if
		// it was to be): the elector must not campaign again, as it would
		// after a Yield. Deferred, so that it holds if the user's
		// callback panics.
		defer g.stopRun()
		if userStopped != nil {
			userStopped()
		}
	}
	e, err := leasehold.New(cfg)
	if err != nil {
		return nil, err
	}
	g.elector = e
	if mgr != nil {
		g.check = newStartCheck(mgr)
		if g.check.runnable != nil {
			if err := mgr.Add(g.check.runnable); err != nil {
				return nil, fmt.Errorf("leasehold/controllerruntime: add the start check to the manager: %w", err)
			}
		}
	}
	if err := reg.Add(g); err != nil {
		return nil, fmt.Errorf("leasehold/controllerruntime: add the gate to the manager: %w", err)
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
		return errors.New("leasehold/controllerruntime: Add: nil runnable")
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
//   - an error wrapping leasehold.ErrStepDownTimeout when a runnable had
//     not returned within Config.StepDownTimeout of the term's end: exit
//     the process then;
//   - an error wrapping ErrTermEnded when the term was handed over by
//     Elector.Yield while ctx was live: this process will not lead again;
//   - any other error of leasehold.Elector.Run.
//
// For a Gate built by New, Start first checks the manager (see the package
// documentation): it returns an error wrapping ErrUngatedRunnable or
// ErrManagerLeaderElection, without campaigning, when the manager itself
// would run leader-only work.
//
// A second call returns an error.
func (g *Gate) Start(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("leasehold/controllerruntime: Gate.Start called twice; a Gate leads once per process")
	}
	if g.check != nil {
		if err := g.check.result(g.logger(ctx)); err != nil {
			g.mu.Lock()
			g.closed, g.pending = true, nil
			g.mu.Unlock()
			return err
		}
	}
	// Run follows again after a yielded term; the Gate leads once, so it
	// ends Run when its term ends (stopRun, from OnStoppedLeading). A term
	// that ended another way ends Run with its own error.
	runCtx, endRun := context.WithCancelCause(ctx)
	defer endRun(nil)
	g.mu.Lock()
	g.endRun = endRun
	g.mu.Unlock()
	err := g.elector.Run(runCtx)
	g.mu.Lock()
	g.closed = true
	g.pending = nil
	g.endRun = nil
	workErr := g.workErr
	g.mu.Unlock()
	if err == nil && ctx.Err() == nil {
		// Run returns nil with ctx live only after a yielded term. The
		// manager would go on without this Gate, which cannot lead again.
		err = fmt.Errorf("%w: leadership was yielded to another replica", ErrTermEnded)
	}
	return errors.Join(workErr, err)
}

// stopRun ends the elector's Run, once the Gate's term has ended.
func (g *Gate) stopRun() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.endRun != nil {
		g.endRun(ErrTermEnded)
	}
}

// logger is ctx's logger or, if ctx has none (the manager starts its
// runnables with a context of its own), the manager's.
func (g *Gate) logger(ctx context.Context) klog.Logger {
	if l, err := logr.FromContext(ctx); err == nil {
		return l
	}
	if g.mgr != nil {
		return g.mgr.GetLogger()
	}
	return klog.Background()
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
	return fmt.Errorf("leasehold/controllerruntime: leader-only runnable failed: %w", errors.Join(t.errs...))
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
