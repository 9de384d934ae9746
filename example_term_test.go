package leasehold_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// The work's ctx carries its term. Transitions is the fencing token: stamp
// it (with the Lease's UID) on every write, and have the store refuse a
// token lower than the highest it has seen. Package fence does that for
// Kubernetes objects with an admission policy.
func ExampleTermFromContext() {
	srv := leaseholdtest.NewServer()
	ctx, stop := context.WithCancel(context.Background())
	err := leasehold.Run(ctx, leasehold.Config{
		Lock: &leasehold.LeaseLock{Namespace: "default", Name: "my-controller", Identity: "pod-a", Client: srv.Client("pod-a")},
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				term, _ := leasehold.TermFromContext(ctx)
				fmt.Printf("term %d of %s, held by %s\n", term.Transitions, term.Lease, term.Holder)
				fmt.Println("stamp for writes:", term) // or fence.Stamp(obj, term)
				stop()
				<-ctx.Done()
			},
		},
	})
	fmt.Println("Run:", err)
	// Output:
	// term 0 of default/my-controller, held by pod-a
	// stamp for writes: default/my-controller#0@pod-a
	// Run: <nil>
}

// Yield hands leadership to a chosen replica, here before pod-a's node is
// drained: pod-a's work is cancelled, the Lease is released with pod-b
// named on it, and pod-b, following by watch, takes it at once. Any other
// candidate defers to pod-b. Operators do the same without code through
// the leasehold.dev/preferred-holder annotation (kubectl leasehold yield).
func ExampleElector_Yield() {
	srv := leaseholdtest.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	elector := func(id string, work func(context.Context)) *leasehold.Elector {
		e, err := leasehold.New(leasehold.Config{
			Lock:          &leasehold.LeaseLock{Namespace: "default", Name: "my-controller", Identity: id, Client: srv.Client(id)},
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
			Callbacks: leasehold.Callbacks{OnStartedLeading: work},
		})
		if err != nil {
			panic(err)
		}
		return e
	}

	aLeads, bTerm := make(chan struct{}), make(chan leasehold.Term, 1)
	a := elector("pod-a", func(ctx context.Context) {
		close(aLeads)
		<-ctx.Done() // cancelled by the Yield
	})
	b := elector("pod-b", func(ctx context.Context) {
		term, _ := leasehold.TermFromContext(ctx)
		bTerm <- term
		<-ctx.Done()
	})
	aDone, bDone := make(chan error, 1), make(chan error, 1)
	go func() { aDone <- a.Run(ctx) }()
	<-aLeads
	go func() { bDone <- b.Run(ctx) }()
	for b.Leader() != "pod-a" { // pod-b is following
		time.Sleep(time.Millisecond)
	}

	began := time.Now()
	if err := a.Yield(ctx, "pod-b"); err != nil {
		fmt.Println("Yield:", err)
		return
	}
	term := <-bTerm
	fmt.Println("now leading:", term.Holder, "term", term.Transitions, "within a second:", time.Since(began) < time.Second)
	for a.Leader() != "pod-b" { // pod-a, still running, follows pod-b
		time.Sleep(time.Millisecond)
	}
	fmt.Println("pod-a follows", a.Leader())
	cancel()
	fmt.Println("pod-a's Run returned", <-aDone, "once cancelled")
	<-bDone
	// Output:
	// now leading: pod-b term 1 within a second: true
	// pod-a follows pod-b
	// pod-a's Run returned <nil> once cancelled
}

// Coordinated leader election (KEP-4355): kube-apiserver picks the leader
// among the registered candidates, the one with the oldest version by
// default, so that during an upgrade the leader is never the newest
// replica. The cluster needs the CoordinatedLeaderElection feature gate and
// coordination.k8s.io/v1beta1; without them the Elector campaigns as New's
// does. RBAC: examples/deploy/rbac-coordinated.yaml.
func ExampleNewCoordinated() {
	restCfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Println(err)
		return
	}
	clientset := kubernetes.NewForConfigOrDie(restCfg)
	id, _ := leasehold.DefaultIdentity()
	e, err := leasehold.NewCoordinated(leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: "default", Name: "example", Identity: id, Client: clientset.CoordinationV1()},
		ReleaseOnCancel: true,
		Callbacks:       leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { <-ctx.Done() }},
	}, leasehold.CandidateConfig{
		Client:        clientset.CoordinationV1beta1(),
		BinaryVersion: "1.37.2", // this binary's version, usually set at build time
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = e // go e.Run(ctx)
}
