package leasehold

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// The work's ctx carries its term, Elector.Term reports it while leading,
// and the token strictly increases from one term to the next on a Lease,
// whichever process wins.
func TestTermFencingTokenIncreasesAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		// Name only labels logs and metrics: Term.Lease names the Lease itself.
		rel := func(c *Config) { c.ReleaseOnCancel = true; c.Name = "my-metrics-label" }
		var tokens []int32
		for i, id := range []string{"a", "b", "a2", "b2"} {
			c := h.candidate(id, rel).start()
			c.waitLeader()
			eventually(t, id+"'s work started", func() bool { return c.workCtx.Load() != nil })
			term, ok := TermFromContext(*c.workCtx.Load())
			if !ok {
				t.Fatalf("%s: OnStartedLeading's ctx carries no term", id)
			}
			lease := h.lease()
			if term.Transitions != leaserecord.Transitions(lease) || term.UID != lease.UID || term.Holder != id || term.Lease != testNS+"/"+testName ||
				term.ResourceVersion == "" || (i == 0 && term.ResourceVersion != lease.ResourceVersion) {
				t.Fatalf("term %+v does not match the Lease (transitions %d, uid %s)", term, leaserecord.Transitions(lease), lease.UID)
			}
			if got, ok := c.e.Term(); !ok || got != term {
				t.Fatalf("Elector.Term() = %+v, %v; want the work's term %+v", got, ok, term)
			}
			if !term.AcquiredAt.Equal(h.clock.Now()) && i == 0 {
				t.Fatalf("AcquiredAt = %v, want the winning write's send time %v", term.AcquiredAt, h.clock.Now())
			}
			tokens = append(tokens, term.Transitions)
			c.cancel()
			if err := c.wait(); err != nil {
				t.Fatal(err)
			}
			if _, ok := c.e.Term(); ok {
				t.Fatalf("%s: Term() reports a term after Run returned", id)
			}
		}
		for i := 1; i < len(tokens); i++ {
			if tokens[i] <= tokens[i-1] {
				t.Fatalf("fencing tokens %v do not strictly increase", tokens)
			}
		}
		if _, ok := TermFromContext(context.Background()); ok {
			t.Fatal("TermFromContext found a term in a plain ctx")
		}

	})
}

// A work that ignores its ctx: the elector keeps renewing for
// StepDownTimeout, logging the wait, then stops renewing WITHOUT releasing,
// calls OnStoppedLeading and returns ErrStepDownTimeout. The follower takes
// over only once the lease expired after the last renewal.
func TestStepDownTimeoutBoundsAStuckWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) {
			c.ReleaseOnCancel = true
			c.StepDownTimeout = 8 * time.Second
		})
		a.hold = make(chan struct{}) // the work ignores ctx until closed
		a.start()
		a.waitLeader()
		b := h.candidate("b").start()
		a.cancel()
		eventually(t, "work ctx cancelled", func() bool { return (*a.workCtx.Load()).Err() != nil })
		cancelledAt := h.clock.Now()

		h.advance(7900 * time.Millisecond)
		select {
		case err := <-a.done:
			t.Fatalf("Run returned %v before StepDownTimeout", err)
		default:
		}
		if !a.e.IsLeader() || h.holder() != "a" {
			t.Fatal("stopped leading before StepDownTimeout")
		}
		if n := len(a.logs.matching("Still waiting for OnStartedLeading")); n != 1 {
			t.Fatalf("logged the wait %d times in 8s, want once (every 5s):\n%s", n, a.logs)
		}
		lastRenewal := h.lease().Spec.RenewTime.Time
		h.advance(100 * time.Millisecond)
		var err error
		eventually(t, "Run returns at StepDownTimeout", func() bool {
			select {
			case err = <-a.done:
				a.done <- err
				return true
			default:
				return false
			}
		})
		if !errors.Is(err, ErrStepDownTimeout) || h.clock.Since(cancelledAt) != 8*time.Second {
			t.Fatalf("Run = %v after %v, want ErrStepDownTimeout after 8s", err, h.clock.Since(cancelledAt))
		}
		if a.count("stopped") != 1 {
			t.Fatal("OnStoppedLeading not called at the timeout")
		}
		if h.holder() != "a" {
			t.Fatal("released the lease while the work may still run")
		}
		// Nobody starts before the lease expires, 15s after the last renewal.
		expiry := lastRenewal.Add(15 * time.Second)
		h.advance(expiry.Sub(h.clock.Now()) - 100*time.Millisecond)
		if b.e.IsLeader() || b.count("started") != 0 {
			t.Fatal("the follower started before the lease expired")
		}
		h.advance(2 * time.Second)
		b.waitLeader()
		close(a.hold)

	})
}

