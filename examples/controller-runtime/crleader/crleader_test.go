package crleader

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
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

const (
	ns        = "default"
	leaseName = "lock"
	// wait bounds every wait for something that should happen; the
	// timings below make each of them take well under a second.
	wait = 10 * time.Second
)

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

// probe is a leader-only runnable that records its life. When its context
// is cancelled it sleeps a little before returning, and records the
// Lease's holder at that moment: the Gate must not release the Lease
// before the probe has returned.
type probe struct {
	srv     *leaseholdtest.Server
	started chan struct{}
	stopped chan struct{}
	fail    error // returned right after starting, if set

	holderAtReturn string
}

func newProbe(srv *leaseholdtest.Server) *probe {
	return &probe{srv: srv, started: make(chan struct{}), stopped: make(chan struct{})}
}

func (p *probe) Start(ctx context.Context) error {
	close(p.started)
	defer close(p.stopped)
	if p.fail != nil {
		p.holderAtReturn = holder(p.srv)
		return p.fail
	}
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	p.holderAtReturn = holder(p.srv)
	return nil
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
	}
}

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
	time.Sleep(300 * time.Millisecond)
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
		if p.holderAtReturn != "a" {
			t.Errorf("p%d returned when the holder was %q: the Lease was released before the work stopped", i+1, p.holderAtReturn)
		}
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
}

func TestLostLeaseCancelsRunnables(t *testing.T) {
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
}

func TestFailingRunnableEndsTheTerm(t *testing.T) {
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
	if good.holderAtReturn != "a" {
		t.Errorf("the other runnable returned when the holder was %q, want a (not yet released)", good.holderAtReturn)
	}
	if h := holder(srv); h != "" {
		t.Errorf("holder = %q, want released after the work ended on its own", h)
	}
}

// panicker panics when started.
type panicker struct{}

func (panicker) Start(context.Context) error { panic("kaboom") }

func TestPanickingRunnableIsAnError(t *testing.T) {
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
}

func TestAddDuringTheTermStartsAtOnceAndEmptyTermKeepsLeading(t *testing.T) {
	srv := leaseholdtest.NewServer()
	g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startGate(ctx, g)
	waitFor(t, g.Elected(), "Elected")

	// No runnables: the term goes on (renewals keep it) instead of ending.
	time.Sleep(1500 * time.Millisecond) // past RenewDeadline
	if !g.Elector().IsLeader() {
		t.Fatal("a gate with no runnables stopped leading")
	}

	p := newProbe(srv)
	if err := g.Add(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p.started, "a runnable added during the term")
	cancel()
	if err := result(t, done); err != nil {
		t.Fatalf("Start = %v, want nil", err)
	}
	if p.holderAtReturn != "a" {
		t.Errorf("runnable returned when holder was %q, want a", p.holderAtReturn)
	}
}

// TestCancelDuringRenewIsACleanStop cancels the manager's context while a
// renewal is in flight, so that the elector, when it gets back to its
// loop, finds both the cancellation and the runnables' return ready. Either
// way round, it is a clean stop.
func TestCancelDuringRenewIsACleanStop(t *testing.T) {
	for i := range 6 {
		srv := leaseholdtest.NewServer()
		g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		p := newProbe(srv)
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
	}
}

func TestHealthzChecker(t *testing.T) {
	srv := leaseholdtest.NewServer()
	g, err := NewWithRegistrar(&registrar{}, testConfig(srv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := HealthzChecker(g.Elector(), time.Second)(nil); err != nil {
		t.Errorf("a follower should be healthy, got %v", err)
	}
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
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()

	waitFor(t, everyReplica, "the non-leader runnable to start while following")
	time.Sleep(200 * time.Millisecond)
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
	if !isClosed(leaderOnly.stopped) || leaderOnly.holderAtReturn != "a" {
		t.Errorf("leader-only runnable: stopped=%v holderAtReturn=%q, want stopped while still holding", isClosed(leaderOnly.stopped), leaderOnly.holderAtReturn)
	}
	if h := holder(srv); h != "" {
		t.Errorf("holder after the manager stopped = %q, want released", h)
	}
}
