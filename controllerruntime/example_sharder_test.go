package controllerruntime_test

import (
	"context"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
	"github.com/leasehold/leasehold/shard"
)

// A controller whose ConfigMaps are spread over every replica: each
// replica reconciles the ConfigMaps of its fair share of 16 shards.
// Compiled, not run: it needs a cluster.
func ExampleNewSharder() {
	cfg := ctrl.GetConfigOrDie()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		LeaderElection:         false, // every replica works, on its own shards
		HealthProbeBindAddress: ":8081",
	})
	if err != nil {
		panic(err)
	}
	id, err := leasehold.DefaultIdentity()
	if err != nil {
		panic(err)
	}
	clientset := kubernetes.NewForConfigOrDie(leasehold.WithRequestTimeout(cfg, leasehold.DefaultRenewDeadline))
	s, err := controllerruntime.NewSharder(mgr, &corev1.ConfigMap{}, controllerruntime.FieldNamespacedName, shard.Config{
		Namespace:       "my-system",
		Group:           "my-controller", // names the group's Leases
		Identity:        id,
		Client:          clientset.CoordinationV1(),
		Shards:          16, // the same in every replica, for the group's lifetime
		ReleaseOnCancel: true,
	})
	if err != nil {
		panic(err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		For(&corev1.ConfigMap{}, builder.WithPredicates(s.Predicate())). // events of owned shards
		WatchesRawSource(s.Source()).                                    // an acquired shard: all its objects
		Complete(s.Reconciler(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			// Runs only while req's shard is owned here; ctx is
			// cancelled when it moves away.
			return reconcile.Result{}, nil
		})))
	if err != nil {
		panic(err)
	}
	_ = mgr.AddHealthzCheck("shard-membership", func(*http.Request) error { return s.Member().Check(20 * time.Second) })
	_ = mgr.Start(ctrl.SetupSignalHandler())
}
