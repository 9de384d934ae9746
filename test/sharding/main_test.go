// Package sharding runs the shard package against a real kube-apiserver
// and etcd, started once for the package by TestMain with the
// ShardedListAndWatch feature gate on (KEP-5866). One test starts a second
// API server without the gate, to check that its absence is detected.
//
// Tests run one at a time with real clocks: timing assertions need the
// two CPUs.
package sharding

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/controlplane"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
)

// gate is the apiserver flag that enables server-side sharded list and
// watch.
var gate = controlplane.WithAPIServerFlag("feature-gates", "ShardedListAndWatch=true")

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	var err error
	cp, err = controlplane.Start(gate)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: sharding tests need a real control plane: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "sharding: kube-apiserver (ShardedListAndWatch=true) and etcd ready in %v\n", cp.StartupTime.Round(time.Millisecond))
	admin = kubernetes.NewForConfigOrDie(cp.Config())
	code := m.Run()
	if err := cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "sharding: stopping the control plane: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
