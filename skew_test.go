package leasehold

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// skewedClock runs at rate times the speed of a master fake clock, from the
// same origin: local time t0 + rate*(master - t0).
type skewedClock struct {
	master *clocktesting.FakeClock
	rate   float64
}

var _ clock.WithTicker = skewedClock{}

func (c skewedClock) toMaster(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(float64(d) / c.rate))
}
func (c skewedClock) Now() time.Time {
	return t0.Add(time.Duration(float64(c.master.Now().Sub(t0)) * c.rate))
}
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c skewedClock) After(d time.Duration) <-chan time.Time {
	return c.master.After(c.toMaster(d))
}
func (c skewedClock) NewTimer(d time.Duration) clock.Timer {
	return skewedTimer{Timer: c.master.NewTimer(c.toMaster(d)), c: c}
}
func (c skewedClock) Tick(d time.Duration) <-chan time.Time { return c.master.Tick(c.toMaster(d)) }
func (c skewedClock) NewTicker(d time.Duration) clock.Ticker {
	return c.master.NewTicker(c.toMaster(d))
}
func (c skewedClock) Sleep(d time.Duration) { c.master.Sleep(c.toMaster(d)) }

type skewedTimer struct {
	clock.Timer
	c skewedClock
}

func (t skewedTimer) Reset(d time.Duration) bool { return t.Timer.Reset(t.c.toMaster(d)) }

// Clock-rate skew: the leader's clock runs slow and a follower's fast,
// by a total ratio. Below the documented bound L/(D+RetryPeriod) = 1.25,
// the new leader never starts before the old one's work stopped (in
// master time). Above it, the test shows the overlap the bound predicts.
func TestClockRateSkewBound(t *testing.T) {
	bound := float64(15) / float64(10+2)
	for _, tc := range []struct {
		ratio   float64
		overlap bool
	}{
		{1.0, false},
		{1.1, false},
		{1.2, false},
		{bound * 0.99, false},
		{1.6, true},
	} {
		t.Run(fmt.Sprintf("ratio %.3f", tc.ratio), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				h.step = 100 * time.Millisecond
				slow := skewedClock{master: h.clock, rate: 1 / math.Sqrt(tc.ratio)}
				fast := skewedClock{master: h.clock, rate: math.Sqrt(tc.ratio)}
				var mu sync.Mutex
				var stoppedAt, startedAt time.Time
				a := h.candidate("a", func(c *Config) { c.Clock = slow })
				a.cfg.Callbacks.OnStartedLeading = func(ctx context.Context) {
					<-ctx.Done()
					mu.Lock()
					stoppedAt = h.clock.Now()
					mu.Unlock()
				}
				a.e, _ = New(a.cfg)
				a.start()
				a.waitLeader()
				b := h.candidate("b", func(c *Config) { c.Clock = fast })
				b.cfg.Callbacks.OnStartedLeading = func(ctx context.Context) {
					mu.Lock()
					startedAt = h.clock.Now()
					mu.Unlock()
					<-ctx.Done()
				}
				b.e, _ = New(b.cfg)
				b.start()
				eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
				// Partition a: all its requests fail from now on, and its
				// watch is cut, so it learns nothing from the server.
				h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
					if r.Client == "a" {
						return apierrors.NewServiceUnavailable("partitioned")
					}
					return nil
				})
				h.srv.CloseWatches()
				h.advance(20 * time.Second)
				b.waitLeader()
				mu.Lock()
				defer mu.Unlock()
				if stoppedAt.IsZero() || startedAt.IsZero() {
					t.Fatalf("stopped %v started %v", stoppedAt, startedAt)
				}
				overlap := startedAt.Before(stoppedAt)
				if overlap != tc.overlap {
					t.Fatalf("ratio %.3f (bound %.3f): old work stopped at %v, new started at %v; overlap=%v, want %v",
						tc.ratio, bound, stoppedAt.Sub(t0), startedAt.Sub(t0), overlap, tc.overlap)
				}

			})
		})
	}
}
