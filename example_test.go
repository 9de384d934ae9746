package leasehold_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// The basic use: wrap the controller's existing Run function. Here the
// Lease lives in an in-memory test server, so the example runs anywhere.
func Example() {
	srv := leaseholdtest.NewServer() // in production: clientset.CoordinationV1()
	ctx, stop := context.WithCancel(context.Background())

	err := leasehold.Run(ctx, leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: "default",
			Name:      "my-controller",
			Identity:  "pod-a",
			Client:    srv.Client("pod-a"),
		},
		ReleaseOnCancel: true,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				fmt.Println("leading: running the controller")
				stop() // a real controller runs until ctx is cancelled
				<-ctx.Done()
			},
			OnStoppedLeading: func() { fmt.Println("stopped leading") },
		},
	})
	fmt.Println("Run returned", err)
	fmt.Printf("holder after release: %q\n", holder(srv))
	// Output:
	// leading: running the controller
	// stopped leading
	// Run returned <nil>
	// holder after release: ""
}

func holder(srv *leaseholdtest.Server) string {
	l := srv.Lease("default", "my-controller")
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// Connecting to a real cluster: the election's requests time out below the
// renew deadline, the identity is unique per process, and the namespace is
// the pod's own.
func ExampleNew() {
	restCfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Println(err)
		return
	}
	clientset := kubernetes.NewForConfigOrDie(leasehold.WithRequestTimeout(restCfg, leasehold.DefaultRenewDeadline))
	id, _ := leasehold.DefaultIdentity()
	ns, err := leasehold.InClusterNamespace()
	if err != nil {
		ns = "default"
	}
	e, err := leasehold.New(leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: ns, Name: "my-controller", Identity: id, Client: clientset.CoordinationV1()},
		ReleaseOnCancel: true,
		Callbacks:       leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { <-ctx.Done() }},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = e // go e.Run(ctx)
}

// New names every problem of a bad config at once.
func ExampleNew_validation() {
	_, err := leasehold.New(leasehold.Config{
		Lock:          &leasehold.LeaseLock{Namespace: "default", Name: "x", Client: leaseholdtest.NewServer().Client("")},
		LeaseDuration: 11 * time.Second, // client-go accepts this; it leaves no safety margin
		Callbacks:     leasehold.Callbacks{OnStartedLeading: func(context.Context) {}},
	})
	fmt.Println(err)
	// Output:
	// leasehold: invalid config: Lock.Identity is "": set a value unique to this process (DefaultIdentity returns hostname_random); LeaseDuration is 11s: it must exceed RenewDeadline + RetryPeriod (10s + 2s = 12s) to leave a safety margin for the old leader to stop; raise LeaseDuration to at least 13s
}

// With Rejoin, OnStartedLeading is called once per term, so it builds its
// controller inside: a controller whose Run has returned has shut its queue
// down, and running the same one again would hold the lease and do
// nothing. Here the first term ends early (its work returns), the elector
// campaigns again, and the second term gets a fresh controller.
func ExampleConfig_rejoin() {
	srv := leaseholdtest.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	built := 0
	e, _ := leasehold.New(leasehold.Config{
		Lock:          &leasehold.LeaseLock{Namespace: "default", Name: "lock", Identity: "a", Client: srv.Client("a")},
		Rejoin:        true,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 100 * time.Millisecond,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				built++
				c := &toyController{name: fmt.Sprint("controller #", built)} // fresh per term
				if built == 2 {
					cancel() // stop the example after the second term
				}
				c.Run(ctx)
			},
		},
	})
	err := e.Run(ctx)
	fmt.Println("Run:", err)
	// Output:
	// controller #1 ran and shut down its queue
	// controller #2 ran and shut down its queue
	// Run: <nil>
}

// toyController is shaped like a sample-controller: Run works until ctx
// is cancelled (the first one here returns early), then shuts its queue
// down for good.
type toyController struct {
	name     string
	shutDown bool
}

func (c *toyController) Run(ctx context.Context) {
	if c.shutDown {
		panic("a controller cannot be run twice")
	}
	if c.name != "controller #1" {
		<-ctx.Done()
	}
	c.shutDown = true
	fmt.Println(c.name, "ran and shut down its queue")
}

// A liveness probe on Check: it fails when renewals stalled while leading,
// or when the work outlived a lost lease. Do not gate readiness on
// leadership: that keeps all but one replica unready and blocks rollouts.
func ExampleElector_HealthHandler() {
	e, _ := leasehold.New(leasehold.Config{
		Lock:      &leasehold.LeaseLock{Namespace: "default", Name: "lock", Identity: "a", Client: leaseholdtest.NewServer().Client("a")},
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { <-ctx.Done() }},
	})
	mux := http.NewServeMux()
	mux.Handle("/healthz", e.HealthHandler(20*time.Second))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	fmt.Println(rec.Code, rec.Body.String())
	// Output:
	// 200 ok
}

