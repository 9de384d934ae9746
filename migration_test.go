package leasehold

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// The migration checklist of docs/migrating.md (Migrating from
// client-go), item by item, so that what it promises keeps holding.
func TestMigrationChecklist(t *testing.T) {
	// The page lists the items this test runs, and says that it does.
	t.Run("docs/migrating.md", func(t *testing.T) {
		doc, err := os.ReadFile("docs/migrating.md")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"`TestMigrationChecklist` runs each item", "1. **A work that ignores its ctx.**",
			"2. **No `os.Exit` in a callback.**", "3. **Timings set explicitly**", "4. **`ReleaseOnCancel`.**"} {
			if !strings.Contains(string(doc), want) {
				t.Errorf("docs/migrating.md's migration checklist has no %q", want)
			}
		}
	})
	// 1. A work that ignores its ctx (client-go's example runs select {}):
	// on SIGTERM the elector renews for StepDownTimeout, then gives up
	// without releasing and Run says so; a work that returns on
	// <-ctx.Done() hands over at once.
	t.Run("work ignoring ctx", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true })
			a.hold = make(chan struct{}) // like select {}: ignores its ctx
			a.start()
			a.waitLeader()
			a.cancel() // SIGTERM
			err := a.wait()
			if !errors.Is(err, ErrStepDownTimeout) {
				t.Fatalf("Run = %v, want ErrStepDownTimeout", err)
			}
			if h.holder() != "a" {
				t.Fatalf("released (holder %q) while the work may still run", h.holder())
			}
		})
	})
	t.Run("work returning on ctx.Done", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true }).start()
			a.waitLeader()
			b := h.candidate("b").start()
			eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
			a.cancel()
			b.waitLeader() // the fake clock has not moved
			if err := <-a.done; err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
			a.done <- nil
		})
	})
	// 3. Timings: a zero means the default (client-go rejects zero).
	t.Run("zero timings take the defaults", func(t *testing.T) {
		e, err := New(Config{Lock: &LeaseLock{Namespace: "ns", Name: "n", Identity: "a", Client: leaseholdtest.NewServer().Client("a")},
			Callbacks: Callbacks{OnStartedLeading: func(context.Context) {}}})
		if err != nil {
			t.Fatal(err)
		}
		if e.t.leaseDuration != 15*time.Second || e.t.renewDeadline != 10*time.Second || e.t.retryPeriod != 2*time.Second {
			t.Fatalf("defaults = %v/%v/%v, want 15s/10s/2s", e.t.leaseDuration, e.t.renewDeadline, e.t.retryPeriod)
		}
	})
	// 4. Without ReleaseOnCancel the next leader waits for expiry, and the
	// log says so once.
	t.Run("without ReleaseOnCancel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			a := h.candidate("a").start()
			a.waitLeader()
			b := h.candidate("b").start()
			eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
			a.cancel()
			if err := a.wait(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			if n := len(a.logs.matching("without releasing the lease (ReleaseOnCancel is off)")); n != 1 {
				t.Fatalf("%d log lines saying the Lease is left to expire, want 1:\n%s", n, a.logs)
			}
			if b.e.IsLeader() {
				t.Fatal("b took an unreleased Lease before it expired")
			}
			h.advance(16 * time.Second)
			b.waitLeader()
		})
	})
}
