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
	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithControlPlane(m, func(c *controlplane.ControlPlane) error {
		cp, admin = c, kubernetes.NewForConfigOrDie(jsonConfig(c.Config()))
		return nil
	}))
}

// jsonConfig makes clients send JSON, so the request recorder can read the
// Lease in a request body.
func jsonConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	return cfg
}
