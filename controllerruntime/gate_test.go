package controllerruntime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// Every test of this package runs inside a testing/synctest bubble: time
// is virtual, and moves only when every goroutine of the bubble is
// blocked. A test waits for "everything that can happen now has happened"
// with settle (synctest.Wait) and then asserts, or sleeps an exact amount
// of virtual time; a wait for something that never comes fails loudly
// after wait, of virtual time, or as a deadlock of the bubble.

const (
	ns        = "default"
	leaseName = "lock"
	// wait bounds every wait for something that should happen, in
	// virtual time: the timings below make each of them far shorter.
	wait = 10 * time.Second
)

// settle returns once every other goroutine of the test's bubble is
// durably blocked: whatever can happen without time passing has happened.
func settle() { synctest.Wait() }

// testConfig returns a valid Config for identity id on srv, with short timings
// so that a test takes a fraction of a second.
func testConfig(srv *leaseholdtest.Server, id string) leasehold.Config {
	return leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: ns,
			Name:      leaseName,
			Identity:  id,
			Client:    srv.Client(id),
		},
		LeaseDuration:   2 * time.Second,
		RenewDeadline:   time.Second,
		RetryPeriod:     100 * time.Millisecond,
		ReleaseOnCancel: true,
	}
}

// holder returns the Lease's holder on srv, "" if none or no Lease.
func holder(srv *leaseholdtest.Server) string {
	l := srv.Lease(ns, leaseName)
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// putHolder writes the Lease as another process would, naming holder
// (none if empty) with a fresh renewTime.
func putHolder(srv *leaseholdtest.Server, holder string) {
	now := metav1.NewMicroTime(time.Now())
	l := srv.Lease(ns, leaseName)
	if l == nil {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: leaseName}}
	}
	l.Spec.HolderIdentity = nil
	if holder != "" {
		l.Spec.HolderIdentity = ptr.To(holder)
	}
	l.Spec.LeaseDurationSeconds = ptr.To[int32](60)
	l.Spec.RenewTime = &now
	l.Spec.AcquireTime = &now
	srv.Put(l)
}

// registrar records what it is asked to run, as a manager would.
type registrar struct {
	mu    sync.Mutex
	added []manager.Runnable
	err   error
}

func (r *registrar) Add(run manager.Runnable) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.added = append(r.added, run)
	return nil
}

// probe is a leader-only runnable that records its life, and catches a
// Gate that releases the Lease before the probe has returned, whatever the
// machine's load: when its context is cancelled it does not return until
// the elector (identity "a") has written the Lease once more (a renewal, as
// it must keep renewing until every runnable has returned) or, wrongly,
// released it; a release sent while the probe runs is recorded by a hook
// on the server.
type probe struct {
	srv     *leaseholdtest.Server
	started chan struct{}
	stopped chan struct{}
	fail    error // returned right after starting, if set
	// failNow, if set, makes the probe fail when it is closed.
	failNow chan struct{}
	// quick makes the probe return as soon as it is cancelled, for a test
	// that holds the elector's renewal until the probe has returned.
	quick bool

	mu             sync.Mutex
	cancelled      bool
	wrote          chan struct{} // closed at a's first write after the cancel
	releasedEarly  bool          // a sent a release while the probe ran
	timedOut       bool          // a wrote nothing within wait of the cancel
	holderAtReturn string
}

func newProbe(srv *leaseholdtest.Server) *probe {
	p := &probe{srv: srv, started: make(chan struct{}), stopped: make(chan struct{}), wrote: make(chan struct{})}
	srv.AddHook(func(_ context.Context, req leaseholdtest.Request) error {
		if req.Client != "a" || req.Verb != "update" || req.Lease == nil {
			return nil
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if isClosed(p.started) && !isClosed(p.stopped) && ptr.Deref(req.Lease.Spec.HolderIdentity, "") == "" {
			p.releasedEarly = true
		}
		if p.cancelled && !isClosed(p.wrote) {
			close(p.wrote)
		}
		return nil
	})
	return p
}

func (p *probe) Start(ctx context.Context) error {
	close(p.started)
	defer close(p.stopped)
	if p.fail != nil {
		p.setHolderAtReturn()
		return p.fail
	}
	select {
	case <-ctx.Done():
	case <-p.failNow: // nil unless set
		p.setHolderAtReturn()
		return errors.New("probe: told to fail")
	}
	p.mu.Lock()
	p.cancelled = true
	p.mu.Unlock()
	if !p.quick && holder(p.srv) == "a" {
		select {
		case <-p.wrote:
		case <-time.After(wait):
			p.mu.Lock()
			p.timedOut = true
			p.mu.Unlock()
		}
	}
	p.setHolderAtReturn()
	return nil
}

// setHolderAtReturn records the Lease's holder as the probe returns; a
// release already sent counts as released.
func (p *probe) setHolderAtReturn() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holderAtReturn = holder(p.srv)
	if p.releasedEarly {
		p.holderAtReturn = ""
	}
}

