package testkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/controlplane"
)

// RunWithControlPlane is a package's TestMain, called as
//
//	func TestMain(m *testing.M) { os.Exit(testkit.RunWithControlPlane(m, setup)) }
//
// It starts one control plane with opts for the package's tests, calls
// setup with it (setup builds the package's clients, and whatever else
// its tests need: a kubeconfig, a binary), runs the tests, stops the
// control plane and returns the exit code. A control plane that does not
// start, or a setup that fails, fails the run: a missing control plane
// must not look like a passing suite. So does a control plane that does
// not stop.
func RunWithControlPlane(m *testing.M, setup func(cp *controlplane.ControlPlane) error, opts ...controlplane.Option) int {
	s := &Shared{Options: opts, Setup: setup}
	if _, err := s.start(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %s: %v\n", pkg(), err)
		return 1
	}
	return s.Run(m)
}

// Shared is one control plane for a package's tests, started with Options
// by the first test that asks for it (Get), set up by Setup, and stopped
// by Run, the package's TestMain, once the tests are done. Tests that do
// not call Get run without it.
type Shared struct {
	Options []controlplane.Option
	// Setup, if set, runs once the control plane is up; an error stops
	// the control plane and fails every test that asks for it.
	Setup func(cp *controlplane.ControlPlane) error

	once sync.Once
	cp   *controlplane.ControlPlane
	err  error
}

// Get returns the control plane, starting it on the first call; it fails
// t (never skips it) if the control plane cannot start.
func (s *Shared) Get(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	cp, err := s.start()
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func (s *Shared) start() (*controlplane.ControlPlane, error) {
	s.once.Do(func() {
		quietEnvtest()
		cp, err := controlplane.Start(s.Options...)
		if err != nil {
			s.err = fmt.Errorf("a real control plane is needed: %w", err)
			return
		}
		fmt.Fprintf(os.Stderr, "%s: kube-apiserver and etcd from %s ready in %v\n", pkg(), cp.BinDir(), cp.StartupTime.Round(time.Millisecond))
		if s.Setup != nil {
			if err := s.Setup(cp); err != nil {
				s.err = err
				if err := cp.Stop(); err != nil {
					fmt.Fprintf(os.Stderr, "%s: stopping the control plane: %v\n", pkg(), err)
				}
				return
			}
		}
		s.cp = cp
	})
	return s.cp, s.err
}

// Run runs the package's tests and then stops the control plane if a test
// started it; it returns the exit code, not 0 if the control plane did not
// stop.
func (s *Shared) Run(m *testing.M) int {
	quietEnvtest()
	code := m.Run()
	if s.cp == nil {
		return code
	}
	stopped := time.Now()
	if err := s.cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: stopping the control plane: %v\n", pkg(), err)
		if code == 0 {
			code = 1
		}
	}
	fmt.Fprintf(os.Stderr, "%s: control plane stopped in %v\n", pkg(), time.Since(stopped).Round(time.Millisecond))
	return code
}

// StartControlPlane starts a control plane with opts for one test, stopped
// when the test ends; it fails t (never skips it) if the control plane
// cannot start.
func StartControlPlane(t testing.TB, opts ...controlplane.Option) *controlplane.ControlPlane {
	t.Helper()
	quietEnvtest()
	cp, err := controlplane.Start(opts...)
	if err != nil {
		t.Fatalf("a real control plane is needed: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return cp
}

// quietEnvtest gives controller-runtime a logger: envtest logs through it,
// and without one it prints a warning with a stack trace after 30s.
func quietEnvtest() { ctrllog.SetLogger(logr.Discard()) }

// pkg names the test binary's package for what TestMain prints.
func pkg() string { return strings.TrimSuffix(filepath.Base(os.Args[0]), ".test") }

var (
	nsSeq    atomic.Int32
	nonAlnum = regexp.MustCompile(`[^a-zA-Z0-9]+`)
)

// Namespace creates a namespace for one test with cs, deleted when the
// test ends: prefix, the test's name (without "Test", at most 40
// characters) and a sequence number, as "lh-renewal-3".
func Namespace(t testing.TB, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	base := strings.TrimPrefix(strings.ToLower(nonAlnum.ReplaceAllString(t.Name(), "-")), "test")
	base = strings.Trim(base, "-")
	if len(base) > 40 {
		base = strings.Trim(base[:40], "-")
	}
	name := fmt.Sprintf("%s-%s-%d", prefix, base, nsSeq.Add(1))
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}
