package leasehold

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// An election costs at most two goroutines between requests, leader or
// follower, not counting the user's work: Run's own and the observer's.
// (A renewal in flight runs in one more, and its hedge in another.) None
// for an idle OnNewLeader, none extra with a SharedWatch.
func TestAtMostTwoGoroutinesPerElection(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				var sw *SharedWatch
				if shared {
					sw = NewSharedWatch(h.srv.Client("shared"), testNS)
					sw.clock = h.clock
				}
				opt := func(c *Config) { c.SharedWatch = sw }
				const n = 20
				h.settle()
				before := bubbleGoroutines()
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
				got := bubbleGoroutines() - before - 1 /* the leader's work */ - extra - server
				if got > 2*n {
					t.Fatalf("%d goroutines for %d elections: %.1f each, want at most 2", got, n, float64(got)/n)
				}
				t.Logf("%d goroutines for %d elections", got, n)

			})
		})
	}
}

// The elector keeps no managedFields (the bulk of a Lease as kube-apiserver
// returns it): its copy, and so every write from it, goes without them.
func TestKeptLeaseDropsManagedFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		l := h.putLease("other", 15)
		l.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate}}
		h.srv.Put(l)
		var sent []*coordinationv1.Lease
		var mu sync.Mutex
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Verb == "update" {
				mu.Lock()
				sent = append(sent, r.Lease)
				mu.Unlock()
			}
			return nil
		})
		a := h.candidate("a").start()
		h.advanceTo(20 * time.Second) // take over after expiry, then renew
		a.waitLeader()
		mu.Lock()
		defer mu.Unlock()
		if len(sent) < 2 {
			t.Fatalf("%d updates, want the takeover and renewals", len(sent))
		}
		for _, l := range sent {
			if len(l.ManagedFields) != 0 {
				t.Fatalf("an update carried managedFields %v: the kept copy was not trimmed", l.ManagedFields)
			}
		}

	})
}

// bubbleGoroutines counts the goroutines of synctest bubbles, from a dump
// of every goroutine: runtime.NumGoroutine would also count goroutines of
// earlier tests still winding down outside the bubble (an httptest server
// closing), which made the count flaky under -count=20.
func bubbleGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, line := range strings.Split(string(buf), "\n") {
		if strings.HasPrefix(line, "goroutine ") && strings.Contains(line, "synctest bubble") {
			count++
		}
	}
	return count
}