// checkHeldUntilReturn fails if the Lease was released (or not held by a)
// before the probe, which has returned, did.
func (p *probe) checkHeldUntilReturn(t *testing.T, name string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.timedOut {
		t.Errorf("%s: the elector wrote nothing within %v of the cancel, though it must keep renewing until the work returned", name, wait)
	}
	if p.releasedEarly || p.holderAtReturn != "a" {
		t.Errorf("%s returned when the holder was %q (a release sent before it returned: %v): the Lease must be held until the work stopped", name, p.holderAtReturn, p.releasedEarly)
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// isClosedErr reports whether done has a value ready (without taking it).
func isClosedErr(done <-chan error) bool { return len(done) > 0 }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// startGate runs g.Start(ctx) and returns a channel with its result.
func startGate(ctx context.Context, g *Gate) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Start(ctx) }()
	return done
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(wait):
		t.Fatal("timed out waiting for Start to return")
		return nil
	}
}

func TestNewRegistersTheGateAsANonLeaderRunnable(t *testing.T) {
	srv := leaseholdtest.NewServer()
	reg := &registrar{}
	g, err := NewWithRegistrar(reg, testConfig(srv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.added) != 1 || reg.added[0] != g {
		t.Fatalf("registrar got %v, want just the gate", reg.added)
	}
	if g.NeedLeaderElection() {
		t.Error("the gate must run on every replica: NeedLeaderElection() = true")
	}
	if g.Manager() != nil {
		t.Error("Manager() of a registrar-built gate should be nil")
	}
}

func TestNewRejectsWhatTheGateCannotHonour(t *testing.T) {
	srv := leaseholdtest.NewServer()
	withWork := testConfig(srv, "a")
	withWork.Callbacks.OnStartedLeading = func(context.Context) {}
	rejoin := testConfig(srv, "a")
	rejoin.Rejoin = true
	invalid := testConfig(srv, "a")
	invalid.Lock = nil

	for name, cfg := range map[string]leasehold.Config{"OnStartedLeading": withWork, "Rejoin": rejoin, "no lock": invalid} {
		reg := &registrar{}
		if g, err := NewWithRegistrar(reg, cfg); err == nil || g != nil {
			t.Errorf("%s: got (%v, %v), want an error", name, g, err)
		}
		if len(reg.added) != 0 {
			t.Errorf("%s: the gate was registered despite the error", name)
		}
	}
	if _, err := NewWithRegistrar(&registrar{}, invalid); !errors.Is(err, leasehold.ErrInvalidConfig) {
		t.Errorf("invalid config: got %v, want ErrInvalidConfig", err)
	}
	boom := errors.New("boom")
	if _, err := NewWithRegistrar(&registrar{err: boom}, testConfig(srv, "a")); !errors.Is(err, boom) {
		t.Errorf("registrar error: got %v, want it wrapped", err)
	}
	if _, err := New(nil, testConfig(srv, "a")); err == nil {
		t.Error("New(nil, ...) should fail")
	}
}

func TestRunnablesStartOnlyWhenLeadingAndStopBeforeRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		putHolder(srv, "other")
		g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		p1, p2 := newProbe(srv), newProbe(srv)
		if err := g.Add(p1); err != nil {
			t.Fatal(err)
		}
		if err := g.Add(p2); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := startGate(ctx, g)

		// Another process holds the Lease: nothing may start.
		settle()
		if g.Elector().Leader() != "other" {
			t.Fatalf("the elector sees the holder %q, want other", g.Elector().Leader())
		}
		if isClosed(p1.started) || isClosed(g.Elected()) {
			t.Fatal("a leader-only runnable started while another process held the Lease")
		}

		putHolder(srv, "") // the other process releases
		waitFor(t, g.Elected(), "Elected")
		waitFor(t, p1.started, "p1 to start")
		waitFor(t, p2.started, "p2 to start")
		if !g.Elector().IsLeader() || holder(srv) != "a" {
			t.Fatalf("IsLeader=%v holder=%q, want leading as a", g.Elector().IsLeader(), holder(srv))
		}

		cancel()
		if err := result(t, done); err != nil {
			t.Fatalf("Start after cancel = %v, want nil", err)
		}
		for i, p := range []*probe{p1, p2} {
			if !isClosed(p.stopped) {
				t.Errorf("p%d still running after Start returned", i+1)
			}
			p.checkHeldUntilReturn(t, fmt.Sprintf("p%d", i+1))
		}
		if h := holder(srv); h != "" {
			t.Errorf("holder after a clean stop with ReleaseOnCancel = %q, want released", h)
		}
		if err := g.Add(newProbe(srv)); !errors.Is(err, ErrTermEnded) {
			t.Errorf("Add after the term = %v, want ErrTermEnded", err)
		}
		if err := g.Start(context.Background()); err == nil {
			t.Error("a second Start should fail")
		}
	})
}

