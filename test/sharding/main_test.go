// Package sharding runs the shard package against a real kube-apiserver
// and etcd, started once for the package by TestMain with the
// ShardedListAndWatch feature gate on (KEP-5866). One test starts a second
// API server without the gate, to check that its absence is detected.
//
// Tests run one at a time with real clocks: timing assertions need the
// two CPUs.
package sharding

import (
	"os"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
)

// gate is the apiserver flag that enables server-side sharded list and
// watch.
var gate = controlplane.WithAPIServerFlag("feature-gates", "ShardedListAndWatch=true")

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithControlPlane(m, func(c *controlplane.ControlPlane) error {
		cp, admin = c, kubernetes.NewForConfigOrDie(c.Config())
		return nil
	}, gate))
}
