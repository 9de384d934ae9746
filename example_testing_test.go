package leasehold_test

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// Testing a controller on the fake clientset it already uses: client-go's
// plain fakes return Leases without a resourceVersion, and the elector
// then writes without preconditions. Everything a single-process test
// needs works: leading, renewing, following, handing over on release,
// callbacks. What the fakes cannot show is a race between writers: see
// the leaseholdtest example.
func Example_testingWithClientGoFake() {
	clientset := fake.NewClientset() // what the controller's tests already have
	leading := make(chan string)
	elector := func(id string) *leasehold.Elector {
		e, err := leasehold.New(leasehold.Config{
			Lock: &leasehold.LeaseLock{
				Namespace: "default", Name: "my-controller", Identity: id,
				Client: clientset.CoordinationV1(),
			},
			ReleaseOnCancel: true,
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
				leading <- id
				<-ctx.Done()
			}},
		})
		if err != nil {
			panic(err)
		}
		return e
	}

	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = elector("pod-a").Run(ctxA) }()
	fmt.Println(<-leading, "leads")
	b := elector("pod-b")
	go func() { defer wg.Done(); _ = b.Run(ctxB) }()

	stopA() // pod-a shuts down and releases; pod-b sees it on its watch
	fmt.Println(<-leading, "leads")
	stopB()
	wg.Wait()
	// Output:
	// pod-a leads
	// pod-b leads
}

// What only leaseholdtest proves: races. Its server enforces
// compare-and-swap like kube-apiserver, so here two candidates whose
// creates are in flight at the same moment cannot both win, and the
// request counts show the race really happened. Hooks inject errors,
// latency and hangs the same way.
func Example_testingRacesWithLeaseholdtest() {
	srv := leaseholdtest.NewServer()
	// Hold every create until both candidates have sent one.
	var arrived sync.WaitGroup
	arrived.Add(2)
	srv.AddHook(func(ctx context.Context, req leaseholdtest.Request) error {
		if req.Verb == "create" {
			arrived.Done()
			arrived.Wait()
		}
		return nil
	})

	won := make(chan string, 2)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, id := range []string{"pod-a", "pod-b"} {
		e, err := leasehold.New(leasehold.Config{
			Lock: &leasehold.LeaseLock{Namespace: "default", Name: "my-controller", Identity: id, Client: srv.Client(id)},
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
				won <- id
				<-ctx.Done()
			}},
		})
		if err != nil {
			panic(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = e.Run(ctx) }()
	}
	winner := <-won
	fmt.Println("creates sent:", srv.Requests("", "create"))
	fmt.Println("the Lease names the winner:", holderOf(srv) == winner)
	stop()
	wg.Wait()
	fmt.Println("leaders in all:", 1+len(won))
	// Output:
	// creates sent: 2
	// the Lease names the winner: true
	// leaders in all: 1
}

func holderOf(srv *leaseholdtest.Server) string {
	l := srv.Lease("default", "my-controller")
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}