// Yield hands the lease to the named successor at once (no clock step);
// another candidate defers; the successor clears the preference.
func TestYieldToNamedSuccessor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		b := h.candidate("b").start()
		c := h.candidate("c").start()
		eventually(t, "followers see a", func() bool { return b.e.Leader() == "a" && c.e.Leader() == "a" })

		if err := a.e.Yield(context.Background(), "c"); err != nil {
			t.Fatalf("Yield = %v", err)
		}
		c.waitLeader()   // the fake clock has not moved
		a.following("c") // a yield keeps the process, without Rejoin too
		// OnNewLeader runs on its own goroutine: only the work's callbacks are ordered.
		if got := strings.Join(without(without(a.history(), "new:c"), "new:a"), ","); got != "started,returned,stopped" {
			t.Fatalf("yielder's callbacks = %s", got)
		}
		h.settle()
		if _, ok := h.lease().Annotations[PreferredHolderAnnotation]; ok {
			t.Fatal("the successor did not clear the preference")
		}
		if b.e.IsLeader() || h.maxWorking.Load() != 1 {
			t.Fatal("another candidate took the lease, or two works ran")
		}

	})
}

// Yield with Rejoin follows again; Yield when not leading fails.
func TestYieldRejoinAndNotLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true }).start()
		a.waitLeader()
		b := h.candidate("b").start()
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		if err := b.e.Yield(context.Background(), ""); !errors.Is(err, ErrNotLeading) {
			t.Fatalf("a follower's Yield = %v, want ErrNotLeading", err)
		}
		if err := a.e.Yield(context.Background(), "a"); err == nil || !strings.Contains(err.Error(), "own identity") {
			t.Fatalf("Yield to self = %v, want an error naming the problem", err)
		}
		if err := a.e.Yield(context.Background(), ""); err != nil {
			t.Fatalf("Yield = %v", err)
		}
		b.waitLeader()
		eventually(t, "a follows b", func() bool { return a.e.Leader() == "b" })
		select {
		case err := <-a.done:
			t.Fatalf("Run returned %v after a yield with Rejoin", err)
		default:
		}
		h.advance(30 * time.Second)
		if a.e.IsLeader() || !b.e.IsLeader() {
			t.Fatal("leadership did not stay with b")
		}

	})
}

// The annotation asks the leader to yield, with no code involved.
func TestAnnotationYield(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		b := h.candidate("b").start()
		c := h.candidate("c").start()
		eventually(t, "followers see a", func() bool { return b.e.Leader() == "a" && c.e.Leader() == "a" })
		l := h.lease()
		l.Annotations = map[string]string{PreferredHolderAnnotation: "b"}
		h.srv.Put(l) // as kubectl annotate does: holder and renewTime untouched
		b.waitLeader()
		a.following("b")
		if c.e.IsLeader() || c.count("started") != 0 {
			t.Fatal("c took the lease meant for b")
		}
		if len(a.logs.matching("asks for a handoff")) != 1 {
			t.Fatalf("the yield was not logged:\n%s", a.logs)
		}

	})
}

// A release naming a successor that never comes: the others defer for one
// lease duration by their clock, then compete, and the winner clears it.
func TestDeferToAbsentSuccessorThenCompete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		l := h.putLease("", 15)
		l.Annotations = map[string]string{PreferredHolderAnnotation: "ghost"}
		h.srv.Put(l)
		b := h.candidate("b").start()
		h.advanceTo(14900 * time.Millisecond)
		if b.e.IsLeader() {
			t.Fatal("took a lease promised to another candidate before deferring")
		}
		h.advanceTo(15 * time.Second)
		b.waitLeader()
		if _, ok := h.lease().Annotations[PreferredHolderAnnotation]; ok {
			t.Fatal("the new term kept a stale preference")
		}

	})
}

