package main

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
	"github.com/leasehold/leasehold/shard"
)

// runControllerRuntime is runController as a controller-runtime
// controller: a manager on every copy, its controller confined to the
// copy's shards by controllerruntime.Sharder. The manager's cache holds
// every ConfigMap of the namespace (filtering is client-side), and no
// STARTED line is printed: the Sharder runs the shards.
//
// It imports controller-runtime's packages, not its root package
// (sigs.k8s.io/controller-runtime), whose init defines a -kubeconfig flag
// of its own, which this command's would clash with.
func runControllerRuntime(ctx context.Context, o options, cfg *rest.Config) error {
	ctrllog.SetLogger(klog.NewKlogr())
	mgr, err := manager.New(cfg, manager.Options{
		LeaderElection: false, // every copy reconciles, its own shards
		Cache:          cache.Options{DefaultNamespaces: map[string]cache.Config{o.namespace: {}}},
		Metrics:        metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(leasehold.WithRequestTimeout(cfg, o.renewDeadline))
	if err != nil {
		return err
	}
	s, err := controllerruntime.NewSharder(mgr, &corev1.ConfigMap{}, controllerruntime.FieldNamespacedName, shard.Config{
		Namespace:       o.leaseNamespace,
		Group:           o.group,
		Identity:        o.id,
		Client:          cs.CoordinationV1(),
		Shards:          o.shards,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: true,
		Metrics:         o.metrics,
		OnShardStopped:  func(i int) { emit("STOPPED", o.id, fmt.Sprint(i)) },
	})
	if err != nil {
		return err
	}
	emit("FILTER", o.id, "client")
	r := &crReconciler{o: o, c: mgr.GetClient()}
	if err := builder.ControllerManagedBy(mgr).Named("sharded-configmaps").
		For(&corev1.ConfigMap{}, builder.WithPredicates(s.Predicate())). // events of owned shards
		WatchesRawSource(s.Source()).                                    // an acquired shard: all its ConfigMaps
		Complete(s.Reconciler(r)); err != nil {                          // only while the shard is owned here
		return err
	}
	return mgr.Start(ctx)
}

// crReconciler is controller.reconcile for controller-runtime.
type crReconciler struct {
	o options
	c client.Client
}

// Reconcile records this copy and shard on the ConfigMap, if not yet.
func (r *crReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cm corev1.ConfigMap
	if err := r.c.Get(ctx, req.NamespacedName, &cm); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	i, err := controllerruntime.ShardOf(req.NamespacedName, controllerruntime.FieldNamespacedName, r.o.shards)
	if err != nil {
		return reconcile.Result{}, err
	}
	if cm.Annotations[annotationBy] == r.o.id && cm.Annotations[annotationShard] == fmt.Sprint(i) {
		return reconcile.Result{}, nil
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[annotationBy] = r.o.id
	cm.Annotations[annotationShard] = fmt.Sprint(i)
	if err := r.c.Update(ctx, &cm); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return reconcile.Result{}, nil // a newer version comes through the cache
	} else if err != nil {
		return reconcile.Result{}, err
	}
	emit("RECONCILED", r.o.id, fmt.Sprint(i), req.Name)
	return reconcile.Result{}, nil
}
