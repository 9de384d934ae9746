package leaseholdtest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// A unit test of a controller's election on fake time: a minute passes in
// milliseconds, and the leader renews every RetryPeriod on the way,
// exactly as it would on a real clock.
func ExampleClock() {
	srv := leaseholdtest.NewServer()
	clock := leaseholdtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), srv)
	e, err := leasehold.New(leasehold.Config{
		Lock:  &leasehold.LeaseLock{Namespace: "default", Name: "my-controller", Identity: "pod-a", Client: srv.Client("pod-a")},
		Clock: clock,
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
			<-ctx.Done()
		}},
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()

	clock.Settle()
	fmt.Println("leading at start:", e.IsLeader())
	clock.Advance(time.Minute)
	fmt.Println("leading a minute later:", e.IsLeader())
	fmt.Println("renewals:", srv.Requests("pod-a", "update")) // one per RetryPeriod (2s)
	stop()
	fmt.Println("Run:", <-done)
	// Output:
	// leading at start: true
	// leading a minute later: true
	// renewals: 30
	// Run: <nil>
}
