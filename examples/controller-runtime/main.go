// Command controller-runtime runs a tiny ConfigMap reconciler on a
// controller-runtime manager, with leasehold's elector deciding which
// replica reconciles, through github.com/leasehold/leasehold/controllerruntime
// (see that package for why a gate and not a resourcelock.Interface).
//
//	go run . -kubeconfig=$HOME/.kube/config -lease-lock-namespace=default
//
// Run two copies: one reconciles, the other waits; Ctrl-C the first and the
// second takes over at once.
package main

import (
	"context"
	"flag"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
)

func main() {
	klog.InitFlags(nil)
	namespace := flag.String("lease-lock-namespace", "default", "namespace of the Lease and of the ConfigMaps to reconcile")
	name := flag.String("lease-lock-name", "configmap-controller", "name of the Lease")
	healthAddr := flag.String("health-addr", ":8081", "address of /healthz; 0 disables it")
	flag.Parse() // controller-runtime registers -kubeconfig
	ctrl.SetLogger(klog.NewKlogr())
	log := ctrl.Log.WithName("setup")
	if err := run(*namespace, *name, *healthAddr); err != nil {
		log.Error(err, "Manager stopped with an error")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}

func run(namespace, name, healthAddr string) error {
	cfg := ctrl.GetConfigOrDie()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		LeaderElection:         false, // leasehold decides, through the gate
		HealthProbeBindAddress: healthAddr,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{namespace: {}}},
	})
	if err != nil {
		return err
	}
	// The elector bounds each of its own requests: no timeout wrapper.
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	id, err := leasehold.DefaultIdentity()
	if err != nil {
		return err
	}
	gate, err := controllerruntime.New(mgr, leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: namespace, Name: name, Identity: id, Client: clientset.CoordinationV1()},
		ReleaseOnCancel: true,
	})
	if err != nil {
		return err
	}
	// Built against gate.Manager(), the controller runs only while we lead.
	// Built against mgr, it would run on every replica, and mgr.Start
	// would fail with controllerruntime.ErrUngatedRunnable.
	err = ctrl.NewControllerManagedBy(gate.Manager()).
		For(&corev1.ConfigMap{}).
		Complete(&configMapReconciler{client: mgr.GetClient()})
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("leader-election", controllerruntime.HealthzChecker(gate.Elector(), 20*time.Second)); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// configMapReconciler logs the size of each ConfigMap it sees.
type configMapReconciler struct{ client client.Client }

// Reconcile implements reconcile.Reconciler.
func (r *configMapReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cm corev1.ConfigMap
	if err := r.client.Get(ctx, req.NamespacedName, &cm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).Info("Reconciled", "keys", len(cm.Data)+len(cm.BinaryData))
	return ctrl.Result{}, nil
}
