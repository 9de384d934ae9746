package leasehold

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// Many electors in one process share one watch; each still elects itself
// on its own Lease, and sees another holder's release at once.
func TestSharedWatchOneWatchForManyElections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		shared := NewSharedWatch(h.srv.Client("shared"), testNS)
		const n = 50
		var cs []*candidate
		for i := 0; i < n; i++ {
			c := h.candidate(fmt.Sprint("a", i), func(c *Config) {
				c.Lock.Name = fmt.Sprint("lease-", i)
				c.SharedWatch = shared
			})
			cs = append(cs, c.start())
		}
		for _, c := range cs {
			c.waitLeader()
		}
		if w := h.srv.Watches(); w != 1 {
			t.Fatalf("%d watches open for %d elections, want 1", w, n)
		}
		// A follower of lease-0 in the same process reacts to a release
		// delivered through the shared watch.
		f := h.candidate("f", func(c *Config) { c.Lock.Name = "lease-0"; c.SharedWatch = shared }).start()
		eventually(t, "f sees a0", func() bool { return f.e.Leader() == "a0" })
		h.srv.Delete(testNS, "lease-0") // deletion: f must wait out a0's claim
		cs[0].wait()
		if f.e.IsLeader() {
			t.Fatal("follower took a deleted lease before its holder's claim ran out")
		}
		h.advance(16 * time.Second)
		f.waitLeader()
		if w := h.srv.Watches(); w != 1 {
			t.Fatalf("%d watches, want 1", w)
		}

	})
}

// If the namespace-wide watch is forbidden, electors fall back to polling.
func TestSharedWatchForbiddenFallsBackToPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Verb == "watch" {
				return apierrors.NewForbidden(leasesGR, "", errors.New("namespace-wide watch denied"))
			}
			return nil
		})
		shared := NewSharedWatch(h.srv.Client("shared"), testNS)
		h.putLease("other", 15)
		b := h.candidate("b", func(c *Config) { c.SharedWatch = shared }).start()
		h.advance(10 * time.Second)
		if gets := h.srv.Requests("b", "get"); gets < 4 {
			t.Fatalf("%d GETs in 10s, want polling every 2s", gets)
		}
		h.advance(10 * time.Second)
		b.waitLeader()

	})
}

func TestSharedWatchNamespaceMismatchRejected(t *testing.T) {
	cfg := validConfig()
	cfg.SharedWatch = NewSharedWatch(leaseholdtest.NewServer().Client("x"), "elsewhere")
	if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
}
