package leasehold_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/leasehold/leasehold"
)

// A controller's leader election tested in a testing/synctest bubble, on
// client-go's plain fake clientset and the real clock (Config.Clock
// unset): inside the bubble time is virtual, so an hour of lease expiry
// takes milliseconds, and synctest.Wait returns exactly when every
// goroutine is blocked, with no polling. In your controller's tests:
//
//	func TestLeaderElection(t *testing.T) {
//		synctest.Test(t, leaderElectionInABubble)
//	}
//
// leaderElectionInABubble below is that test; TestLeaderElectionInABubble
// runs it.
func Example_testingInASynctestBubble() {
	// See leaderElectionInABubble in this file.
}

// leaderElectionInABubble: pod-a leads; pod-b follows; pod-a's process
// dies without releasing; pod-b takes over once the Lease expires, 15s
// later on the bubble's clock.
func leaderElectionInABubble(t *testing.T) {
	clientset := fake.NewClientset()
	var mu sync.Mutex
	leads := map[string]bool{}
	set := func(id string, v bool) { mu.Lock(); leads[id] = v; mu.Unlock() }
	leading := func(id string) bool { mu.Lock(); defer mu.Unlock(); return leads[id] }
	start := func(ctx context.Context, id string) {
		e, err := leasehold.New(leasehold.Config{
			Lock: &leasehold.LeaseLock{Namespace: "default", Name: "my-controller", Identity: id,
				Client: clientset.CoordinationV1()},
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
				set(id, true)
				<-ctx.Done()
				set(id, false)
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		go e.Run(ctx)
	}
	ctxA, killA := context.WithCancel(context.Background())
	start(ctxA, "pod-a")
	synctest.Wait() // pod-a has created the Lease and leads
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	start(ctxB, "pod-b")
	synctest.Wait()
	if !leading("pod-a") || leading("pod-b") {
		t.Fatal("want pod-a leading, pod-b following")
	}

	killA() // a process killed without releasing (ReleaseOnCancel is off)
	synctest.Wait()
	time.Sleep(14 * time.Second) // virtual time: the Lease has not expired yet
	synctest.Wait()
	if leading("pod-b") {
		t.Fatal("pod-b took over before the Lease expired")
	}
	time.Sleep(3 * time.Second)
	synctest.Wait()
	if !leading("pod-b") {
		t.Fatal("pod-b did not take over after the Lease expired")
	}
	stopB()
	synctest.Wait() // every goroutine has returned before the bubble ends
}

func TestLeaderElectionInABubble(t *testing.T) {
	synctest.Test(t, leaderElectionInABubble)
}