func TestLostLeaseCancelsRunnables(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		p := newProbe(srv)
		if err := g.Add(p); err != nil {
			t.Fatal(err)
		}
		done := startGate(context.Background(), g)
		waitFor(t, p.started, "the runnable to start")

		putHolder(srv, "thief")
		waitFor(t, p.stopped, "the runnable to stop after the Lease was lost")
		err = result(t, done)
		if !errors.Is(err, leasehold.ErrLeaderLost) {
			t.Fatalf("Start = %v, want ErrLeaderLost", err)
		}
		if h := holder(srv); h != "thief" {
			t.Errorf("holder = %q: a lost lease must never be released or overwritten", h)
		}
		if g.Elector().IsLeader() {
			t.Error("still IsLeader after losing the Lease")
		}
	})
}

func TestFailingRunnableEndsTheTerm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		bad, good := newProbe(srv), newProbe(srv)
		bad.fail = boom
		for _, p := range []*probe{good, bad} {
			if err := g.Add(p); err != nil {
				t.Fatal(err)
			}
		}
		err = result(t, startGate(context.Background(), g))
		if !errors.Is(err, boom) || !errors.Is(err, leasehold.ErrWorkReturned) {
			t.Fatalf("Start = %v, want boom and ErrWorkReturned", err)
		}
		if !isClosed(good.stopped) {
			t.Fatal("the other runnable was not stopped")
		}
		good.checkHeldUntilReturn(t, "the other runnable")
		if h := holder(srv); h != "" {
			t.Errorf("holder = %q, want released after the work ended on its own", h)
		}
	})
}

// panicker panics when started.
type panicker struct{}

func (panicker) Start(context.Context) error { panic("kaboom") }

func TestPanickingRunnableIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		good := newProbe(srv)
		_ = g.Add(good)
		_ = g.Add(panicker{})
		err = result(t, startGate(context.Background(), g))
		if err == nil || !errors.Is(err, leasehold.ErrWorkReturned) {
			t.Fatalf("Start = %v, want a panic error with ErrWorkReturned", err)
		}
		if !isClosed(good.stopped) {
			t.Error("the other runnable was not stopped")
		}
	})
}

func TestAddDuringTheTermStartsAtOnceAndEmptyTermKeepsLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := startGate(ctx, g)
		waitFor(t, g.Elected(), "Elected")

		// No runnables: the term goes on (renewals keep it) instead of
		// ending. Over more than RenewDeadline, a term that ended would
		// have stopped renewing.
		cfg := testConfig(srv, "a")
		from := srv.Requests("a", "update")
		time.Sleep(cfg.RenewDeadline + 2*cfg.RetryPeriod + cfg.RetryPeriod/2)
		settle()
		if n, want := srv.Requests("a", "update")-from, int(cfg.RenewDeadline/cfg.RetryPeriod)+2; n < want {
			t.Fatalf("%d renewals in RenewDeadline+2 RetryPeriods, want %d", n, want)
		}
		if isClosedErr(done) || !g.Elector().IsLeader() || holder(srv) != "a" {
			t.Fatalf("a gate with no runnables stopped leading: IsLeader %v, holder %q", g.Elector().IsLeader(), holder(srv))
		}

		p := newProbe(srv)
		if err := g.Add(p); err != nil {
			t.Fatal(err)
		}
		settle()
		if !isClosed(p.started) {
			t.Fatal("a runnable added during the term did not start at once")
		}
		cancel()
		if err := result(t, done); err != nil {
			t.Fatalf("Start = %v, want nil", err)
		}
		p.checkHeldUntilReturn(t, "the runnable")
	})
}

