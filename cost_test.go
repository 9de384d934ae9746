package leasehold

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// An election costs at most two goroutines, leader or follower, not
// counting the user's work: Run's own and the observer's. None per request,
// none for an idle OnNewLeader, none extra with a SharedWatch.
func TestAtMostTwoGoroutinesPerElection(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			h := newHarness(t)
			var sw *SharedWatch
			if shared {
				sw = NewSharedWatch(h.srv.Client("shared"), testNS)
				sw.clock = h.clock
			}
			opt := func(c *Config) { c.SharedWatch = sw }
			const n = 20
			h.settle()
			before := runtime.NumGoroutine()
			var cs []*candidate
			for i := 0; i < n; i++ {
				cs = append(cs, h.candidate(fmt.Sprint("c", i), opt).start())
			}
			h.advance(10 * time.Second) // renewals, and every follower told of the leader
			leaders := 0
			for _, c := range cs {
				if c.e.IsLeader() {
					leaders++
				}
				if c.count("new:"+h.holder()) != 1 {
					t.Fatalf("%s was not told of the leader", c.id)
				}
			}
			if leaders != 1 {
				t.Fatalf("%d leaders", leaders)
			}
			extra := 0 // the shared watch's own goroutine
			if shared {
				extra = 1
			}
			// leaseholdtest serves each watch on a goroutine of its own, as
			// a server would: not the elector's.
			server := h.srv.Watches()
			got := runtime.NumGoroutine() - before - 1 /* the leader's work */ - extra - server
			if got > 2*n {
				t.Fatalf("%d goroutines for %d elections: %.1f each, want at most 2", got, n, float64(got)/n)
			}
			t.Logf("%d goroutines for %d elections", got, n)
		})
	}
}
