// Package fencing tests the fence package's admission policies on a real
// kube-apiserver and etcd (built from source by hack/controlplane/build.sh):
// the policies are installed as the Go functions build them, real
// leasehold electors win and lose the Lease, and the work's writes are
// checked by the API server's own ValidatingAdmissionPolicy admission.
//
// The control plane is started on the first test that needs it and
// stopped by TestMain; TestDeployYAML needs none. Tests run one at a time,
// each in its own namespace. The measurements of TestMeasure (the bench's
// fencing phase, test/bench/fence.go) are report only; for the full run:
//
//	cd test && LEASEHOLD_FENCE_MEASURE=1 go test -v -run TestMeasure ./fencing
package fencing

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/bench"
	"github.com/leasehold/leasehold/test/controlplane"
)

var (
	cpOnce sync.Once
	cpErr  error
	cp     *controlplane.ControlPlane
	admin  kubernetes.Interface
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	// envtest logs through controller-runtime's logger; without a logger
	// it prints a warning with a stack trace after 30s.
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if cp != nil {
		if err := cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "fencing: stopping the control plane: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// controlPlane starts the control plane on first use, and fails the test
// (never skips it) if it cannot.
func controlPlane(t *testing.T) {
	t.Helper()
	cpOnce.Do(func() {
		// The watch cache is on, as in production (envtest turns it off):
		// the API server's copy of the Lease comes through it.
		cp, cpErr = controlplane.Start(bench.FenceControlPlane()...)
		if cpErr != nil {
			return
		}
		fmt.Fprintf(os.Stderr, "fencing: kube-apiserver and etcd from %s ready in %v\n", cp.BinDir(), cp.StartupTime.Round(time.Millisecond))
		admin = kubernetes.NewForConfigOrDie(adminConfig())
	})
	if cpErr != nil {
		t.Fatalf("fencing tests need a real control plane: %v", cpErr)
	}
}

// adminConfig is the admin (system:masters) config with room for the
// measurement's request rate.
func adminConfig() *rest.Config {
	cfg := cp.Config()
	cfg.QPS, cfg.Burst = 1000, 2000
	return cfg
}
