// Command quickstart is the README's first program: a controller that
// runs only while it holds the Lease "my-controller".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
)

func main() {
	// Kubernetes stops pods with SIGTERM; Ctrl-C sends SIGINT.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// In-cluster config in a pod, else $KUBECONFIG or ~/.kube/config.
	restConfig, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		klog.Fatal(err)
	}
	clientset := kubernetes.NewForConfigOrDie(restConfig)
	id, err := leasehold.DefaultIdentity() // hostname_random: unique per process
	if err != nil {
		klog.Fatal(err)
	}

	err = leasehold.Run(ctx, leasehold.Config{
		Lock: &leasehold.LeaseLock{Namespace: "default", Name: "my-controller",
			Identity: id, Client: clientset.CoordinationV1()},
		ReleaseOnCancel: true, // on SIGTERM: stop the work, then hand over in milliseconds
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
			runController(ctx, clientset) // build the controller here, once per term
		}},
	})
	if err != nil { // e.g. the lease was lost: exit, and the kubelet restarts us
		klog.ErrorS(err, "Leader election ended")
		os.Exit(1)
	}
}

// runController stands for your controller: it works until ctx is
// cancelled, then returns promptly.
func runController(ctx context.Context, _ kubernetes.Interface) {
	klog.InfoS("Leading: reconciling")
	<-ctx.Done()
}
