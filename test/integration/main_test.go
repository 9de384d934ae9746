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
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/controlplane"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's logger; without a logger
	// it prints a warning with a stack trace after 30s.
	ctrllog.SetLogger(logr.Discard())

	var err error
	cp, err = controlplane.Start()
	if err != nil {
		// Fail, never skip: a missing control plane must not look like a
		// passing suite.
		fmt.Fprintf(os.Stderr, "FAIL: integration tests need a real control plane: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "integration: kube-apiserver and etcd from %s ready in %v\n", cp.BinDir(), cp.StartupTime.Round(time.Millisecond))
	admin = kubernetes.NewForConfigOrDie(jsonConfig(cp.Config()))

	code := m.Run()

	stopped := time.Now()
	if err := cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: stopping the control plane: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	fmt.Fprintf(os.Stderr, "integration: control plane stopped in %v\n", time.Since(stopped).Round(time.Millisecond))
	os.Exit(code)
}

// jsonConfig makes clients send JSON, so the request recorder can read the
// Lease in a request body.
func jsonConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	return cfg
}
