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
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { <-ctx.Done(); return nil })); err != nil {
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