// With Rejoin, a work that returns right after it starts in two terms in a
// row (a controller built once and run again) gets a warning, once.
func TestRejoinWarnsOnWorkThatReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true })
		a.workReturn = func() {}
		a.start()
		h.advance(time.Second) // term 1 ended; the rejoin waits a RetryPeriod
		if n := len(a.logs.matching("two terms in a row")); n != 0 {
			t.Fatalf("warned after %d terms", a.count("started"))
		}
		h.advance(10 * time.Second) // terms 2 to 5
		if a.count("started") < 3 {
			t.Fatalf("%d terms, want several", a.count("started"))
		}
		if n := len(a.logs.matching("two terms in a row")); n != 1 {
			t.Fatalf("warned %d times after %d quick terms, want once", n, a.count("started"))
		}

	})
}

// A release writes an empty holder, never a missing one: kube-apiserver's
// coordinated-election controller crashes on a Lease with candidates and
// no holderIdentity field.
func TestReleaseWritesEmptyHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.ReleaseOnCancel = true }).start()
		a.waitLeader()
		a.cancel()
		if err := a.wait(); err != nil {
			t.Fatal(err)
		}
		if got := h.lease().Spec.HolderIdentity; got == nil || *got != "" {
			t.Fatalf("released holderIdentity = %v, want a pointer to \"\"", got)
		}

	})
}

// A step-down whose work ignores its ctx ends Run with ErrStepDownTimeout
// even with Rejoin (the process must exit, taking the work with it), and
// Check reports the overdue work until it returns.
func TestStepDownTimeoutEndsRunWithRejoinAndFailsCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.Rejoin = true })
		a.hold = make(chan struct{})
		a.start()
		a.waitLeader()
		b := h.candidate("b").start()
		eventually(t, "b sees a", func() bool { return b.e.Leader() == "a" })
		yielded := make(chan error, 1)
		go func() { yielded <- a.e.Yield(context.Background(), "b") }()
		err := a.wait()
		if yerr := <-yielded; !errors.Is(yerr, ErrStepDownTimeout) {
			t.Fatalf("Yield = %v, want ErrStepDownTimeout", yerr)
		}
		if !errors.Is(err, ErrStepDownTimeout) {
			t.Fatalf("Run = %v, want ErrStepDownTimeout even with Rejoin", err)
		}
		if cerr := a.e.Check(0); !errors.Is(cerr, ErrWorkOutlivedLease) {
			t.Fatalf("Check = %v while the work still runs after the step-down timeout, want ErrWorkOutlivedLease", cerr)
		}
		close(a.hold)
		eventually(t, "Check healthy once the work returned", func() bool { return a.e.Check(0) == nil })
	})
}

// Found by the simulator (test/sim, seed 1258): a step-down whose work
// ignores its ctx, and whose renewals then fail until the renew deadline
// passes just before StepDownTimeout runs out. The lost term must not add
// a whole safety margin on top: Run returns at StepDownTimeout with
// ErrStepDownTimeout.
func TestLostTermWhileSteppingDownKeepsTheStepDownBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.StepDownTimeout = 11 * time.Second })
		a.hold = make(chan struct{}) // the work ignores ctx until closed
		a.start()
		a.waitLeader()
		refusing := h.failWhile("a", "update")
		refusing.Store(true)
		a.cancel()
		h.settle()
		cancelledAt := h.clock.Now()
		err := a.returnsWithin(20 * time.Second)
		if took := h.clock.Since(cancelledAt); took > 11*time.Second {
			t.Fatalf("Run returned %v after its ctx was cancelled; StepDownTimeout is 11s (err %v)", took, err)
		}
		if !errors.Is(err, ErrStepDownTimeout) || !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want ErrStepDownTimeout and ErrLeaderLost", err)
		}
	})
}

