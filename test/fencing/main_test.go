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
	"os"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold/test/bench"
	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
	// shared is started by the first test that needs it. The watch cache
	// is on, as in production (envtest turns it off): the API server's
	// copy of the Lease comes through it.
	shared = &testkit.Shared{
		Options: bench.FenceControlPlane(),
		Setup: func(c *controlplane.ControlPlane) error {
			cp = c
			admin = kubernetes.NewForConfigOrDie(adminConfig())
			return nil
		},
	}
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(shared.Run(m))
}

// adminConfig is the admin (system:masters) config with room for the
// measurement's request rate.
func adminConfig() *rest.Config {
	cfg := cp.Config()
	cfg.QPS, cfg.Burst = 1000, 2000
	return cfg
}
