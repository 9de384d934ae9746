// Package integration runs leasehold against a real kube-apiserver and etcd
// (built from source by hack/controlplane/build.sh), started once for the
// whole package by TestMain.
//
// Every test uses its own namespace and Lease, real clocks and short
// timings (LeaseDuration 2-3s), and runs sequentially: the control plane
// shares the 2 CPUs with the electors, and timing assertions stay robust
// only if the tests do not compete with each other.
package integration

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

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithControlPlane(m, func(c *controlplane.ControlPlane) error {
		// JSON, so that a Wire can read the Lease in a request body.
		cp, admin = c, kubernetes.NewForConfigOrDie(testkit.JSON(c.Config()))
		return nil
	}))
}