// TestCancelDuringRenewIsACleanStop cancels the manager's context while a
// renewal is in flight, so that the elector, when it gets back to its
// loop, finds both the cancellation and the runnables' return ready. Either
// way round, it is a clean stop.
func TestCancelDuringRenewIsACleanStop(t *testing.T) {
	for i := range 6 {
		synctest.Test(t, func(t *testing.T) {
			srv := leaseholdtest.NewServer()
			g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
			if err != nil {
				t.Fatal(err)
			}
			p := newProbe(srv)
			p.quick = true // its renewal is held until it returns
			_ = g.Add(p)
			var arm sync.Once
			armed := make(chan struct{})
			inRenew := make(chan struct{})
			srv.AddHook(func(ctx context.Context, req leaseholdtest.Request) error {
				if req.Verb != "update" || !isClosed(armed) {
					return nil
				}
				first := false
				arm.Do(func() { first = true })
				if first {
					close(inRenew)
					<-p.stopped // hold the renewal until the runnable returned
				}
				return nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := startGate(ctx, g)
			waitFor(t, p.started, "the runnable")
			close(armed)
			waitFor(t, inRenew, "a renewal")
			cancel()
			if err := result(t, done); err != nil {
				t.Fatalf("run %d: Start after cancel = %v, want nil", i, err)
			}
		})
	}
}

// HealthzChecker reports the running elector's Check: healthy while
// leading and while following; a follower cut off from the API server
// turns unhealthy (ErrAPIUnreachable) once its requests have failed for
// LeaseDuration plus the tolerance, not before, and healthy again once the
// server answers.
func TestHealthzChecker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		const tolerance = 100 * time.Millisecond
		ga, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		gb, err := NewWithRegistrar(&registrar{}, testConfig(srv, "b"))
		if err != nil {
			t.Fatal(err)
		}
		_ = ga.Add(newProbe(srv))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		doneA := startGate(ctx, ga)
		waitFor(t, ga.Elected(), "a to lead")
		doneB := startGate(ctx, gb)
		settle()
		if gb.Elector().Leader() != "a" {
			t.Fatalf("b follows %q, want a", gb.Elector().Leader())
		}
		checkA, checkB := HealthzChecker(ga.Elector(), tolerance), HealthzChecker(gb.Elector(), tolerance)

		// Healthy while leading and following, at every RetryPeriod over
		// more than a LeaseDuration.
		cfg := testConfig(srv, "a")
		for range int(cfg.LeaseDuration/cfg.RetryPeriod) + 2 {
			time.Sleep(cfg.RetryPeriod)
			settle()
			if err := checkA(nil); err != nil {
				t.Fatalf("the leader is unhealthy: %v", err)
			}
			if err := checkB(nil); err != nil {
				t.Fatalf("the follower is unhealthy: %v", err)
			}
		}

		// Cut b off: every request of b fails as an unreachable server's
		// would; closing the watches makes b's first failure immediate.
		var broken atomic.Bool
		srv.AddHook(func(_ context.Context, req leaseholdtest.Request) error {
			if req.Client == "b" && broken.Load() {
				return apierrors.NewServiceUnavailable("test: b cut off")
			}
			return nil
		})
		broken.Store(true)
		srv.CloseWatches()
		time.Sleep(cfg.LeaseDuration + tolerance)
		settle()
		if err := checkB(nil); err != nil {
			t.Errorf("b unhealthy after failing for exactly LeaseDuration+tolerance (%v), before it is over: %v", cfg.LeaseDuration+tolerance, err)
		}
		time.Sleep(time.Millisecond)
		settle()
		unhealthy := checkB(nil)
		if !errors.Is(unhealthy, leasehold.ErrAPIUnreachable) {
			t.Errorf("b's check %v after failing for LeaseDuration+tolerance = %v, want ErrAPIUnreachable", time.Millisecond, unhealthy)
		}
		if err := checkA(nil); err != nil {
			t.Fatalf("the leader turned unhealthy while only b was cut off: %v", err)
		}
		broken.Store(false)
		// b's next attempt, within its backoff (at most RenewDeadline
		// here), succeeds.
		time.Sleep(cfg.LeaseDuration)
		settle()
		if err := checkB(nil); err != nil {
			t.Errorf("b's check a LeaseDuration after the server answers again = %v, want healthy", err)
		}
		if isClosedErr(doneA) || isClosedErr(doneB) {
			t.Fatal("an elector stopped running")
		}
		cancel()
		if err := result(t, doneA); err != nil {
			t.Errorf("a: Start = %v, want nil", err)
		}
		if err := result(t, doneB); err != nil {
			t.Errorf("b: Start = %v, want nil", err)
		}
	})
}

