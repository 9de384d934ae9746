package integration

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/testkit"
)

// Run's ctx is cancelled while the leader's renewal is in flight, and the
// work returns the moment its ctx is cancelled: by the time the elector
// looks, both the cancellation and the work's end are pending. It must
// take this for a step-down (Run returns nil, the Lease is released), not
// for work that returned on its own (ErrWorkReturned). Regression test for
// the race fixed in b9f53d5; before it, about half of these Runs failed.
func TestCancelDuringRenewalReturnsNil(t *testing.T) {
	ns := newNamespace(t)
	const rounds = 10
	for i := range rounds {
		tr := testkit.NewTracker()
		var self atomic.Pointer[candidate]
		var renewals atomic.Int32
		rec := &testkit.Wire{}
		rec.SetBefore(func(c testkit.Call, _ *http.Request) *http.Response {
			// Cancel Run while its first renewal is in flight.
			if c.Verb == "update" && c.Holder == "leader" && renewals.Add(1) == 1 {
				if s := self.Load(); s != nil {
					s.Cancel()
				}
			}
			return nil
		})
		name := "cancel-" + string(rune('a'+i))
		c := startCandidate(t, candidateOpts{id: "leader", ns: ns, name: name, t: std, release: true, tr: tr, rec: rec})
		self.Store(c)
		tr.NextStart(t, 10*time.Second)
		if err := c.Wait(t, 10*time.Second); err != nil {
			t.Errorf("round %d: Run returned %v after its ctx was cancelled during a renewal, want nil", i, err)
		}
		if l := testkit.GetLease(t, admin, ns, name); testkit.Holder(l) != "" {
			t.Errorf("round %d: Lease still held by %q after the step-down, want released", i, testkit.Holder(l))
		}
	}
}