// printMetrics is a Metrics that prints what it receives.
type printMetrics struct{}

func (printMetrics) LeaderChanged(name string, leading bool) {
	fmt.Println("leader_election_master_status", name, leading)
}
func (printMetrics) SlowPath(string)                    {}
func (printMetrics) Transition(name string)             { fmt.Println("transition", name) }
func (printMetrics) Renew(string, time.Duration, error) {}
func (printMetrics) Takeover(string, time.Duration)     {}

// Metrics go to any implementation of the Metrics interface; the
// metrics/prometheus package provides one for Prometheus.
func ExampleMetrics() {
	srv := leaseholdtest.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	e, _ := leasehold.New(leasehold.Config{
		Name:      "demo",
		Metrics:   printMetrics{},
		Lock:      &leasehold.LeaseLock{Namespace: "default", Name: "lock", Identity: "a", Client: srv.Client("a")},
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { cancel(); <-ctx.Done() }},
	})
	_ = e.Run(ctx)
	// Output:
	// leader_election_master_status demo false
	// transition demo
	// leader_election_master_status demo true
	// leader_election_master_status demo false
}

// Migrating from k8s.io/client-go/tools/leaderelection. The client-go
// code this replaces is in the comments; each field maps one to one.
func Example_migrateFromClientGo() {
	srv := leaseholdtest.NewServer()
	client := srv.Client("pod-a") // clientset.CoordinationV1()
	ctx, cancel := context.WithCancel(context.Background())

	// lock := &resourcelock.LeaseLock{
	//     LeaseMeta:  metav1.ObjectMeta{Name: "my-controller", Namespace: "default"},
	//     Client:     clientset.CoordinationV1(),
	//     LockConfig: resourcelock.ResourceLockConfig{Identity: id, EventRecorder: recorder},
	// }
	lock := &leasehold.LeaseLock{
		Name:      "my-controller", // LeaseMeta.Name
		Namespace: "default",       // LeaseMeta.Namespace
		Client:    client,          // Client
		Identity:  "pod-a",         // LockConfig.Identity
		// EventRecorder: recorder, // LockConfig.EventRecorder
	}

	// leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
	err := leasehold.Run(ctx, leasehold.Config{
		Lock:            lock,
		LeaseDuration:   15 * time.Second, // same
		RenewDeadline:   10 * time.Second, // same
		RetryPeriod:     2 * time.Second,  // same
		ReleaseOnCancel: true,             // same, and now safe: the work has returned first
		Name:            "my-controller",  // same; labels the metrics
		// WatchDog: healthzAdaptor      -> elector.HealthHandler / Check
		// Coordinated                   -> not supported
		Callbacks: leasehold.Callbacks{ // LeaderCallbacks
			OnStartedLeading: func(ctx context.Context) {
				fmt.Println("leading")
				cancel()
				<-ctx.Done()
			},
			// Only called after a term, and after OnStartedLeading returned.
			OnStoppedLeading: func() { fmt.Println("stopped") },
			OnNewLeader:      func(id string) {}, // same
		},
	})
	// RunOrDie returned nothing; Run says why it ended.
	fmt.Println("err:", err)
	// Output:
	// leading
	// stopped
	// err: <nil>
}

// ReleaseOnCancel hands the lease over at once on shutdown: the elector
// keeps renewing until the work has returned, then clears the holder, and a
// follower watching the Lease takes over in milliseconds instead of waiting
// LeaseDuration.
func ExampleConfig_releaseOnCancel() {
	srv := leaseholdtest.NewServer()
	elector := func(id string, leading chan<- string) *leasehold.Elector {
		e, _ := leasehold.New(leasehold.Config{
			Lock:            &leasehold.LeaseLock{Namespace: "default", Name: "lock", Identity: id, Client: srv.Client(id)},
			ReleaseOnCancel: true,
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
				leading <- id
				<-ctx.Done()
				fmt.Println(id, "finished its work")
			}},
		})
		return e
	}
	leading := make(chan string, 2)
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	doneA, doneB := make(chan error), make(chan error)
	go func() { doneA <- elector("a", leading).Run(ctxA) }()
	fmt.Println(<-leading, "leads")
	go func() { doneB <- elector("b", leading).Run(ctxB) }()

	start := time.Now()
	stopA() // a shuts down: its work returns, then it releases the lease
	fmt.Println(<-leading, "leads; handoff under a second:", time.Since(start) < time.Second)
	fmt.Println("a's Run:", <-doneA)
	stopB()
	<-doneB
	// Output:
	// a leads
	// a finished its work
	// b leads; handoff under a second: true
	// a's Run: <nil>
	// b finished its work
}