// Found by the simulator (test/sim, seed 6672): the work returns just
// before StepDownTimeout, and then every write fails. The release is
// retried while the claim is valid, but never past StepDownTimeout: Run
// returns within it of its ctx's cancellation.
func TestReleaseRetriesEndAtStepDownTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) {
			c.StepDownTimeout = 11 * time.Second
			c.ReleaseOnCancel = true
		})
		a.hold = make(chan struct{}) // the work ignores ctx until closed
		a.start()
		a.waitLeader()
		refusing := h.failWhile("a", "update")
		a.cancel()
		h.settle()
		cancelledAt := h.clock.Now()
		h.clock.AfterFunc(9*time.Second, func() {
			refusing.Store(true)
			close(a.hold)
		})
		err := a.returnsWithin(20 * time.Second)
		if took := h.clock.Since(cancelledAt); took > 11*time.Second {
			t.Fatalf("Run returned %v after its ctx was cancelled; StepDownTimeout is 11s (err %v)", took, err)
		}
		if a.count("returned") != 1 || h.holder() != "a" {
			t.Fatalf("want the work returned and the release failed: %v, lease %v", a.history(), h.lease())
		}
		if l := a.logs.matching("StepDownTimeout ran out"); len(l) != 1 {
			t.Fatalf("want one line saying the release gave up at StepDownTimeout:\n%s", a.logs)
		}
	})
}

// Found by the simulator (test/sim, seed 5996): Run's ctx is cancelled
// while a renewal hangs. The term sees the cancellation only when that
// request times out, but StepDownTimeout counts from the cancellation:
// a work that ignores its ctx ends Run StepDownTimeout after it.
func TestStepDownTimeoutCountsFromTheCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.StepDownTimeout = 8 * time.Second })
		a.hold = make(chan struct{}) // the work ignores ctx until closed
		a.start()
		a.waitLeader()
		var hang atomic.Bool
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if r.Client == "a" && r.Verb == "update" && hang.Load() {
				<-ctx.Done() // the request hangs until its timeout
				return ctx.Err()
			}
			return nil
		})
		hang.Store(true)
		h.advance(2 * time.Second) // a renewal is sent and hangs
		hang.Store(false)
		a.cancel()
		h.settle()
		cancelledAt := h.clock.Now()
		err := a.returnsWithin(20 * time.Second)
		if took := h.clock.Since(cancelledAt); took > 8*time.Second || !errors.Is(err, ErrStepDownTimeout) {
			t.Fatalf("Run returned %v %v after its ctx was cancelled; want ErrStepDownTimeout within StepDownTimeout (8s)", err, took)
		}
	})
}

// Found by the slow-API-server bench (test/slowapi, brownout): renewals
// fail until just before the renew deadline, then one conflicts (a hand
// edit moved the version) and the re-read that follows hangs. The term's
// loop waits for that re-read, which must therefore be bounded by the
// deadline: the work is cancelled by lastSent + RenewDeadline, not a whole
// request timeout later.
func TestRenewalsReReadEndsByTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a").start()
		a.waitLeader()
		var phase atomic.Int32 // 1: updates fail; 2: the next update conflicts and GETs hang
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			switch {
			case r.Client != "a":
			case phase.Load() == 1 && r.Verb == "update":
				return apierrors.NewInternalError(errors.New("etcd is slow"))
			case phase.Load() == 2 && r.Verb == "update":
				edited := h.lease().DeepCopy()
				edited.Labels = map[string]string{"edited": "by-hand"}
				h.srv.Put(edited) // lands first: this update conflicts
				phase.Store(3)
			case phase.Load() == 3 && r.Verb == "get":
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		lastSent := h.lease().Spec.RenewTime.Time
		phase.Store(1)
		for h.clock.Now().Before(lastSent.Add(7900 * time.Millisecond)) {
			h.advance(100 * time.Millisecond)
		}
		phase.Store(2)
		deadline := lastSent.Add(10 * time.Second)
		for h.clock.Now().Before(deadline.Add(6 * time.Second)) {
			h.advance(100 * time.Millisecond)
			if ctx := a.workCtx.Load(); ctx != nil && (*ctx).Err() != nil {
				break
			}
		}
		if ctx := a.workCtx.Load(); ctx == nil || (*ctx).Err() == nil {
			t.Fatalf("the work was never cancelled:\n%s", a.logs)
		}
		if late := h.clock.Now().Sub(deadline); late > 0 {
			t.Fatalf("the work was cancelled %v after lastSent + RenewDeadline: the re-read after the conflict was not bounded by the deadline", late)
		}
	})
}

