package controllerruntime_test

import (
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
)

// newGateWithMetrics is the recipe for leasehold's metrics in a
// controller-runtime manager: register them on controller-runtime's
// registry, which the manager's metrics endpoint serves, and give them to
// the Gate's config. leaseholdprom.New reuses the
// leader_election_master_status gauge that controller-runtime registered
// there, so nothing clashes. TestMetricsRecipeOnAControllerRuntimeManager
// runs exactly this function, on a real manager.
func newGateWithMetrics(mgr manager.Manager, lock *leasehold.LeaseLock) (*controllerruntime.Gate, error) {
	m, err := leaseholdprom.New(crmetrics.Registry)
	if err != nil {
		return nil, err
	}
	return controllerruntime.New(mgr, leasehold.Config{Lock: lock, ReleaseOnCancel: true, Metrics: m})
}

// Leasehold's metrics on the manager's own /metrics endpoint (:8080 by
// default): leader_election_master_status and the others, labelled
// name="my-system/my-controller". Compiled, not run: it needs a cluster.
func Example_metrics() {
	cfg := ctrl.GetConfigOrDie()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{LeaderElection: false})
	if err != nil {
		panic(err)
	}
	id, err := leasehold.DefaultIdentity()
	if err != nil {
		panic(err)
	}
	gate, err := newGateWithMetrics(mgr, &leasehold.LeaseLock{
		Namespace: "my-system",
		Name:      "my-controller",
		Identity:  id,
		Client:    kubernetes.NewForConfigOrDie(cfg).CoordinationV1(),
	})
	if err != nil {
		panic(err)
	}
	_ = gate // build the controllers with ctrl.NewControllerManagedBy(gate.Manager())
	_ = mgr.Start(ctrl.SetupSignalHandler())
}