// everywhere is a runnable that says it needs no leader.
type everywhere struct{ manager.RunnableFunc }

func (everywhere) NeedLeaderElection() bool { return false }

// withCache looks like a cache-bearing runnable (a cluster.Cluster).
type withCache struct{ manager.RunnableFunc }

func (withCache) GetCache() cache.Cache { return nil }

func TestNeedsLeader(t *testing.T) {
	noop := manager.RunnableFunc(func(context.Context) error { return nil })
	cases := map[string]struct {
		r    manager.Runnable
		want bool
	}{
		"plain runnable":           {noop, true},
		"NeedLeaderElection false": {everywhere{noop}, false},
		"has a cache":              {withCache{noop}, false},
		"gate":                     {&Gate{}, false},
	}
	for name, c := range cases {
		if got := NeedsLeader(c.r); got != c.want {
			t.Errorf("%s: NeedsLeader = %v, want %v", name, got, c.want)
		}
	}
}

// newManager builds a real manager that needs no API server as long as
// nothing asks its cache for an informer: no metrics, no probes.
func newManager(t *testing.T) manager.Manager {
	t.Helper()
	mgr, err := manager.New(&rest.Config{Host: "http://127.0.0.1:1"}, manager.Options{
		LeaderElection:         false,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager.New: %v", err)
	}
	return mgr
}

func TestBuilderControllersGoToTheGate(t *testing.T) {
	srv := leaseholdtest.NewServer()
	mgr := newManager(t)
	g, err := New(mgr, testConfig(srv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	err = builder.ControllerManagedBy(g.Manager()).
		For(&corev1.ConfigMap{}).
		Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	n := len(g.pending)
	g.mu.Unlock()
	if n != 1 {
		t.Fatalf("the gate holds %d runnables after building a controller, want 1", n)
	}
}

func TestWithARealManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		putHolder(srv, "other")
		mgr := newManager(t)
		g, err := New(mgr, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		view := g.Manager()

		leaderOnly := newProbe(srv)
		if err := view.Add(leaderOnly); err != nil {
			t.Fatal(err)
		}
		everyReplica := make(chan struct{})
		if err := view.Add(everywhere{func(ctx context.Context) error {
			close(everyReplica)
			<-ctx.Done()
			return nil
		}}); err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := startManager(ctx, mgr)

		settle()
		if !isClosed(everyReplica) {
			t.Fatal("the non-leader runnable did not start while following")
		}
		if g.Elector().Leader() != "other" {
			t.Fatalf("the elector sees the holder %q, want other", g.Elector().Leader())
		}
		if isClosed(leaderOnly.started) || isClosed(view.Elected()) {
			t.Fatal("leader-only work started while another process held the Lease")
		}
		putHolder(srv, "")
		waitFor(t, view.Elected(), "the view's Elected")
		waitFor(t, leaderOnly.started, "the leader-only runnable")

		cancel()
		if err := result(t, done); err != nil {
			t.Fatalf("mgr.Start = %v, want nil", err)
		}
		if !isClosed(leaderOnly.stopped) {
			t.Error("leader-only runnable still running after the manager stopped")
		}
		leaderOnly.checkHeldUntilReturn(t, "leader-only runnable")
		if h := holder(srv); h != "" {
			t.Errorf("holder after the manager stopped = %q, want released", h)
		}
	})
}

// A Yield hands the Lease over while the manager runs: the Gate cannot
// lead again, so Start fails (stopping the manager, so that the process is
// restarted) instead of following on as a replica that can never lead,
// whether another replica takes the Lease over or none does. The user's
// OnStoppedLeading is still called.
func TestYieldEndsStartWithErrTermEnded(t *testing.T) {
	for _, successor := range []bool{false, true} {
		t.Run(fmt.Sprintf("successor=%v", successor), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := leaseholdtest.NewServer()
				cfg := testConfig(srv, "a")
				stopped := make(chan struct{})
				cfg.Callbacks.OnStoppedLeading = func() { close(stopped) }
				g, err := NewWithRegistrar(&registrar{}, cfg)
				if err != nil {
					t.Fatal(err)
				}
				p := newProbe(srv)
				p.quick = true
				if err := g.Add(p); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := startGate(ctx, g)
				waitFor(t, p.started, "the runnable")
				var doneB <-chan error
				var gb *Gate
				if successor {
					if gb, err = NewWithRegistrar(&registrar{}, testConfig(srv, "b")); err != nil {
						t.Fatal(err)
					}
					doneB = startGate(ctx, gb)
					settle()
				}
				if err := g.Elector().Yield(ctx, ""); err != nil {
					t.Fatalf("Yield = %v", err)
				}
				err = result(t, done)
				if !errors.Is(err, ErrTermEnded) {
					t.Fatalf("Start after a Yield = %v, want ErrTermEnded", err)
				}
				if !isClosed(p.stopped) {
					t.Error("the runnable still runs after Start returned")
				}
				if !isClosed(stopped) {
					t.Error("the user's OnStoppedLeading was not called")
				}
				if successor {
					waitFor(t, gb.Elected(), "b to lead after a's yield")
					if h := holder(srv); h != "b" {
						t.Errorf("holder after the yield = %q, want b", h)
					}
					cancel()
					if err := result(t, doneB); err != nil {
						t.Errorf("b: Start = %v", err)
					}
				} else if h := holder(srv); h != "" {
					t.Errorf("holder after the Yield = %q, want released", h)
				}
			})
		})
	}
}