// Found by the simulator (test/sim, seed 704 of the run that added clock
// skew and dropped watches): Run's ctx is cancelled while the work
// ignores it, and just before StepDownTimeout runs out a renewal is
// answered late with a conflict (a hand edit landed first). The re-read
// that follows must not carry the step-down past its bound: Run returns
// within StepDownTimeout plus the one request in flight at the bound.
func TestRenewalConflictDuringStepDownEndsByTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a := h.candidate("a", func(c *Config) { c.StepDownTimeout = 8 * time.Second })
		a.hold = make(chan struct{}) // the work ignores ctx until closed
		a.start()
		a.waitLeader()
		var armed, rereadsHang atomic.Bool
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			switch {
			case r.Client != "a":
			case r.Verb == "update" && armed.CompareAndSwap(true, false):
				// Answered late, after a hand edit moved the version.
				select {
				case <-h.clock.After(4 * time.Second):
				case <-ctx.Done():
					return ctx.Err()
				}
				edited := h.lease().DeepCopy()
				edited.Labels = map[string]string{"edited": "by-hand"}
				h.srv.Put(edited)
				rereadsHang.Store(true)
			case r.Verb == "get" && rereadsHang.Load():
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		a.cancel()
		h.settle()
		cancelledAt := h.clock.Now()
		h.advance(5900 * time.Millisecond)
		armed.Store(true) // the next renewal, sent before the bound (8s)
		err := a.returnsWithin(30 * time.Second)
		bound := 8*time.Second + RequestTimeout(10*time.Second)
		if took := h.clock.Since(cancelledAt); took > bound || !errors.Is(err, ErrStepDownTimeout) {
			t.Fatalf("Run returned %v %v after its ctx was cancelled; want ErrStepDownTimeout within StepDownTimeout plus one request (%v):\n%s", err, took, bound, a.logs)
		}
		close(a.hold)
	})
}

// A renewal that met 409 re-reads the Lease; if the process was paused
// as the re-read's answer came back, the renew deadline may have passed
// by its clock when it resumes. It sends no second renewal then: the term
// is over, whatever the re-read said. (Found by the simulator's
// paused-process fault, seeds 971 and 1300: the second renewal went out
// at once, with no time left on its timeout, and could land on a term
// whose deadline had passed.)
func TestNoRenewalAfterADeadlinePassedDuringTheReread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		var rereading, paused atomic.Bool
		h.clientFor = func(id string) coordinationv1client.LeasesGetter {
			return pauseAfterGet{inner: h.srv.Client(id), pause: func() {
				if rereading.CompareAndSwap(true, false) {
					// Answered; the process is paused before it reads
					// the answer: its clock jumps past the deadline.
					h.clock.Step(11 * time.Second)
					paused.Store(true)
				}
			}}
		}
		a := h.candidate("a").start()
		a.waitLeader()
		var armed atomic.Bool
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			switch {
			case r.Client != "a":
			case r.Verb == "update" && paused.Load():
				t.Errorf("a renewal sent after the renew deadline passed during the re-read")
			case r.Verb == "update" && armed.CompareAndSwap(true, false):
				// A hand edit moves the version just before this
				// renewal lands: it meets 409, and the Lease stays ours.
				edited := h.lease().DeepCopy()
				edited.Labels = map[string]string{"edited": "by-hand"}
				h.srv.Put(edited)
				rereading.Store(true)
			}
			return nil
		})
		armed.Store(true)
		err := a.returnsWithin(30 * time.Second)
		if !paused.Load() {
			t.Fatal("the re-read never came: the test did not reach its case")
		}
		if !errors.Is(err, ErrLeaderLost) {
			t.Fatalf("Run = %v, want the term lost at the renew deadline:\n%s", err, a.logs)
		}
	})
}

// pauseAfterGet calls pause after each Get is answered, before the
// caller reads the answer.
type pauseAfterGet struct {
	inner coordinationv1client.LeasesGetter
	pause func()
}

func (p pauseAfterGet) Leases(ns string) coordinationv1client.LeaseInterface {
	return pauseAfterGetLeases{LeaseInterface: p.inner.Leases(ns), pause: p.pause}
}

type pauseAfterGetLeases struct {
	coordinationv1client.LeaseInterface
	pause func()
}

func (l pauseAfterGetLeases) Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error) {
	got, err := l.LeaseInterface.Get(ctx, name, opts)
	l.pause()
	return got, err
}
