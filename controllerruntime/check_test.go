package controllerruntime

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// logLines collects what a logger writes.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, prefix+" "+args)
	}, funcr.Options{})
}

// containing returns the lines that contain s.
func (l *logLines) containing(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// newManagerWith builds a real manager, as newManager does, with opts'
// LeaderElection settings and a logger writing to logs.
func newManagerWith(t *testing.T, logs *logLines, leaderElection bool) manager.Manager {
	t.Helper()
	mgr, err := manager.New(&rest.Config{Host: "http://127.0.0.1:1"}, manager.Options{
		LeaderElection:          leaderElection,
		LeaderElectionID:        "builtin",
		LeaderElectionNamespace: ns,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		Controller:              config.Controller{SkipNameValidation: ptr.To(true)},
		Logger:                  logs.logger(),
	})
	if err != nil {
		t.Fatalf("manager.New: %v", err)
	}
	return mgr
}

func nopReconciler() reconcile.Func {
	return func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }
}

// startManager runs mgr.Start(ctx) and returns a channel with its result.
func startManager(ctx context.Context, mgr manager.Manager) <-chan error {
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return done
}

// A controller built with builder.ControllerManagedBy(mgr), the one-word
// slip for ControllerManagedBy(gate.Manager()), and a plain runnable added
// to the manager: mgr.Start fails naming both and the fix, and the Gate
// never campaigns. The correctly built controller and a runnable meant for
// every replica are not named.
func TestStartFailsOnLeaderOnlyRunnablesOfTheManagerItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		logs := &logLines{}
		mgr := newManagerWith(t, logs, false)
		g, err := New(mgr, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := builder.ControllerManagedBy(g.Manager()).Named("gated").For(&corev1.ConfigMap{}).Complete(nopReconciler()); err != nil {
			t.Fatal(err)
		}
		if err := builder.ControllerManagedBy(mgr).Named("slipped").For(&corev1.Secret{}).Complete(nopReconciler()); err != nil {
			t.Fatal(err)
		}
		slipped := make(chan struct{})
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { close(slipped); <-ctx.Done(); return nil })); err != nil {
			t.Fatal(err)
		}
		if err := mgr.Add(everywhere{func(ctx context.Context) error { <-ctx.Done(); return nil }}); err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err = result(t, startManager(ctx, mgr))
		if !errors.Is(err, ErrUngatedRunnable) {
			t.Fatalf("mgr.Start = %v, want ErrUngatedRunnable", err)
		}
		settle()
		if isClosed(slipped) {
			t.Error("the ungated runnable was started (on every replica) before the manager stopped")
		}
		msg := err.Error()
		t.Logf("mgr.Start: %v", err)
		for _, want := range []string{`"slipped"`, "manager.RunnableFunc", "ctrl.NewControllerManagedBy(gate.Manager())", "gate.Manager().Add"} {
			if !strings.Contains(msg, want) {
				t.Errorf("the error does not mention %s: %v", want, err)
			}
		}
		for _, unwanted := range []string{`"gated"`, "everywhere"} {
			if strings.Contains(msg, unwanted) {
				t.Errorf("the error names %s, which is not run by the manager itself: %v", unwanted, err)
			}
		}
		if errors.Is(err, ErrManagerLeaderElection) {
			t.Errorf("mgr.Start = %v: the manager's election is off", err)
		}
		if n := srv.Requests("a", "create") + srv.Requests("a", "update") + srv.Requests("a", "get"); n != 0 {
			t.Errorf("the misconfigured replica made %d Lease requests; it must not campaign", n)
		}
		if isClosed(g.Elected()) {
			t.Error("the Gate was elected")
		}
		if err := g.Add(newProbe(srv)); !errors.Is(err, ErrTermEnded) {
			t.Errorf("Add after the failed Start = %v, want ErrTermEnded", err)
		}
	})
}

// A manager that runs controller-runtime's own election is refused too.
func TestStartFailsWhenTheManagerElectsItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		mgr := newManagerWith(t, &logLines{}, true)
		g, err := New(mgr, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := builder.ControllerManagedBy(g.Manager()).For(&corev1.ConfigMap{}).Complete(nopReconciler()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err = result(t, startManager(ctx, mgr))
		if !errors.Is(err, ErrManagerLeaderElection) || !strings.Contains(err.Error(), "LeaderElection: false") {
			t.Fatalf("mgr.Start = %v, want ErrManagerLeaderElection naming LeaderElection: false", err)
		}
		if errors.Is(err, ErrUngatedRunnable) {
			t.Errorf("mgr.Start = %v: every leader-only runnable went to the gate", err)
		}
	})
}

// Correctly wired, the check passes silently: the Gate leads, runs its
// controller's runnable, and stops cleanly.
func TestStartCheckPassesAWellWiredManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		logs := &logLines{}
		mgr := newManagerWith(t, logs, false)
		g, err := New(mgr, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		p := newProbe(srv)
		if err := g.Manager().Add(p); err != nil {
			t.Fatal(err)
		}
		if err := mgr.Add(everywhere{func(ctx context.Context) error { <-ctx.Done(); return nil }}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := startManager(ctx, mgr)
		waitFor(t, p.started, "the gated runnable")
		cancel()
		if err := result(t, done); err != nil {
			t.Fatalf("mgr.Start = %v, want nil", err)
		}
		if !g.check.ran {
			t.Error("the manager did not run the start check")
		}
		if w := logs.containing("WARNING"); len(w) != 0 {
			t.Errorf("warnings for a well-wired manager: %q", w)
		}
	})
}

