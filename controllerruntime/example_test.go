package controllerruntime_test

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
)

// Switching a controller-runtime manager from its built-in election to
// leasehold: turn the built-in election off, gate the controllers, add the
// health check. Compiled, not run: it needs a cluster.
func ExampleNew() {
	cfg := ctrl.GetConfigOrDie()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		LeaderElection:         false, // leasehold decides, through the gate
		HealthProbeBindAddress: ":8081",
	})
	if err != nil {
		panic(err)
	}
	id, err := leasehold.DefaultIdentity()
	if err != nil {
		panic(err)
	}
	// The elector bounds each of its own requests: no timeout wrapper.
	clientset := kubernetes.NewForConfigOrDie(cfg)
	gate, err := controllerruntime.New(mgr, leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: "my-system",     // was LeaderElectionNamespace
			Name:      "my-controller", // was LeaderElectionID
			Identity:  id,
			Client:    clientset.CoordinationV1(),
		},
		ReleaseOnCancel: true, // was LeaderElectionReleaseOnCancel
	})
	if err != nil {
		panic(err)
	}
	// Built against gate.Manager(): runs only while this replica leads.
	// Built against mgr, it would run on every replica, and mgr.Start
	// would fail with ErrUngatedRunnable.
	err = ctrl.NewControllerManagedBy(gate.Manager()).
		For(&corev1.ConfigMap{}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{}, nil
		}))
	if err != nil {
		panic(err)
	}
	_ = mgr.AddHealthzCheck("leader-election", controllerruntime.HealthzChecker(gate.Elector(), 20*time.Second))
	_ = mgr.Start(ctrl.SetupSignalHandler())
}