// The Gate is closed when its term ends, whichever way it ends: an Add
// made from OnStoppedLeading (after the runnables were waited for and the
// Lease released) returns ErrTermEnded, and its runnable never starts.
// Were the Gate still open, the runnable would run with nobody waiting for
// it, after the release: beside the next leader.
func TestTheGateIsClosedWhenTheTermEnds(t *testing.T) {
	endings := map[string]func(srv *leaseholdtest.Server, g *Gate, p *probe, cancel context.CancelFunc){
		"cancel":        func(_ *leaseholdtest.Server, _ *Gate, _ *probe, cancel context.CancelFunc) { cancel() },
		"lease lost":    func(srv *leaseholdtest.Server, _ *Gate, _ *probe, _ context.CancelFunc) { putHolder(srv, "thief") },
		"runnable fail": func(_ *leaseholdtest.Server, _ *Gate, p *probe, _ context.CancelFunc) { close(p.failNow) },
		"yield": func(_ *leaseholdtest.Server, g *Gate, _ *probe, _ context.CancelFunc) {
			go func() { _ = g.Elector().Yield(context.Background(), "") }()
		},
	}
	for name, end := range endings {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := leaseholdtest.NewServer()
				cfg := testConfig(srv, "a")
				var g *Gate
				late := newProbe(srv)
				addErr := make(chan error, 1)
				holderAtStop := make(chan string, 1)
				cfg.Callbacks.OnStoppedLeading = func() {
					holderAtStop <- holder(srv)
					addErr <- g.Add(late)
				}
				var err error
				if g, err = NewWithRegistrar(&registrar{}, cfg); err != nil {
					t.Fatal(err)
				}
				p := newProbe(srv)
				p.quick = true
				p.failNow = make(chan struct{})
				if err := g.Add(p); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := startGate(ctx, g)
				waitFor(t, p.started, "the runnable")
				end(srv, g, p, cancel)
				_ = result(t, done)
				settle()
				select {
				case err := <-addErr:
					if !errors.Is(err, ErrTermEnded) {
						t.Errorf("Add from OnStoppedLeading = %v, want ErrTermEnded", err)
					}
				default:
					t.Fatal("OnStoppedLeading was not called")
				}
				if isClosed(late.started) {
					t.Errorf("a runnable added from OnStoppedLeading started, after the term (the Lease's holder then: %q)", <-holderAtStop)
				}
				if err := g.Add(newProbe(srv)); !errors.Is(err, ErrTermEnded) {
					t.Errorf("Add after Start returned = %v, want ErrTermEnded", err)
				}
			})
		})
	}
}