// wrapped is a manager.Manager of the user's own, which the check cannot
// read.
type wrapped struct{ manager.Manager }

// When the manager cannot be read, Start warns, naming the slip and why it
// could not check, and leads as usual.
func TestStartWarnsWhenItCannotCheck(t *testing.T) {
	cases := map[string]func(t *testing.T, mgr manager.Manager, newGate func() *Gate) (*Gate, <-chan error, context.CancelFunc){
		"a manager of another type": func(_ *testing.T, mgr manager.Manager, newGate func() *Gate) (*Gate, <-chan error, context.CancelFunc) {
			g := newGate()
			ctx, cancel := context.WithCancel(context.Background())
			return g, startManager(ctx, mgr), cancel
		},
		"a Gate built after mgr.Start": func(t *testing.T, mgr manager.Manager, newGate func() *Gate) (*Gate, <-chan error, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			done := startManager(ctx, mgr)
			waitFor(t, mgr.Elected(), "the manager to start")
			return newGate(), done, cancel
		},
	}
	for name, setUp := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := leaseholdtest.NewServer()
				logs := &logLines{}
				mgr := newManagerWith(t, logs, false)
				var m manager.Manager = mgr
				wantReason := "had started before the Gate was built"
				if name == "a manager of another type" {
					m, wantReason = wrapped{mgr}, "controllerruntime.wrapped, not controller-runtime's own"
				}
				p := newProbe(srv)
				g, done, cancel := setUp(t, mgr, func() *Gate {
					g, err := New(m, testConfig(srv, "a"))
					if err != nil {
						t.Fatal(err)
					}
					if err := g.Add(p); err != nil {
						t.Fatal(err)
					}
					return g
				})
				defer cancel()
				waitFor(t, p.started, "the gated runnable")
				warnings := logs.containing("WARNING")
				if len(warnings) != 1 || !strings.Contains(warnings[0], "ctrl.NewControllerManagedBy(gate.Manager())") || !strings.Contains(warnings[0], wantReason) {
					t.Errorf("warnings = %q, want one naming the slip and %q", warnings, wantReason)
				}
				cancel()
				if err := result(t, done); err != nil {
					t.Fatalf("mgr.Start = %v, want nil", err)
				}
				if g.check.runnable != nil {
					t.Error("the check was added to a manager it cannot read")
				}
			})
		})
	}
}

// A leader-only runnable added to the manager itself after mgr.Start (a
// controller built late with ctrl.NewControllerManagedBy(mgr)) is refused
// by mgr.Add, and never runs, on a follower or on the leader; added through
// gate.Manager() it is gated: it starts only when this replica leads. A
// runnable meant for every replica is still accepted and run.
func TestRunnablesAddedToTheManagerAfterStartAreRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		putHolder(srv, "other")
		logs := &logLines{}
		mgr := newManagerWith(t, logs, false)
		g, err := New(mgr, testConfig(srv, "a"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := startManager(ctx, mgr)
		settle()
		if g.Elector().Leader() != "other" || !isClosed(mgr.Elected()) {
			t.Fatalf("the manager has not started, or the Gate does not follow (leader %q)", g.Elector().Leader())
		}

		late := newProbe(srv)
		if err := mgr.Add(late); err == nil || !strings.Contains(err.Error(), refusedMessage) {
			t.Errorf("mgr.Add of a leader-only runnable after mgr.Start = %v, want %q: the manager would run it on every replica", err, refusedMessage)
		}
		if err := builder.ControllerManagedBy(mgr).Named("late").For(&corev1.Secret{}).Complete(nopReconciler()); err == nil {
			t.Error("a controller built with ctrl.NewControllerManagedBy(mgr) after mgr.Start was accepted: it runs on every replica")
		}
		// The log explains controller-runtime's refusal, naming the fix.
		if l := logs.containing(refusedMessage); len(l) != 1 || !strings.Contains(l[0], "gate.Manager().Add") {
			t.Errorf("log lines explaining the refusal: %q, want one naming gate.Manager().Add", l)
		}
		viaGate := newProbe(srv)
		if err := g.Manager().Add(viaGate); err != nil {
			t.Fatalf("gate.Manager().Add after mgr.Start = %v", err)
		}
		everyReplica := make(chan struct{})
		if err := mgr.Add(everywhere{func(ctx context.Context) error { close(everyReplica); <-ctx.Done(); return nil }}); err != nil {
			t.Fatalf("mgr.Add of a runnable for every replica after mgr.Start = %v", err)
		}
		settle()
		if isClosed(late.started) {
			t.Fatal("a leader-only runnable added to the manager after mgr.Start runs on a follower")
		}
		if isClosed(viaGate.started) {
			t.Fatal("a runnable added through the gate after mgr.Start runs on a follower")
		}
		if !isClosed(everyReplica) {
			t.Error("a runnable for every replica added after mgr.Start did not start")
		}
		if w := logs.containing("WARNING"); len(w) != 0 {
			t.Errorf("warnings: %q", w)
		}

		putHolder(srv, "") // the other process releases: this replica leads
		waitFor(t, viaGate.started, "the gated runnable once leading")
		settle()
		if isClosed(late.started) {
			t.Error("the refused runnable started once this replica led")
		}
		cancel()
		if err := result(t, done); err != nil {
			t.Fatalf("mgr.Start = %v, want nil", err)
		}
		viaGate.checkHeldUntilReturn(t, "the gated runnable")
	})
}
